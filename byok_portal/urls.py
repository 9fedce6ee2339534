"""URL routes: pages, the Django admin (behind django-otp) and the REST API under /api/v1/.

The root of the routes composes every app, so it sits above them all (the dashboard is a key page).
"""

from django.urls import include, path

from byok_portal import health, metrics
from byok_portal.admin import admin_site
from keys.views import dashboard

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("", dashboard, name="dashboard"),
    path("keystores/", include("keystores.urls")),
    path("keys/", include("keys.urls")),
    path("admin/", admin_site.urls),
    path("oidc/", include("mozilla_django_oidc.urls")),
    path("accounts/", include("accounts.urls")),
    path("api/v1/", include("byok_portal.api_urls")),
    path("audit/", include("audit.urls")),
    path("approvals/", include("approvals.urls")),
    path("tokens/", include("tokens.urls")),
    path("reports/", include("reports.urls")),
    path("notifications/", include("notifications.urls")),
    path("jobs/", include("jobs.urls")),
]

# JSON under /api/, pages elsewhere; a database outage answers 503 (byok_portal.middleware).
handler404 = "byok_portal.handlers.page_not_found"
handler500 = "byok_portal.handlers.server_error"
