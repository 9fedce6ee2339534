"""Errors the service layer raises, each with the HTTP status and machine code of SPEC §6.

Views and the API translate them once (``byok_portal.api.exception_handler`` and
``byok_portal.web``); service functions never build responses.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A refusal or failure a caller should show as is."""

    status = 400
    code = "error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code, **self.extra}


class PermissionRefused(ServiceError):
    status = 403
    code = "permission_denied"


class TwoPersonRuleViolation(ServiceError):
    status = 403
    code = "two_person_rule"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    """The resource is in a state that refuses the operation (409 ``invalid_state``)."""

    status = 409
    code = "invalid_state"
