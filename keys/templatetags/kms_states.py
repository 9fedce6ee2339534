"""The KMS state in AWS's own words, next to the portal's (pages say both: people read both)."""

from __future__ import annotations

from django import template

# The one mapping of AWS key states to the portal's, kept by the AWS layer.
from byok_portal.aws import _AWS_STATE_TO_KMS_STATE

register = template.Library()

_AWS_NAMES = {str(portal): aws for aws, portal in _AWS_STATE_TO_KMS_STATE.items()}


@register.filter
def aws_key_state(kms_state: str) -> str:
    """AWS's ``KeyState`` for a portal KMS state (``EMPTY`` → ``PendingImport``); empty when there is none."""
    return _AWS_NAMES.get(str(kms_state), "")
