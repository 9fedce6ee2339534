"""Report pages: the dashboard over time (SVG charts with their numbers) and the report downloads."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from byok_portal.web import portal_login_required
from keystores.selectors import keystores_for
from reports import building, charts, rendering, trends


@portal_login_required
@never_cache
@require_http_methods(["GET"])
def index(request: HttpRequest) -> HttpResponse:
    """Operations per day, keys by state per day, material age, and the three reports to download."""
    operations = trends.operations_per_day(request.user)
    states = trends.keys_by_state_per_day(request.user)
    ages = trends.material_age(request.user)
    context = {
        "charts": [
            {
                "id": "operations-per-day",
                "title": f"Operations per day, last {trends.DAYS} days",
                "svg": charts.bar_chart(
                    "chart-operations",
                    operations,
                    title="Operations per day",
                    description="Stacked bars per day: solid for operations that succeeded, hatched for refused or "
                    "failed.",
                    every=5,
                ),
                "trend": operations,
                "label_title": "Day (UTC)",
            },
            {
                "id": "keys-by-state",
                "title": f"Keys by state, last {trends.DAYS} days",
                "svg": charts.line_chart(
                    "chart-states",
                    states,
                    title="Keys by state at the end of each day",
                    description="One line per state, each with its own dash pattern and marker.",
                    every=5,
                ),
                "trend": states,
                "label_title": "Day (UTC)",
            },
            {
                "id": "material-age",
                "title": "Age of the current key material (active and inactive keys)",
                "svg": charts.bar_chart(
                    "chart-ages", ages, title="Material age", description="Keys per age of their current material."
                ),
                "trend": ages,
                "label_title": "Material age",
            },
        ],
        "kinds": building.KINDS,
        "keystores": keystores_for(request.user).order_by("name", "id"),
    }
    return render(request, "reports/index.html", context)


@portal_login_required
@never_cache
@require_http_methods(["GET"])
def download(request: HttpRequest, kind: str) -> HttpResponseBase:
    """A report file, with the same parameters as the API; bad parameters are shown on the page."""
    try:
        params = building.parse(request.user, kind, request.GET)
    except ValidationError as exc:
        return render(request, "reports/invalid.html", {"errors": exc.message_dict}, status=400)
    return rendering.response(building.build(request.user, params), params.format)
