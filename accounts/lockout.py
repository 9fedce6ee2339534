"""django-axes policy: lock an (account, client address) pair, with a lock that grows.

Configured in settings (``AXES_*``); this module holds the two callables and the
handler those settings name:

- :func:`not_a_password_login` exempts OpenID Connect logins: the provider guards
  its own passwords, and counting failed callbacks per address would let a few
  broken callbacks block the next valid login from that address.
- :func:`cool_off` makes the lock progressive: ``AXES_COOLOFF_MINUTES`` at the
  failure limit, doubled by each further failure of the same pair (each failure
  after a lock ends locks again at once), at most :data:`MAX_COOL_OFF`.
- :class:`ProgressiveLockoutHandler` keeps a pair's count that long, so the next
  lock remembers the last one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest
from django.utils import timezone

# The longest lock, and how long a pair's failures are remembered after its last one.
MAX_COOL_OFF = dt.timedelta(hours=24)
_USERNAME_FIELD: str = getattr(settings, "AXES_USERNAME_FORM_FIELD", "username")
_USERNAME_ATTR = "byok_lockout_username"


def not_a_password_login(request: HttpRequest, credentials: dict[str, Any] | None) -> bool:
    """Axes' whitelist callable: True (not counted, never locked) for logins without a username.

    Password logins (the login form, the admin, the TOTP step) always name the
    account; the OIDC backend is called with a nonce and a code verifier instead.
    """
    return credentials is not None and not credentials.get(_USERNAME_FIELD)


def _username(request: HttpRequest) -> str | None:
    # Set by the handler from the credentials axes is checking; the form field otherwise.
    name = getattr(request, _USERNAME_ATTR, None) or request.POST.get(_USERNAME_FIELD)
    return str(name) if name else None


def pair_failures(request: HttpRequest) -> int:
    """Failures remembered for the request's (username, address) pair, across user agents."""
    username = _username(request)
    ip_address = getattr(request, "axes_ip_address", None)
    if not username or not ip_address:
        return 0
    total = AccessAttempt.objects.filter(username=username, ip_address=ip_address).aggregate(
        n=Sum("failures_since_start")
    )["n"]
    return int(total or 0)


def cool_off(request: HttpRequest) -> dt.timedelta:
    """Axes' cool-off callable: how long the request's pair stays locked after its last failure."""
    base = dt.timedelta(minutes=settings.AXES_COOLOFF_MINUTES)
    beyond_limit = max(0, pair_failures(request) - settings.AXES_FAILURE_LIMIT)
    # 2**beyond_limit overflows nothing here: the exponent is capped long before timedelta's range.
    return min(base * 2 ** min(beyond_limit, 16), MAX_COOL_OFF)


class ProgressiveLockoutHandler(AxesDatabaseHandler):
    """Axes' database handler (shared by every process), forgetting a pair only after :data:`MAX_COOL_OFF`.

    The stock handler deletes every attempt older than *the current request's*
    cool-off, which with per-pair cool-offs would erase other pairs' longer locks
    and the history that makes the next lock longer.
    """

    def get_user_attempts(self, request: Any, credentials: Any = None) -> Any:
        # The cool-off callable only gets the request: tell it whose pair is checked.
        setattr(request, _USERNAME_ATTR, get_client_username(request, credentials))
        return super().get_user_attempts(request, credentials)

    def clean_expired_user_attempts(self, request: Any = None, credentials: Any = None) -> int:
        count, _ = AccessAttempt.objects.filter(attempt_time__lte=timezone.now() - MAX_COOL_OFF).delete()
        return int(count)
