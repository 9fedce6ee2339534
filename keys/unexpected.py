"""The recorder of unexpected errors: audited, and answered without their details (SPEC §4, issue 12 §13).

A failure nobody planned for (a sealed blob that does not open, a bug) still happened
to someone's key: it goes into the audit trail with the FAILED outcome, the operation
and the key when they are known, and the exception's *class* only — its message may
quote data. The caller gets a clean 500 (JSON under the API, the error page
otherwise) carrying the request id that finds the event and the log line.

It names the acting person (accounts), writes the trail (audit) and attaches the key,
so it sits here, at the top; the kernel's API exception handler and page middleware
reach it through ``byok_portal.unexpected``, where ``KeysConfig.ready`` hands it in.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import transaction
from django.http import HttpRequest

from accounts.identity import Actor, actor_from_request
from audit.services import record
from byok_portal.vocabulary import Operation, Outcome
from keys.models import Key

# The log line keeps the logger name it had when the recorder lived in the kernel module.
logger = logging.getLogger("byok_portal.unexpected")


def _key_of(key_id: Any) -> Key | None:
    try:
        return Key.objects.filter(pk=uuid.UUID(str(key_id))).first()
    except ValueError:
        return None


def audit_unexpected_error(
    request: HttpRequest, exc: BaseException, *, operation: str | None = None, key_id: Any = None
) -> str:
    """Audit ``exc`` as a FAILED event of ``operation`` (on the key ``key_id``, if any); returns the request id.

    Never raises: if the audit itself cannot be written (the database is away), the
    log keeps the record and the caller still answers 500.
    """
    user = getattr(request, "user", None)
    try:
        actor = (
            actor_from_request(request)
            if user is not None and user.is_authenticated
            else Actor.system("anonymous-request")
        )
    except Exception:  # the identity may be what broke
        actor = Actor.system("unknown-request")
    logger.error(
        "unexpected error %s in %s %s (request %s)",
        type(exc).__name__,
        request.method,
        request.path,
        actor.request_id,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    try:
        with transaction.atomic():
            record(
                actor=actor,
                operation=operation or Operation.UNEXPECTED_ERROR,
                outcome=Outcome.FAILED,
                key=_key_of(key_id) if key_id is not None else None,
                reason="unexpected_error",
                error=f"Unexpected {type(exc).__name__}; details are in the server log (request {actor.request_id}).",
                details={"method": request.method, "path": request.path[:500], "request_id": actor.request_id},
            )
    except Exception:
        logger.exception("the unexpected error of request %s could not be audited", actor.request_id)
    return actor.request_id
