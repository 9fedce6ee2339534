"""Key pages' forms. They shape input; alias and tag rules are the services' (``keys.validation``)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from byok_portal.filters import set_empty_label
from keys.services import MAX_WINDOW, MIN_WINDOW
from keys.specs import DEFAULT_SPEC, KeySpec, KeyUsage
from keys.validation import validate_alias, validate_tags
from keystores.models import (
    MAX_MATERIAL_VALID_DAYS,
    MAX_ROTATION_PERIOD_DAYS,
    MIN_MATERIAL_VALID_DAYS,
    MIN_ROTATION_PERIOD_DAYS,
    Keystore,
    RotationOnLimit,
)

# A PEM public key is well under this; anything bigger is not one.
MAX_PEM_BYTES = 16 * 1024


class TagsField(forms.CharField):
    """Tags as ``key=value`` lines, the way people write them; the service checks AWS's tag rules."""

    widget = forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "class": "mono"})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return "\n".join(f"{k}={v}" for k, v in value.items())
        return value

    def to_python(self, value: Any) -> dict[str, str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        tags: dict[str, str] = {}
        problems: list[forms.ValidationError] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, tag_value = line.partition("=")
            if not sep or not name.strip():
                problems.append(
                    forms.ValidationError(f"Line {number}: write each tag as key=value.", code="invalid_tag_line")
                )
            elif name.strip() in tags:
                problems.append(
                    forms.ValidationError(f"Line {number}: tag {name.strip()!r} appears twice.", code="duplicate_tag")
                )
            else:
                tags[name.strip()] = tag_value.strip()
        if problems:
            raise forms.ValidationError(problems)
        return tags


class KeyFieldsForm(forms.Form):
    """The fields a person may set on a key: name, alias, tags, expiry, rotation policy and material expiry."""

    name = forms.CharField(max_length=200)
    alias = forms.CharField(
        max_length=256,
        required=False,
        help_text="alias/ followed by letters, digits, /, _ or - (e.g. alias/payments). "
        "Applications should use the alias: it moves to the new key when you renew.",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off", "class": "mono"}),
    )
    tags = TagsField(required=False, help_text="One key=value per line; applied to the KMS key.")
    expires = forms.DateField(
        required=False,
        help_text="End of the cryptoperiod. The portal warns before it; nothing is disabled automatically.",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )

    rotation_period_days = forms.IntegerField(
        label="Rotate material every (days)",
        required=False,
        min_value=MIN_ROTATION_PERIOD_DAYS,
        max_value=MAX_ROTATION_PERIOD_DAYS,
        help_text=f"{MIN_ROTATION_PERIOD_DAYS}–{MAX_ROTATION_PERIOD_DAYS} days (AWS's range); empty: no rotation "
        "policy. Symmetric keys rotate in place; others are renewed or flagged, as chosen below.",
    )
    rotation_on_limit = forms.ChoiceField(
        label="When the key cannot rotate",
        choices=RotationOnLimit.choices,
        required=False,
        help_text="A key that is not symmetric, or was rotated 25 times (AWS's limit), cannot rotate again.",
    )

    material_valid_days = forms.IntegerField(
        label="Material expires in KMS after (days)",
        required=False,
        min_value=MIN_MATERIAL_VALID_DAYS,
        max_value=MAX_MATERIAL_VALID_DAYS,
        help_text=f"{MIN_MATERIAL_VALID_DAYS}–{MAX_MATERIAL_VALID_DAYS} days: AWS deletes each imported material "
        "this long after its import, and the portal imports it again a few days before. Empty: the material "
        "does not expire in KMS.",
    )

    field_order = [
        "keystore",
        "name",
        "key_spec",
        "key_usage",
        "multi_region",
        "replica_regions",
        "alias",
        "tags",
        "expires",
    ]

    # AWS's alias and tag rules (keys.validation, which the services apply too) run per field here, so one
    # submit reports every field's errors together instead of the first the service meets.
    def clean_rotation_on_limit(self) -> str:
        # Not submitted (a form from before rotation policies): the key's own choice stays.
        value = self.cleaned_data.get("rotation_on_limit") or self.get_initial_for_field(
            self.fields["rotation_on_limit"], "rotation_on_limit"
        )
        return str(value or RotationOnLimit.FLAG)

    def clean_alias(self) -> str:
        alias: str = self.cleaned_data["alias"]
        try:
            validate_alias(alias)
        except ValidationError as exc:
            raise forms.ValidationError(exc.message_dict["alias"]) from exc
        return alias

    def clean_tags(self) -> dict[str, str]:
        try:
            return validate_tags(self.cleaned_data["tags"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.error_dict["tags"]) from exc


class KeyCreateForm(KeyFieldsForm):
    """A new key in one of the keystores the user is custodian (or admin) of, of a spec and usage fixed for life.

    A new key gets its keystore's rotation policy; it is changed on the edit form (or in the API's create).
    """

    rotation_period_days = None  # type: ignore[assignment]  # Django removes a field set to None
    rotation_on_limit = None  # type: ignore[assignment]
    material_valid_days = None  # type: ignore[assignment]

    keystore = forms.ModelChoiceField(queryset=Keystore.objects.none(), empty_label="Choose a keystore…")
    key_spec = forms.ChoiceField(
        label="Key spec",
        choices=KeySpec.choices,
        initial=DEFAULT_SPEC,
        required=False,
        help_text="AWS's key spec, fixed for the key's life: AES-256 for encryption, HMAC for MACs, "
        "RSA or elliptic-curve for signing (RSA also encrypts).",
    )
    key_usage = forms.ChoiceField(
        label="Key usage",
        required=False,
        choices=[("", "The spec's default"), *KeyUsage.choices],
        help_text="Only RSA keys have a choice (ENCRYPT_DECRYPT or SIGN_VERIFY); the default is ENCRYPT_DECRYPT.",
    )

    multi_region = forms.BooleanField(
        label="Multi-Region key",
        required=False,
        help_text="The same key and material in several regions (AWS mrk- key), for disaster recovery. Fixed for life.",
    )
    replica_regions = forms.CharField(
        label="Replica regions",
        required=False,
        help_text="Regions of the keystore's partition, separated by spaces or commas (e.g. us-east-1 eu-central-1).",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off", "class": "mono"}),
    )

    def clean_replica_regions(self) -> list[str]:
        text = str(self.cleaned_data.get("replica_regions") or "")
        return [region for region in text.replace(",", " ").split() if region]

    def clean_key_spec(self) -> str:
        # Not chosen (a client that predates key specs): the default, as in the API.
        return str(self.cleaned_data.get("key_spec") or DEFAULT_SPEC)

    def __init__(self, *args: Any, keystores: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keystore_field = self.fields["keystore"]
        assert isinstance(keystore_field, forms.ModelChoiceField)
        keystore_field.queryset = keystores
        self.order_fields(self.field_order)


class AddReplicaForm(forms.Form):
    """The region a multi-Region key gets a replica in (SPEC §11)."""

    region = forms.CharField(
        max_length=32,
        help_text="An AWS region of the keystore's partition, e.g. us-east-1. The key's material is imported there.",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off", "class": "mono"}),
    )


class RenewForm(forms.Form):
    """The new key's name and expiry, asked in the renewal's confirmation (prefilled: ``renewal_defaults``)."""

    name = forms.CharField(label="New key's name", max_length=200)
    expires = forms.DateField(
        label="New key's expiry",
        required=False,
        help_text="End of the new key's cryptoperiod; leave empty for none.",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )


class ScheduleDeletionForm(forms.Form):
    """The waiting period KMS applies before it deletes the key."""

    pending_window_days = forms.IntegerField(
        label="Waiting period (days)",
        min_value=MIN_WINDOW,
        max_value=MAX_WINDOW,
        help_text=f"{MIN_WINDOW} to {MAX_WINDOW} days. You can cancel the deletion until it ends.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"pending_window_days": settings.BYOK_DELETION_WINDOW_DAYS})
        super().__init__(*args, **kwargs)


class PrepareDownloadForm(forms.Form):
    """An RSA public key (PEM), pasted or uploaded as a file."""

    public_key = forms.CharField(
        label="Public key (PEM)",
        required=False,
        help_text="Paste an RSA public key: 2048, 3072 or 4096 bits, starting with -----BEGIN PUBLIC KEY-----.",
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "class": "mono"}),
    )
    public_key_file = forms.FileField(
        label="…or upload the .pem file",
        required=False,
        widget=forms.ClearableFileInput(attrs={"accept": ".pem,.pub,.txt,application/x-pem-file"}),
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        upload = cleaned.get("public_key_file")
        if upload is not None:
            if upload.size > MAX_PEM_BYTES:
                self.add_error("public_key_file", "That file is too large to be a PEM public key.")
                return cleaned
            try:
                cleaned["public_key"] = upload.read().decode("ascii")
            except UnicodeDecodeError:
                self.add_error("public_key_file", "That file is not a PEM (text) public key.")
                return cleaned
        if not (cleaned.get("public_key") or "").strip():
            self.add_error("public_key", "Paste a PEM public key or upload a .pem file.")
        return cleaned


class AttentionForm(forms.Form):
    """The key list's page-only filter, next to the shared :class:`keys.filters.KeyFilter`."""

    attention = forms.ChoiceField(
        label="Needs attention",
        required=False,
        choices=[
            ("", "—"),
            ("expiring", "Expiring soon"),
            ("drift", "Drift or KMS mismatch"),
            ("rotation", "Rotation due or overdue"),
            ("material", "Material expiring in KMS"),
        ],
    )


def adapt_key_filter_form(form: forms.Form, keystores: Any) -> None:
    """Present the shared FilterSet's form for people: keystores by name, and what "any state" means here."""
    keystore_field = form.fields["keystore"]
    keystore_field.label = "Keystore"
    keystore_field.widget = forms.Select(choices=[("", "All keystores"), *((str(k.pk), k.name) for k in keystores)])
    set_empty_label(form.fields["state"], "Any state but deleted")
    form.fields["search"].widget.input_type = "search"
