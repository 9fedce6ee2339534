"""The portal's routes plus tiny API endpoints for identity tests.

``whoami`` reports who the request authenticated as; ``prepare``/``download`` are
thin callers of the key services, exactly like the real API views, so the tests
exercise the two-person rule through every way of authenticating.
"""

from __future__ import annotations

from typing import Any

from django.urls import include, path
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.identity import actor_from_request


@api_view(["GET"])
def whoami(request: Request) -> Response:
    actor = actor_from_request(request)
    return Response({"username": request.user.get_username(), "iss": actor.iss, "sub": actor.sub})


@api_view(["POST"])
def prepare(request: Request, key_id: Any) -> Response:
    from keys.services import key_prepare_download

    key = key_prepare_download(
        actor=actor_from_request(request),
        key_id=key_id,
        public_key_pem=request.data["public_key"],
    )
    return Response({"id": str(key.pk), "download_prepared": key.download_prepared})


@api_view(["POST"])
def download(request: Request, key_id: Any) -> Response:
    from keys.services import key_download

    result = key_download(actor=actor_from_request(request), key_id=key_id)
    return Response({"key_id": str(result.key_id), "kcv": result.kcv, "wrapped_key_material": result.wrapped_b64})


urlpatterns = [
    path("api/test/whoami/", whoami),
    path("api/test/keys/<str:key_id>/prepare/", prepare),
    path("api/test/keys/<str:key_id>/download/", download),
    path("", include("byok_portal.urls")),
]
