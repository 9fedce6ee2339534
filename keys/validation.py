"""AWS alias and tag rules, checked before any AWS call so that bad input is a 400, not a 502."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

ALIAS_RE = re.compile(r"^alias/[A-Za-z0-9/_-]{1,250}$")
# AWS allows Unicode letters, digits, white space and _ . : / = + - @ in tags.
TAG_RE = re.compile(r"^[\w\s.:/=+\-@]*$", re.UNICODE)
MAX_TAGS = 50


def validate_alias(alias: str) -> None:
    if not alias:
        return
    if len(alias) > 256 or not ALIAS_RE.match(alias):
        raise ValidationError(
            {"alias": "An alias is 'alias/' followed by letters, digits, '/', '_' or '-' (at most 256 characters)."},
            code="invalid_alias",
        )
    if alias.lower().startswith("alias/aws/"):
        raise ValidationError({"alias": "Aliases under 'alias/aws/' are reserved for AWS."}, code="reserved_alias")
    prefix = settings.BYOK_ALIAS_PREFIX
    if prefix and not alias.startswith(prefix):
        raise ValidationError({"alias": f"Aliases must start with {prefix!r}."}, code="alias_prefix")


def validate_tags(tags: Any) -> dict[str, str]:
    """Return ``tags`` as a plain str→str dict if AWS would accept them, else raise a field error.

    Every bad tag is reported at once, so a person fixes them all in one go.
    """
    if not isinstance(tags, Mapping):
        raise ValidationError({"tags": "Tags are an object of string keys to string values."}, code="invalid_tags")
    problems: list[ValidationError] = []
    # One tag is the portal's own (it finds keys by it); the remaining room is the user's.
    if len(tags) > MAX_TAGS - 1:
        problems.append(ValidationError(f"At most {MAX_TAGS - 1} tags per key.", code="too_many_tags"))
    clean: dict[str, str] = {}
    for key, value in tags.items():
        problem = _tag_problem(key, value)
        if problem is not None:
            problems.append(problem)
        else:
            clean[key] = value
    if problems:
        raise ValidationError({"tags": problems})
    return clean


def _tag_problem(key: Any, value: Any) -> ValidationError | None:
    """What AWS would refuse about one tag, if anything."""
    if not isinstance(key, str) or not isinstance(value, str):
        return ValidationError("Tag keys and values must be strings.", code="invalid_tags")
    if not 1 <= len(key) <= 128 or not TAG_RE.match(key):
        return ValidationError(
            f"Tag key {key!r}: 1-128 letters, digits, spaces or _ . : / = + - @.", code="invalid_tag_key"
        )
    if key.lower().startswith("aws:"):
        return ValidationError(f"Tag key {key!r}: the 'aws:' prefix is reserved.", code="reserved_tag")
    if key == settings.BYOK_TAG_KEY:
        return ValidationError(f"Tag key {key!r} is reserved for the portal.", code="reserved_tag")
    if len(value) > 256 or not TAG_RE.match(value):
        return ValidationError(
            f"Tag {key!r}: values are at most 256 letters, digits, spaces or _ . : / = + - @.",
            code="invalid_tag_value",
        )
    return None
