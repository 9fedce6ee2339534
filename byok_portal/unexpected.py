"""Unexpected errors are audited, and answered without their details (SPEC §4, issue 12 §13).

The kernel's API exception handler (``byok_portal.api``) and the page middleware below
meet a failure nobody planned for. Auditing it names the acting person (accounts), writes
the trail (audit) and attaches the key (keys): all above the kernel. So the recorder lives
in ``keys/unexpected.py`` and is handed in at start-up (:func:`record_unexpected_with`,
from ``KeysConfig.ready``), as the audit trail's read scope is.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from django.http import HttpRequest, HttpResponse

from byok_portal.middleware import DATABASE_ERRORS
from byok_portal.vocabulary import Operation

logger = logging.getLogger(__name__)


class Recorder(Protocol):
    """Audits an unexpected error and returns the request id that finds it; never raises."""

    def __call__(
        self, request: HttpRequest, exc: BaseException, *, operation: str | None = None, key_id: Any = None
    ) -> str: ...


_recorder: Recorder | None = None


def record_unexpected_with(recorder: Recorder) -> None:
    """Install the recorder of unexpected errors (``keys.unexpected.audit_unexpected_error``)."""
    global _recorder  # set once, at start-up
    _recorder = recorder


def record_unexpected_error(
    request: HttpRequest, exc: BaseException, *, operation: str | None = None, key_id: Any = None
) -> str:
    """Audit ``exc`` as a FAILED event of ``operation`` (on the key ``key_id``, if any); returns the request id.

    Never raises: the caller is already answering a 500. Without an installed recorder
    (the keys app missing from INSTALLED_APPS) the log alone keeps the record.
    """
    if _recorder is not None:
        return _recorder(request, exc, operation=operation, key_id=key_id)
    request_id = request.META.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex
    logger.error(
        "unexpected error %s in %s %s (request %s), not audited: no recorder installed (is keys in INSTALLED_APPS?)",
        type(exc).__name__,
        request.method,
        request.path,
        request_id,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return str(request_id)


class UnexpectedErrorMiddleware:
    """Audits exceptions that escape a page view; Django then renders its 500 page as usual."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        if isinstance(exception, DATABASE_ERRORS):
            return  # the database is away: DatabaseUnavailableMiddleware answers 503, and there is nowhere to audit
        match = getattr(request, "resolver_match", None)
        kwargs = match.kwargs if match is not None else {}
        operation = kwargs.get("action") if isinstance(kwargs.get("action"), str) else None
        if match is not None and match.url_name in ("download", "prepare-download"):
            operation = match.url_name.replace("-", "_")
        record_unexpected_error(request, exception, operation=_known_operation(operation), key_id=kwargs.get("key_id"))


def _known_operation(name: str | None) -> str | None:
    if not name:
        return None
    name = name.replace("-", "_")
    return name if name in {op.value for op in Operation} else None
