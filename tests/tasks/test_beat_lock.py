"""Beat runs exactly once (SPEC §14): two real ``celery beat`` processes on Redis, one sends, the other stands by."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from byok_portal.beat import LOCK_NAME
from tests.tasks.beat_app import BEAT_TASK

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parents[2]
LOCK_SECONDS = 3
SENDING = f"Sending due task tick ({BEAT_TASK})".encode()


class Beat:
    def __init__(self, env: dict[str, str], workdir: Path, name: str) -> None:
        self.log_path = workdir / f"{name}.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.tasks.beat_app", "beat", "--loglevel", "INFO",
             "--schedule", str(workdir / f"{name}-schedule")],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()

    def log(self) -> bytes:
        return self.log_path.read_bytes()

    def sent(self) -> int:
        return self.log().count(SENDING)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(15)


@pytest.fixture
def start_beat(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[str], Beat]]:
    beats: list[Beat] = []
    env = {**worker_env, "BYOK_BEAT_LOCK_SECONDS": str(LOCK_SECONDS)}

    def start(name: str) -> Beat:
        beats.append(Beat(env, tmp_path, name))
        return beats[-1]

    yield start
    for beat in beats:
        beat.stop(signal.SIGKILL)


def wait_for(condition: Callable[[], Any], what: str, *beats: Beat, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    logs = b"".join(beat.log()[-3000:] for beat in beats).decode(errors="replace")
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def test_a_second_beat_stands_by_and_takes_over_when_the_first_dies(
    start_beat: Callable[[str], Beat], redis_url: str
) -> None:
    broker = redis.Redis.from_url(redis_url)
    first = start_beat("first")
    wait_for(lambda: first.sent() >= 2, "the first beat to send")
    second = start_beat("second")
    wait_for(lambda: b"standby, another beat holds the lock" in second.log(), "the second beat to stand by")

    queued, sent_by_first = broker.llen("celery"), first.sent()
    time.sleep(3 * LOCK_SECONDS)  # well past the lock's life: the first beat keeps renewing it
    queued_while_both_ran = broker.llen("celery") - queued

    assert second.sent() == 0
    # What reached Redis is what the first beat logged (one may be in flight between the two readings).
    assert abs(first.sent() - sent_by_first - queued_while_both_ran) <= 1
    # One beat's rate (a task every 0.5 s), not two beats' rate.
    assert 3 * LOCK_SECONDS * 2 - 3 <= queued_while_both_ran <= 3 * LOCK_SECONDS * 2 + 2
    assert broker.get(LOCK_NAME) == f"{os.uname().nodename}:{first.process.pid}".encode()

    first.stop(signal.SIGKILL)  # no clean shutdown: the lock is left to expire
    killed_at = time.monotonic()
    wait_for(lambda: second.sent() >= 1, "the second beat to take over", timeout=4 * LOCK_SECONDS)

    assert time.monotonic() - killed_at <= LOCK_SECONDS + 2
    assert b"holding the beat lock" in second.log()
    assert broker.get(LOCK_NAME) == f"{os.uname().nodename}:{second.process.pid}".encode()


def test_a_beat_stopped_cleanly_hands_over_at_once(start_beat: Callable[[str], Beat], redis_url: str) -> None:
    broker = redis.Redis.from_url(redis_url)
    first = start_beat("first")
    wait_for(lambda: first.sent() >= 1, "the first beat to send")
    second = start_beat("second")
    wait_for(lambda: b"standby" in second.log(), "the second beat to stand by")

    holder = f"{os.uname().nodename}:{first.process.pid}".encode()
    assert broker.get(LOCK_NAME) == holder
    first.stop(signal.SIGTERM)

    # Released on the way out (else it would be the first's for 2-3 s more): free, or the second's already.
    assert broker.get(LOCK_NAME) in (None, f"{os.uname().nodename}:{second.process.pid}".encode())
    wait_for(lambda: second.sent() >= 1, "the second beat to take over", first, second, timeout=LOCK_SECONDS)
