"""The portal's routes plus one test-only API endpoint for identity tests.

``whoami`` reports who a request authenticated as (account and ``(iss, sub)``), so
the bearer-token and local-login tests can check authentication on its own. The
two-person rule is tested through the real key API and pages.
"""

from __future__ import annotations

from django.urls import include, path
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.identity import actor_from_request


@api_view(["GET"])
def whoami(request: Request) -> Response:
    actor = actor_from_request(request)
    return Response({"username": request.user.get_username(), "iss": actor.iss, "sub": actor.sub})


urlpatterns = [
    path("api/test/whoami/", whoami),
    path("", include("byok_portal.urls")),
]
