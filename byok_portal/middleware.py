"""A database outage answers 503 with Retry-After, not 500 (issue 12, item 6).

While PostgreSQL restarts or fails over, every query raises ``OperationalError``
(or ``InterfaceError`` on a connection that already broke). That is not a bug in
the request: telling clients to come back shortly lets them retry, and keeps the
outage out of the error rate. Nothing can be audited while the database is away;
operations that already reached KMS are repaired by the next reconciliation run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)

# Long enough for a PostgreSQL restart or a failover, short enough that a client retrying
# after it does not wait much longer than the outage.
RETRY_AFTER_SECONDS = 5

DATABASE_ERRORS = (OperationalError, InterfaceError)


def is_api(request: HttpRequest) -> bool:
    """API clients get JSON (SPEC §6's error format); people get pages."""
    return request.path_info.startswith("/api/")


def database_unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """503 with ``Retry-After``: JSON under /api/, a small page without database access otherwise."""
    logger.warning("database unavailable during %s %s: %s", request.method, request.path, type(exc).__name__)
    message = f"The database is unavailable. Retry in {RETRY_AFTER_SECONDS} seconds."
    response: HttpResponse
    if is_api(request):
        response = JsonResponse({"detail": message, "code": "service_unavailable"}, status=503)
    else:
        # Rendered without the request: the usual context (the user, messages) needs the database.
        response = HttpResponse(render_to_string("503.html", {"message": message}), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class DatabaseUnavailableMiddleware:
    """Turns a database error raised by a view into a 503.

    Errors raised by other middleware (e.g. saving the session) never reach here as
    exceptions; ``byok_portal.handlers.server_error`` answers those the same way.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_ERRORS):
            return database_unavailable(request, exception)
        return None
