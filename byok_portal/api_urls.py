"""The REST API, version 1: each app contributes its own routes."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

# Imported for its side effect: registers the OpenAPI description of bearer ID tokens.
import byok_portal.api  # noqa: F401

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file: the CSP allows no inline script. (There is
    # no Redoc page: it loads web fonts and a logo from CDNs and needs inline styles and blob: workers.)
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("keystores.api")),
    path("", include("keys.api")),
    path("", include("audit.api")),
    path("", include("approvals.api")),
    path("", include("tokens.api")),
    path("", include("notifications.api")),
    path("", include("reports.api")),
    path("", include("jobs.api")),
]
