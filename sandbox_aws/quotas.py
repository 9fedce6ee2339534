"""The sandbox's optional KMS quota mode and its log of KMS calls.

Off by default. With a scale (``BYOK_SANDBOX_QUOTA_SCALE``, ``--quota-scale`` or
``POST /_sandbox/quota/<scale>``), every KMS call draws a token from a bucket per
account, region and operation, refilled at AWS's default rate times the scale (so a
test runs 20 times faster than AWS while keeping AWS's proportions: one
``GetParametersForImport`` per 20 ``CreateKey``). A bucket holds one second's worth of
tokens (at least one), as AWS allows short bursts. A call without a token is answered
as AWS does: ``ThrottlingException``, HTTP 400, and is not executed.

Every KMS call is also logged (time, account, region, operation, throttled or not),
so tests and benchmarks can measure the rate the portal really sent.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from byok_portal.kms_quotas import aws_rate

_lock = threading.Lock()
_scale = float(os.environ.get("BYOK_SANDBOX_QUOTA_SCALE") or 0)
_log: deque[tuple[float, str, str, str, bool]] = deque(maxlen=200_000)


@dataclass
class _Bucket:
    tokens: float
    updated: float


_buckets: dict[tuple[str, str, str], _Bucket] = {}


def set_scale(scale: float) -> None:
    """Quota mode at ``scale`` times AWS's default rates; 0 turns it off. Buckets start full."""
    global _scale
    with _lock:
        _scale = max(0.0, scale)
        _buckets.clear()


def scale() -> float:
    return _scale


def admit(account: str, region: str, operation: str) -> bool:
    """Log a KMS call; whether its quota admits it (always, outside quota mode)."""
    now = time.time()
    with _lock:
        admitted = True
        if _scale > 0:
            rate = aws_rate(operation) * _scale
            capacity = max(1.0, rate)
            bucket = _buckets.setdefault((account, region, operation), _Bucket(capacity, now))
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
            else:
                admitted = False
        _log.append((now, account, region, operation, not admitted))
        return admitted


def throttled_response() -> tuple[int, dict[str, str], str]:
    """What AWS answers a call over its quota (JSON protocol, as KMS speaks)."""
    body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
    return 400, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": os.urandom(16).hex()}, body


def call_log() -> list[dict[str, Any]]:
    """The logged KMS calls, oldest first."""
    with _lock:
        entries = list(_log)
    return [
        {"at": at, "account": account, "region": region, "operation": operation, "throttled": throttled}
        for at, account, region, operation, throttled in entries
    ]


def reset() -> None:
    """Forget the log and refill every bucket (the scale stays)."""
    with _lock:
        _log.clear()
        _buckets.clear()
