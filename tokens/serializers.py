"""The API's shapes of tokens and service accounts."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from byok_portal.api import StrictSerializer
from tokens.models import MAX_EXPIRY_DAYS, ApiToken, Scope


class TokenSerializer(serializers.ModelSerializer[ApiToken]):
    """A token as its owner sees it: never the secret (only ``prefix``, to recognise it)."""

    owner = serializers.CharField(source="owner.get_username", read_only=True)
    prefix = serializers.CharField(source="display_prefix", read_only=True)
    keystores = serializers.SerializerMethodField()
    active = serializers.BooleanField(source="is_live", read_only=True)

    class Meta:
        model = ApiToken
        fields: tuple[str, ...] = (
            "id",
            "name",
            "owner",
            "prefix",
            "scope",
            "keystores",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "last_used_ip",
            "active",
        )
        read_only_fields = fields

    def get_keystores(self, token: ApiToken) -> list[str]:
        """Empty: every keystore the owner can reach."""
        return sorted(str(keystore.pk) for keystore in token.keystores.all())


class NewTokenSerializer(TokenSerializer):
    """The answer to a creation: the token, with its secret shown this once."""

    token = serializers.CharField(read_only=True, help_text="`byok_…`: shown once, stored only as a keyed hash.")

    class Meta(TokenSerializer.Meta):
        fields = (*TokenSerializer.Meta.fields, "token")
        read_only_fields = fields


class TokenCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=Scope.choices, default=Scope.READ)
    expires_in_days = serializers.IntegerField(min_value=1, max_value=MAX_EXPIRY_DAYS, default=90)
    keystores = serializers.ListField(
        child=serializers.UUIDField(), required=False, default=list, help_text="Limit to these keystores (ids)."
    )
    owner = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="Superusers: the id of a service account to make the token for (default: yourself).",
    )


class ServiceAccountSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk", read_only=True)
    username = serializers.CharField(read_only=True)
    email = serializers.CharField(read_only=True, help_text="Empty when none was given.")
    is_active = serializers.BooleanField(read_only=True)
    date_joined = serializers.DateTimeField(read_only=True)
    tokens = TokenSerializer(source="api_tokens.all", many=True, read_only=True)


class ServiceAccountCreateSerializer(StrictSerializer):
    username = serializers.CharField(max_length=150)
    email = serializers.EmailField(required=False, default="")
