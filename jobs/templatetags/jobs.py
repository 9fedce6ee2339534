"""``{% bulk_operations as ops %}``: the operations the key list offers in bulk, with their labels."""

from __future__ import annotations

from django import template

from jobs.services import PAGE_OPERATIONS
from keys.operations import REGISTRY

register = template.Library()


@register.simple_tag
def bulk_operations() -> list[tuple[str, str]]:
    return [(op.value, REGISTRY[op].row.label) for op in PAGE_OPERATIONS]
