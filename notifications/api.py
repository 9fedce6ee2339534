"""REST endpoints for a keystore's webhooks (SPEC §16): list, create (secret shown once), read, delete, test.

Keystore admins manage webhooks; outsiders get 404 and weaker members 403, as everywhere.
"""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, URLResolver, path
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.identity import actor_from_request
from byok_portal.api import VALIDATION_ERROR, StrictSerializer, common_errors, id_parameter, validated_body
from keystores.models import Role
from keystores.selectors import get_keystore_for
from notifications import services
from notifications.events import SUBSCRIBABLE
from notifications.models import Delivery, DeliveryAttempt, Webhook


class DeliveryAttemptSerializer(serializers.ModelSerializer[DeliveryAttempt]):
    class Meta:
        model = DeliveryAttempt
        fields = ["number", "at", "status_code", "error", "duration_ms"]


class DeliverySerializer(serializers.ModelSerializer[Delivery]):
    attempt_log = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "state",
            "attempts",
            "last_status_code",
            "created_at",
            "delivered_at",
            "attempt_log",
        ]


class WebhookSerializer(serializers.ModelSerializer[Webhook]):
    events = serializers.ListField(child=serializers.ChoiceField(choices=[str(e) for e in SUBSCRIBABLE]))

    class Meta:
        model = Webhook
        fields = ["id", "keystore", "url", "events", "created_at"]


class WebhookListSerializer(serializers.Serializer[Any]):
    results = WebhookSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="Always null: a keystore has few webhooks.")


class WebhookDetailSerializer(WebhookSerializer):
    recent_deliveries = serializers.SerializerMethodField()

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "recent_deliveries"]

    @extend_schema_field(DeliverySerializer(many=True))
    def get_recent_deliveries(self, webhook: Webhook) -> list[dict[str, Any]]:
        deliveries = webhook.deliveries.prefetch_related("attempt_log").order_by("-created_at", "id")[:20]
        return list(DeliverySerializer(deliveries, many=True).data)


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(help_text="The signing secret: shown this once, never again.")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]


class WebhookCreateSerializer(StrictSerializer):
    url = serializers.CharField(max_length=2048, help_text="https:// (http:// only in debug mode).")
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=[str(e) for e in SUBSCRIBABLE]),
        required=False,
        default=list,
        help_text="Event types to send; empty or absent: every type.",
    )


KEYSTORE_ID = id_parameter("keystore")
WEBHOOK_ID = id_parameter("webhook")


class WebhookList(APIView):
    @extend_schema(
        operation_id="webhooks_list",
        summary="List a keystore's webhooks (admin)",
        parameters=[KEYSTORE_ID],
        responses={200: WebhookListSerializer} | common_errors(),
    )
    def get(self, request: Request, keystore_id: str) -> Response:
        keystore = get_keystore_for(request.user, keystore_id, role=Role.ADMIN)
        return Response(WebhookListSerializer({"results": services.webhooks_of(keystore), "next": None}).data)

    @extend_schema(
        operation_id="webhooks_create",
        summary="Add a webhook (admin)",
        description="Events are POSTed as JSON with `X-BYOK-Timestamp` and `X-BYOK-Signature: sha256=<hex>` "
        "(HMAC-SHA-256 over `<timestamp>.<body>` with the secret returned here, once). See docs/notifications.md "
        "for every event's schema.",
        parameters=[KEYSTORE_ID],
        request=WebhookCreateSerializer,
        responses={201: WebhookCreatedSerializer, 400: VALIDATION_ERROR} | common_errors(),
    )
    def post(self, request: Request, keystore_id: str) -> Response:
        data = validated_body(WebhookCreateSerializer, request)
        created = services.webhook_create(actor=actor_from_request(request), keystore_id=keystore_id, **data)
        body = {**WebhookSerializer(created.webhook).data, "secret": created.secret}
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookDetail(APIView):
    @extend_schema(
        operation_id="webhooks_retrieve",
        summary="A webhook and its recent deliveries (admin)",
        parameters=[KEYSTORE_ID, WEBHOOK_ID],
        responses={200: WebhookDetailSerializer} | common_errors(),
    )
    def get(self, request: Request, keystore_id: str, webhook_id: str) -> Response:
        keystore = get_keystore_for(request.user, keystore_id, role=Role.ADMIN)
        return Response(WebhookDetailSerializer(services.webhook_of(keystore, webhook_id)).data)

    @extend_schema(
        operation_id="webhooks_destroy",
        summary="Remove a webhook (admin)",
        parameters=[KEYSTORE_ID, WEBHOOK_ID],
        responses={204: OpenApiResponse(description="Removed.")} | common_errors(),
    )
    def delete(self, request: Request, keystore_id: str, webhook_id: str) -> Response:
        services.webhook_delete(actor=actor_from_request(request), keystore_id=keystore_id, webhook_id=webhook_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookTest(APIView):
    @extend_schema(
        operation_id="webhooks_test",
        summary="Send a test event (admin)",
        description="Queues a `webhook.test` event; its delivery (status codes, retries) shows in the webhook's log.",
        parameters=[KEYSTORE_ID, WEBHOOK_ID],
        request=None,
        responses={202: DeliverySerializer, 400: VALIDATION_ERROR} | common_errors(),
    )
    def post(self, request: Request, keystore_id: str, webhook_id: str) -> Response:
        validated_body(None, request)
        delivery = services.webhook_send_test(
            actor=actor_from_request(request), keystore_id=keystore_id, webhook_id=webhook_id
        )
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


urlpatterns: list[URLPattern | URLResolver] = [
    path("keystores/<str:keystore_id>/webhooks/", WebhookList.as_view(), name="api-webhook-list"),
    path("keystores/<str:keystore_id>/webhooks/<str:webhook_id>/", WebhookDetail.as_view(), name="api-webhook"),
    path("keystores/<str:keystore_id>/webhooks/<str:webhook_id>/test/", WebhookTest.as_view(), name="api-webhook-test"),
]
