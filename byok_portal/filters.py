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


def set_empty_label(field: forms.Field, label: str) -> None:
    """Name the "no filter" choice of a filter's choice field on a page (its widget copied the choices when made)."""
    field.empty_label = label  # type: ignore[attr-defined]
    field.widget.choices = field.choices  # type: ignore[attr-defined]
