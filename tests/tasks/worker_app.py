"""The portal's Celery app as the tests' worker processes run it (``celery -A tests.tasks.worker_app``).

Two test-only knobs, both from the environment:

- the broker looks for abandoned messages every second instead of every ~100 s, so a
  redelivery after a killed worker happens within the test's patience;
- ``BYOK_TEST_AUDIT_DELAY_SECONDS`` makes every audit write of the cleanup (one per batch) wait that
  long, holding the batch's row locks, so that a test can kill the worker in the
  middle of a batch.
- ``BYOK_TEST_APPROVAL_STALL=before:S`` (or ``after:S``) makes the run of an approved request wait
  S seconds after its claim, before (or after) the operation itself, so that a test can kill the
  worker there.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery.signals import worker_ready

from byok_portal.celery import app

app.conf.broker_transport_options = {
    **app.conf.broker_transport_options,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}


@worker_ready.connect
def _slow_down_audit_writes(**_: Any) -> None:
    delay = float(os.environ.get("BYOK_TEST_AUDIT_DELAY_SECONDS", "0"))
    if not delay:
        return
    from keys.jobs import cleanup

    record_many = cleanup.record_many

    def slow_record_many(entries: Any) -> Any:
        time.sleep(delay)
        return record_many(entries)

    cleanup.record_many = slow_record_many


@worker_ready.connect
def _stall_approved_runs(**_: Any) -> None:
    stall = os.environ.get("BYOK_TEST_APPROVAL_STALL", "")
    if not stall:
        return
    from approvals import services

    where, seconds = stall.split(":")

    def stalled(run: Any) -> Any:
        def wait_and_run(actor: Any, request: Any) -> Any:
            if where == "before":
                time.sleep(float(seconds))
            result = run(actor, request)
            if where == "after":
                time.sleep(float(seconds))
            return result

        return wait_and_run

    for operation, run in list(services.EXECUTORS.items()):
        services.EXECUTORS[operation] = stalled(run)


__all__ = ["app"]
