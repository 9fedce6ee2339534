"""How an audit event's ``details`` read on the audit pages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import template

register = template.Library()


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return "—" if value is None else str(value)


@register.filter
def detail_items(details: Any) -> list[tuple[str, str]]:
    """``details`` as (label, text) pairs; a grant or revoke names the person (and their identity) first."""
    if not isinstance(details, Mapping):
        return []
    items = dict(details)
    pairs: list[tuple[str, str]] = []
    if "user" in items:
        user = _text(items.pop("user"))
        identity = items.pop("identity", None)
        if isinstance(identity, list | tuple) and len(identity) == 2:
            user = f"{user} ({identity[0]} | {identity[1]})"
        pairs.append(("User", user))
    if "role" in items:
        pairs.append(("Role", _text(items.pop("role"))))
    client = items.get("api_client")
    if isinstance(client, Mapping) and client.get("kind") == "api_token":
        # Recorded for calls made with an API token (audit.services): which of the actor's tokens acted.
        items.pop("api_client")
        pairs.append(("Via API token", f"{_text(client.get('name'))} ({_text(client.get('id'))})"))
    pairs.extend((name.replace("_", " ").capitalize(), _text(value)) for name, value in items.items())
    return pairs
