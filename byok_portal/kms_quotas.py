"""AWS KMS request quotas, and the pacing that keeps the portal's calls under its share of them (SPEC §14).

KMS counts requests per account, region and operation, and the customer's own
workloads draw on the same quotas. Every KMS call the portal makes first takes a
slot from a bucket for its ``(account, region, operation)``; the bucket's rate is
AWS's default quota times ``BYOK_KMS_QUOTA_SHARE`` (per operation overrides in
``BYOK_KMS_QUOTA_OVERRIDES`` for accounts whose quotas AWS raised).

The buckets are GCRA ("generic cell rate") schedules: a bucket is one number, the
theoretical arrival time of the next call. Taking a slot *reserves* it — the caller
learns how long to wait, and sleeps, while the next caller is already given the
slot after it. So N processes waiting on one bucket are served in order, nobody
polls, and calls are spaced exactly ``1/rate`` apart (no burst): in any window of
``w`` seconds at most ``rate·w + 1`` calls go out, which is what the tests measure
in the sandbox's call log.

Where the buckets live:

- ``BYOK_KMS_QUOTA_REDIS_URL`` (default: ``CACHE_URL`` or ``CELERY_BROKER_URL``
  when either is Redis): one Lua script per slot, atomic in Redis and timed by
  Redis' clock, shared by every web process and worker on every host.
- no Redis (``make run``'s embedded defaults): the same schedule in this process's
  memory. Each process then paces itself alone, so N processes may together reach
  N times the share; ``make run`` runs one web process and one worker.

Why not a library: ``limits`` answers "allowed or not" without a blocking acquire;
``pyrate-limiter``'s Redis bucket keeps every call in a sorted set and polls until
a slot frees, so waiting processes race each other instead of queueing. The
reservation needs one ``GET``/``SET`` in a script of a dozen lines.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

# AWS's default requests per second per account and region (KMS Developer Guide, "Request quotas").
# Operations not listed share AWS's most common default for management calls.
AWS_DEFAULT_RATES: Mapping[str, float] = {
    "GetParametersForImport": 0.25,
    "CreateKey": 5,
    "ImportKeyMaterial": 5,
    "DeleteImportedKeyMaterial": 5,
    "CreateAlias": 5,
    "UpdateAlias": 5,
    "DeleteAlias": 5,
    "EnableKey": 5,
    "DisableKey": 5,
    "CancelKeyDeletion": 5,
    "ReplicateKey": 5,
    "RotateKeyOnDemand": 5,
    "UpdateKeyDescription": 5,
    "PutKeyPolicy": 5,
    "ScheduleKeyDeletion": 15,
    "TagResource": 10,
    "UntagResource": 10,
    "ListAliases": 500,
    "ListKeys": 500,
    "ListResourceTags": 500,
    "ListKeyRotations": 100,
    "GetKeyRotationStatus": 1000,
    "DescribeKey": 2000,
    "GetPublicKey": 2000,
}
AWS_DEFAULT_OTHER_RATE = 5.0


def aws_rate(operation: str) -> float:
    """AWS's default quota of ``operation``, in requests per second per account and region."""
    return float(AWS_DEFAULT_RATES.get(operation, AWS_DEFAULT_OTHER_RATE))


def portal_rate(operation: str, share: float, overrides: Mapping[str, float]) -> float:
    """The rate the portal allows itself: an override if given, else AWS's default times ``share``."""
    if operation in overrides:
        return float(overrides[operation])
    return aws_rate(operation) * share


# KEYS[1]: the bucket; ARGV[1]: milliseconds between calls. Returns the milliseconds to wait.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(tat + 2 * interval - now))
return tat - now
"""


class Pacer:
    """Reserves slots in the per-(account, region, operation) schedules; see the module docstring."""

    def __init__(self, redis_url: str = "", prefix: str = "byok:kms-quota") -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self._lock = threading.Lock()
        self._local: dict[str, float] = {}  # bucket -> next free slot (monotonic seconds)
        self._script: Any = None

    def _redis_script(self) -> Any:
        if self._script is None:
            import redis

            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=5)
            self._script = client.register_script(_RESERVE)
        return self._script

    def reserve(self, bucket: str, rate: float) -> float:
        """Take the next slot of ``bucket`` at ``rate`` calls per second; the seconds to wait before using it."""
        if rate <= 0:
            return 0.0
        interval = 1.0 / rate
        if self.redis_url:
            waited_ms = self._redis_script()(keys=[f"{self.prefix}:{bucket}"], args=[max(1, round(interval * 1000))])
            return max(0.0, int(waited_ms) / 1000)
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._local.get(bucket, now))
            self._local[bucket] = slot + interval
            return slot - now

    def acquire(self, bucket: str, rate: float) -> float:
        """Reserve a slot and sleep until it comes; returns the seconds slept."""
        wait = self.reserve(bucket, rate)
        if wait > 0:
            time.sleep(wait)
        return wait

    def reset(self) -> None:
        """Forget the in-process schedules (tests; Redis' expire on their own)."""
        with self._lock:
            self._local.clear()
        self._script = None
