"""The REST API, version 1: each app contributes its own routes."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

# Imported for its side effect: registers the OpenAPI description of bearer ID tokens.
import byok_portal.api  # noqa: F401

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("", include("keystores.api")),
    path("", include("keys.api")),
    path("", include("audit.api")),
]
