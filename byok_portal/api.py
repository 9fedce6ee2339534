"""API-wide glue: the error format of SPEC §6, shared by every endpoint."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from byok_portal.aws import AwsError
from byok_portal.errors import ServiceError


def _validation_payload(exc: DjangoValidationError) -> Any:
    if hasattr(exc, "error_dict"):
        return {field: [str(m) for e in errors for m in e.messages] for field, errors in exc.error_dict.items()}
    return {"non_field_errors": list(exc.messages)}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Errors as ``{"detail", "code", ...}``; field errors as DRF's field map (400)."""
    if isinstance(exc, ServiceError):
        return Response(exc.as_dict(), status=exc.status)
    if isinstance(exc, AwsError):
        return Response(
            {
                "detail": f"AWS refused {exc.operation}: {exc.code}: {exc.message}",
                "code": exc.kind,
                "aws_error_code": exc.code,
                "aws_error_message": exc.message,
                "aws_request_id": exc.request_id,
            },
            status=status.HTTP_502_BAD_GATEWAY,
        )
    if isinstance(exc, DjangoValidationError):
        return Response(_validation_payload(exc), status=status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        return response
    if isinstance(exc, exceptions.APIException) and isinstance(response.data, dict):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        if isinstance(exc, exceptions.PermissionDenied):
            code = "permission_denied"
        elif isinstance(exc, exceptions.NotFound):
            code = "not_found"
        response.data = {"detail": str(response.data.get("detail", exc.detail)), "code": code}
    return response
