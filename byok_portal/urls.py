"""URL routes: pages, the Django admin (behind django-otp) and the REST API under /api/v1/."""

from django.urls import include, path
from django_otp.admin import OTPAdminSite

from byok_portal import health

admin_site = OTPAdminSite(name="admin")

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("oidc/", include("mozilla_django_oidc.urls")),
]
