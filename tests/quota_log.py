"""The sandbox's KMS quota mode and call log, for tests and benchmarks (see sandbox_aws/quotas.py)."""

from __future__ import annotations

import json
import urllib.request
from collections import defaultdict
from typing import Any


def set_quota_scale(sandbox_url: str, scale: float) -> None:
    """Quota mode at ``scale`` × AWS's default rates (0: off); the buckets start full."""
    request = urllib.request.Request(f"{sandbox_url}/_sandbox/quota/{scale:g}", data=b"", method="POST")
    with urllib.request.urlopen(request) as response:
        assert json.loads(response.read())["scale"] == scale


def reset_log(sandbox_url: str) -> None:
    request = urllib.request.Request(f"{sandbox_url}/_sandbox/calls/reset", data=b"", method="POST")
    urllib.request.urlopen(request).close()


def kms_calls(sandbox_url: str) -> list[dict[str, Any]]:
    """KMS calls since the last reset: ``at``, ``account``, ``region``, ``operation``, ``throttled``."""
    with urllib.request.urlopen(f"{sandbox_url}/_sandbox/calls/log") as response:
        return list(json.loads(response.read())["calls"])


def busiest_window(calls: list[dict[str, Any]], window: float) -> dict[tuple[str, str], int]:
    """Per (account, operation): the most calls that fell within any ``window`` seconds."""
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for call in calls:
        times[(call["account"], call["operation"])].append(call["at"])
    busiest: dict[tuple[str, str], int] = {}
    for bucket, moments in times.items():
        moments.sort()
        start, most = 0, 0
        for end, moment in enumerate(moments):
            while moment - moments[start] > window:
                start += 1
            most = max(most, end - start + 1)
        busiest[bucket] = most
    return busiest
