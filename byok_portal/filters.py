"""Filter pieces shared by every FilterSet (keys, keystores, audit), pages and API alike."""

from __future__ import annotations

import re
import uuid
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError

# The one spelling the OpenAPI ``format: uuid`` allows: 8-4-4-4-12 hex digits.
CANONICAL_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class CanonicalUUIDField(forms.UUIDField):
    """Django's UUIDField also takes ``urn:uuid:…``, braces and bare hex; the API documents only one form."""

    def to_python(self, value: Any) -> uuid.UUID | None:  # type: ignore[override]  # django-stubs says str
        if value in self.empty_values:
            return None
        if not isinstance(value, uuid.UUID) and not CANONICAL_UUID.match(str(value).strip()):
            raise ValidationError("Enter a UUID such as 123e4567-e89b-12d3-a456-426614174000.", code="invalid")
        return super().to_python(value)


class UUIDFilter(django_filters.UUIDFilter):
    """A UUID filter that accepts exactly what the schema documents."""

    field_class = CanonicalUUIDField


class TrueFalseSelect(forms.Select):
    """Any / Yes / No on a page; hands the field the raw text so that unknown text can be refused."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs, choices=(("", "Any"), ("true", "Yes"), ("false", "No")))

    def format_value(self, value: Any) -> list[str]:  # type: ignore[override]  # Select returns a list
        if value in (True, False):
            value = "true" if value else "false"
        return super().format_value(value)


class StrictNullBooleanField(forms.NullBooleanField):
    """Django's NullBooleanField reads any unknown text as "no filter"; the API documents true/false only.

    ``?multi_region=yes`` silently listing every key would look like an answer, so it is a 400.
    """

    widget = TrueFalseSelect
    TRUE = frozenset({"true", "1", "on"})
    FALSE = frozenset({"false", "0", "off"})

    def to_python(self, value: Any) -> bool | None:  # type: ignore[override]
        if value in (True, False):
            return bool(value)
        if value in self.empty_values:
            return None
        text = str(value).strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        raise ValidationError("Enter true or false.", code="invalid")

    def validate(self, value: Any) -> None:
        return None


class BooleanFilter(django_filters.BooleanFilter):
    """A boolean filter that refuses what is neither true nor false (400) instead of ignoring it."""

    field_class = StrictNullBooleanField


def set_empty_label(field: forms.Field, label: str) -> None:
    """Name the "no filter" choice of a filter's choice field on a page (its widget copied the choices when made)."""
    field.empty_label = label  # type: ignore[attr-defined]
    field.widget.choices = field.choices  # type: ignore[attr-defined]
