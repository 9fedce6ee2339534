"""``/api/v1/tokens/`` and ``/api/v1/service-accounts/`` (SPEC §13, §16)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.urls import URLPattern, URLResolver
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from accounts.identity import actor_from_request
from accounts.models import User
from accounts.services import create_service_account
from byok_portal.api import (
    VALIDATION_ERROR,
    BoundedCursorPagination,
    PortalViewSet,
    common_errors,
    id_parameter,
    refuse_empty_parameters,
    validated_body,
)
from byok_portal.errors import PermissionRefused
from keystores.selectors import is_superuser, restriction
from tokens import selectors, services
from tokens.models import ApiToken
from tokens.serializers import (
    NewTokenSerializer,
    ServiceAccountCreateSerializer,
    ServiceAccountSerializer,
    TokenCreateSerializer,
    TokenSerializer,
)

OWNER = OpenApiParameter(
    "owner", int, OpenApiParameter.QUERY, required=False, description="Superusers: a service account's id."
)


class TokenPagination(BoundedCursorPagination):
    ordering = ("-created_at", "id")


class ServiceAccountPagination(BoundedCursorPagination):
    ordering = ("username", "id")


class TokenViewSet(PortalViewSet):
    """The caller's API tokens (superusers: also a service account's, with ``owner``)."""

    serializer_class = TokenSerializer
    queryset = ApiToken.objects.none()
    pagination_class = TokenPagination

    @extend_schema(
        summary="List your API tokens",
        parameters=[OWNER],
        responses={200: TokenSerializer(many=True), 400: VALIDATION_ERROR} | common_errors(),
    )
    def list(self, request: Request) -> Response:
        refuse_empty_parameters(["owner", "cursor"], request.query_params)
        owner = selectors.owner_for(request.user, request.query_params.get("owner")) or request.user
        tokens: QuerySet[ApiToken] = selectors.tokens_of(owner)  # type: ignore[arg-type]
        page = self.paginate_queryset(tokens)
        return self.get_paginated_response(TokenSerializer(page, many=True).data)

    @extend_schema(
        summary="Create an API token (the secret is in the answer, once)",
        request=TokenCreateSerializer,
        responses={201: NewTokenSerializer, 400: VALIDATION_ERROR} | common_errors(),
    )
    def create(self, request: Request) -> Response:
        data = validated_body(TokenCreateSerializer, request)
        owner = selectors.owner_for(request.user, data.pop("owner", None))
        made = services.token_create(
            actor=actor_from_request(request),
            owner=owner,
            name=data["name"],
            scope=data["scope"],
            expires_in_days=data["expires_in_days"],
            keystore_ids=data["keystores"],
        )
        body: dict[str, Any] = {**TokenSerializer(made.token).data, "token": made.secret}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Revoke an API token (effective at once)",
        parameters=[id_parameter("token")],
        responses={204: None} | common_errors(),
    )
    def destroy(self, request: Request, pk: str) -> Response:
        services.token_revoke(actor=actor_from_request(request), token_id=selectors.parse_token_id(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ServiceAccountViewSet(PortalViewSet):
    """Service accounts (superusers): non-human, token-only users, listed with their tokens."""

    serializer_class = ServiceAccountSerializer
    queryset = User.objects.none()
    pagination_class = ServiceAccountPagination

    @extend_schema(
        summary="List service accounts", responses={200: ServiceAccountSerializer(many=True)} | common_errors()
    )
    def list(self, request: Request) -> Response:
        _require_superuser(request)
        page = self.paginate_queryset(selectors.service_accounts(request.user))
        return self.get_paginated_response(ServiceAccountSerializer(page, many=True).data)

    @extend_schema(
        summary="Create a service account",
        request=ServiceAccountCreateSerializer,
        responses={201: ServiceAccountSerializer, 400: VALIDATION_ERROR} | common_errors(),
    )
    def create(self, request: Request) -> Response:
        _require_superuser(request)
        data = validated_body(ServiceAccountCreateSerializer, request)
        account = create_service_account(actor=actor_from_request(request), **data)
        return Response(ServiceAccountSerializer(account).data, status=status.HTTP_201_CREATED)


def _require_superuser(request: Request) -> None:
    # A superuser's token limited to some keystores does not reach account management.
    if not is_superuser(request.user) or restriction(request.user) is not None:
        raise PermissionRefused("Service accounts are managed by superusers.")


router = SimpleRouter()
router.register("tokens", TokenViewSet, basename="api-token")
router.register("service-accounts", ServiceAccountViewSet, basename="api-service-account")
urlpatterns: list[URLPattern | URLResolver] = list(router.urls)
