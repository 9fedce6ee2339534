"""Webhook signatures: ``X-BYOK-Signature: sha256=<hex>``, HMAC-SHA-256 over ``"<timestamp>." + body``.

The timestamp (``X-BYOK-Timestamp``, Unix seconds) is signed with the body, so a receiver
that rejects old timestamps also rejects a replayed request. docs/notifications.md shows
a receiver's check; :func:`verify` is the same check, used by the tests' receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "X-BYOK-Signature"
TIMESTAMP_HEADER = "X-BYOK-Timestamp"
EVENT_HEADER = "X-BYOK-Event"
DELIVERY_HEADER = "X-BYOK-Delivery"
PREFIX = "sha256="
TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return PREFIX + digest


def verify(
    secret: str,
    *,
    timestamp: str,
    body: bytes,
    signature: str,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """Whether ``signature`` is ours over ``timestamp`` and ``body``, and the timestamp is recent."""
    if not timestamp.isdigit() or abs((now if now is not None else time.time()) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)
