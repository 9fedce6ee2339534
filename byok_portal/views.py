"""The dashboard: what needs a custodian's attention, at a glance."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from accounts.decorators import portal_login_required
from keys.lifecycle import KeyState
from keys.views import expiring_q, needs_attention_q, warn_before
from keystores.models import KeystoreState
from keystores.selectors import can_create_keystores, keys_for, keystores_for
from keystores.views import with_key_counts

# Each dashboard panel lists at most this many rows and links to the full, filtered list.
PANEL_ROWS = 8


@portal_login_required
@require_http_methods(["GET"])
def dashboard(request: HttpRequest) -> HttpResponse:
    """Keystores, keys by state, keys expiring soon, and keys whose KMS state has drifted."""
    keys = keys_for(request.user)
    by_state = dict(keys.order_by().values_list("state").annotate(n=Count("id")))
    keystores = with_key_counts(keystores_for(request.user).filter(state=KeystoreState.ACTIVE)).order_by("name", "id")
    expiring = keys.filter(expiring_q()).select_related("keystore").order_by("expires", "id")
    attention = keys.filter(needs_attention_q()).select_related("keystore").order_by("-updated_at", "id")
    # One row more than shown tells whether a "see all" link is needed, without a COUNT.
    keystore_rows, expiring_rows, attention_rows = (
        list(qs[: PANEL_ROWS + 1]) for qs in (keystores, expiring, attention)
    )
    context = {
        "keystores": keystore_rows[:PANEL_ROWS],
        "more_keystores": len(keystore_rows) > PANEL_ROWS,
        "states": [(state, by_state.get(state.value, 0)) for state in KeyState],
        "total_keys": sum(n for state, n in by_state.items() if state != KeyState.DELETED),
        "expiring": expiring_rows[:PANEL_ROWS],
        "more_expiring": len(expiring_rows) > PANEL_ROWS,
        "attention": attention_rows[:PANEL_ROWS],
        # Keys of a keystore the portal cannot reach were not checked: never call them "in step".
        "unreachable": [keystore for keystore in keystore_rows if keystore.last_check_ok is False],
        "more_attention": len(attention_rows) > PANEL_ROWS,
        "warning_days": settings.BYOK_EXPIRY_WARNING_DAYS,
        "warn_before": warn_before(),
        "can_create_keystores": can_create_keystores(request.user),
    }
    return render(request, "dashboard.html", context)
