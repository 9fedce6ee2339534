"""Webhook deliveries by a real Celery worker to a real HTTP receiver: signed, retried after 500s with
growing delays, and never delivered again once delivered.

The ``celery_client`` fixture's app (Redis) is the current Celery app while a test runs, so tasks
this process queues — the audit trail's after-commit hook queueing a fan-out — reach the worker
as they would from a web process.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone

from accounts.identity import Actor
from audit.models import AuditEvent
from keys.jobs.expiry import warn_expiring_keys
from notifications import services, signing
from notifications.models import Delivery, DeliveryState

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP endpoint that answers the statuses it is given in turn (then 200) and keeps every request."""

    statuses: list[int]
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    location: str = ""  # sent with a 3xx status

    def wait_for(self, count: int, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.requests) >= count, f"{len(self.requests)} request(s) of {count}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(statuses=[])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.requests.append(Received(dict(self.headers.items()), body))
                status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", state.location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/byok-events"
    yield state
    server.shutdown()
    server.server_close()


def settled(delivery: Delivery, timeout: float = 10) -> Delivery:
    """The delivery once it is no longer PENDING (its last attempt commits just after the receiver answers)."""
    deadline = time.monotonic() + timeout
    while delivery.state == DeliveryState.PENDING and time.monotonic() < deadline:
        time.sleep(0.1)
        delivery.refresh_from_db()
    return delivery


def queue_test_event(people: Any, keystore: Any, url: str) -> tuple[services.NewWebhook, Delivery]:
    """alice's webhook to ``url`` and a test event queued for it (as the "Send test event" button does)."""
    created = services.webhook_create(actor=people.actor(people.alice), keystore_id=keystore.pk, url=url, events=[])
    delivery = services.webhook_send_test(
        actor=people.actor(people.alice), keystore_id=keystore.pk, webhook_id=created.webhook.pk
    )
    return created, delivery


def expiry_event(make_key: Any) -> int:
    make_key(alias="alias/hooked", expires=timezone.localdate() + dt.timedelta(days=3))
    warn_expiring_keys(actor=Actor.system("expiry"))
    return AuditEvent.objects.get(operation="expiry_warning").seq


def test_a_delivery_is_signed_retried_after_500s_with_growing_delays_and_delivered_once(
    people: Any, keystore: Any, make_key: Any, receiver: Receiver, start_worker: Any, celery_client: Any
) -> None:
    created = services.webhook_create(
        actor=people.actor(people.alice), keystore_id=keystore.pk, url=receiver.url, events=[]
    )
    seq = expiry_event(make_key)
    receiver.statuses = [500, 503]
    # The expiry warning's commit queued its fan-out (the audit trail's after-commit hook): a worker does the rest.
    start_worker(BYOK_WEBHOOK_BACKOFF_SECONDS="1")

    receiver.wait_for(3)
    delivery = settled(Delivery.objects.get())

    assert (delivery.state, delivery.attempts, delivery.last_status_code) == (DeliveryState.DELIVERED, 3, 200)
    attempts = list(delivery.attempt_log.order_by("number"))
    assert [a.status_code for a in attempts] == [500, 503, 200]
    # Exponential backoff: 1 s, then 2 s.
    assert (attempts[1].at - attempts[0].at).total_seconds() >= 1
    assert (attempts[2].at - attempts[1].at).total_seconds() >= 2
    bodies = {r.body for r in receiver.requests}
    assert len(bodies) == 1, "every retry sends the same body"
    for request in receiver.requests:
        assert signing.verify(
            created.secret,
            timestamp=request.headers["X-BYOK-Timestamp"],
            body=request.body,
            signature=request.headers["X-BYOK-Signature"],
        )
        assert not signing.verify(
            "whsec_someone-else",
            timestamp=request.headers["X-BYOK-Timestamp"],
            body=request.body,
            signature=request.headers["X-BYOK-Signature"],
        )
        assert request.headers["X-BYOK-Event"] == "key.expiry_warning"
        assert request.headers["X-BYOK-Delivery"] == str(delivery.pk)
        assert request.headers["Content-Type"] == "application/json"
    document = json.loads(receiver.requests[0].body)
    assert document["type"] == "key.expiry_warning"
    assert document["key"]["alias"] == "alias/hooked"
    assert document["audit"]["seq"] == seq

    # Once delivered, never again: not by a redelivered delivery task, not by a second fan-out.
    celery_client.send_task("notifications.tasks.deliver_webhook", args=[str(delivery.pk)]).get(timeout=30)
    assert celery_client.send_task("notifications.tasks.fan_out", args=[seq]).get(timeout=30) == 0
    time.sleep(1.5)
    assert len(receiver.requests) == 3
    assert Delivery.objects.get().attempts == 3


def test_a_delivery_gives_up_after_the_last_attempt(
    people: Any, keystore: Any, make_key: Any, receiver: Receiver, start_worker: Any, celery_client: Any
) -> None:
    services.webhook_create(actor=people.actor(people.alice), keystore_id=keystore.pk, url=receiver.url, events=[])
    expiry_event(make_key)
    receiver.statuses = [500] * 10
    start_worker(BYOK_WEBHOOK_BACKOFF_SECONDS="1", BYOK_WEBHOOK_MAX_ATTEMPTS="2")

    receiver.wait_for(2)
    delivery = settled(Delivery.objects.get())

    assert (delivery.state, delivery.attempts, delivery.last_status_code) == (DeliveryState.FAILED, 2, 500)
    time.sleep(2.5)
    assert len(receiver.requests) == 2


def test_the_test_event_reaches_the_receiver_signed(
    people: Any, keystore: Any, receiver: Receiver, start_worker: Any, celery_client: Any
) -> None:
    created, delivery = queue_test_event(people, keystore, receiver.url)
    start_worker()

    receiver.wait_for(1)
    (request,) = receiver.requests
    assert signing.verify(
        created.secret,
        timestamp=request.headers["X-BYOK-Timestamp"],
        body=request.body,
        signature=request.headers["X-BYOK-Signature"],
    )
    assert json.loads(request.body)["type"] == "webhook.test"
    assert (settled(delivery).state, delivery.last_status_code) == (DeliveryState.DELIVERED, 200)


def test_a_worker_refuses_a_destination_outside_its_allowed_networks_once_and_for_good(
    people: Any, keystore: Any, receiver: Receiver, start_worker: Any, celery_client: Any
) -> None:
    """Saved while this process allows 127.0.0.1; the worker's own settings allow nothing (production's default)."""
    _created, delivery = queue_test_event(people, keystore, receiver.url)
    start_worker(BYOK_WEBHOOK_ALLOWED_NETWORKS="", BYOK_WEBHOOK_BACKOFF_SECONDS="1")

    delivery = settled(delivery, timeout=30)

    assert (delivery.state, delivery.attempts, delivery.last_status_code) == (DeliveryState.FAILED, 1, None)
    assert delivery.attempt_log.get().error.startswith("Refused: 127.0.0.1 is a loopback address")
    time.sleep(2.5)  # longer than a retry's backoff: none comes
    assert receiver.requests == []
    assert Delivery.objects.get(pk=delivery.pk).attempts == 1
