"""SPEC §14's /metrics: closed to the public, and the counters move when the portal works."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from audit.models import AuditHead
from byok_portal import aws
from keys import services
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests"


def scrape(client: Client | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(autouse=True)
def _token(settings: Any) -> None:
    settings.BYOK_METRICS_TOKEN = TOKEN
    settings.BYOK_METRICS_ALLOWED_IPS = []


def test_metrics_are_not_found_by_whoever_may_not_scrape(settings: Any) -> None:
    client = Client()
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION=TOKEN).status_code == 404  # not as a bearer token
    settings.BYOK_METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404  # no token: nobody by token


def test_an_allowed_address_scrapes_directly_but_not_through_the_proxy(settings: Any) -> None:
    settings.BYOK_METRICS_TOKEN = ""
    settings.BYOK_METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="192.0.2.7").get("/metrics").status_code == 404
    # Behind the proxy every client has the proxy's address: that must not let the public in.
    settings.BYOK_METRICS_ALLOWED_IPS = ["127.0.0.1"]
    assert Client().get("/metrics", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 404


def test_metrics_are_not_redirected_to_https(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_a_key_operation_moves_its_counters(
    people: Any, keystore: Any, aws_sandbox: str, django_capture_on_commit_callbacks: Any
) -> None:
    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="orders").key
    api = APIClient()
    api.force_login(people.bob)
    before = scrape()

    with django_capture_on_commit_callbacks(execute=True):  # operations count when their audit event commits
        response = api.post(f"/api/v1/keys/{key.pk}/deactivate/")
    after = scrape()

    assert response.status_code == 200
    assert value(after, "byok_operations_total", operation="deactivate", outcome="success") == (
        value(before, "byok_operations_total", operation="deactivate", outcome="success") + 1
    )
    for kms_operation in ("DisableKey", "DeleteImportedKeyMaterial"):
        assert value(after, "byok_kms_calls_total", operation=kms_operation) == (
            value(before, "byok_kms_calls_total", operation=kms_operation) + 1
        )
    latency = [
        labels
        for (name, labels), count in after.items()
        if name == "byok_http_request_duration_seconds_count"
        and dict(labels)["method"] == "POST"
        and "deactivate" in dict(labels)["route"]
        and count > value(before, name, **dict(labels))
    ]
    assert len(latency) == 1
    assert dict(latency[0])["status"] == "200"
    assert value(after, "byok_audit_head_sequence") == AuditHead.objects.get().seq


def test_kms_throttles_and_errors_are_counted_by_operation(
    proxy: FaultProxy, people: Any, keystore: Any, django_capture_on_commit_callbacks: Any
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="orders").key
    before = scrape()
    proxy.inject("DisableKey", "throttle", times=1)  # botocore retries it: the operation succeeds
    services.key_deactivate(actor=bob, key_id=key.pk)
    proxy.inject("EnableKey", "deny", times=1)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(aws.AwsError):
        services.key_activate(actor=bob, key_id=key.pk)
    after = scrape()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("byok_kms_throttles_total", operation="DisableKey") == 1
    assert grew("byok_kms_calls_total", operation="DisableKey") == 2  # the throttled attempt and the retry
    assert grew("byok_kms_errors_total", operation="DisableKey", code="ThrottlingException") == 0
    assert grew("byok_kms_errors_total", operation="EnableKey", code="AccessDeniedException") == 1
    assert grew("byok_operations_total", operation="activate", outcome="failed") == 1
