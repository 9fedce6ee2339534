"""The webhook and report endpoints of SPEC §16: who may do what, the secret shown once, 400s that name the field."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from audit.chain import current_head
from audit.models import AuditEvent
from notifications import services
from notifications.models import Delivery, Webhook
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def hooks(keystore: Any) -> str:
    return f"/api/v1/keystores/{keystore.pk}/webhooks/"


def test_an_admin_adds_a_webhook_and_sees_its_secret_once(api_as: Any, people: Any, keystore: Any) -> None:
    api = api_as(people.alice)

    created = api.post(
        hooks(keystore), {"url": "https://hooks.example.com/byok", "events": ["key.deleted"]}, expect=201
    ).json()

    assert created["secret"].startswith("whsec_")
    assert len(created["secret"]) > 40
    assert (created["url"], created["events"]) == ("https://hooks.example.com/byok", ["key.deleted"])
    listed = api.get(hooks(keystore), expect=200).json()["results"]
    assert [hook["id"] for hook in listed] == [created["id"]]
    assert "secret" not in listed[0]
    detail = api.get(f"{hooks(keystore)}{created['id']}/", expect=200).json()
    assert "secret" not in detail
    assert detail["recent_deliveries"] == []
    # Stored only sealed: the secret is in no column of the row.
    row = Webhook.objects.values().get()
    assert created["secret"].encode() not in bytes(row["secret_sealed"])
    assert created["secret"] not in str({k: v for k, v in row.items() if k != "secret_sealed"})
    event = AuditEvent.objects.filter(operation="create_webhook").get()
    assert event.details["url"] == "https://hooks.example.com/byok"
    assert created["secret"] not in str(event.details)


def test_webhook_urls_must_be_https_in_production(api_as: Any, people: Any, keystore: Any, settings: Any) -> None:
    settings.BYOK_WEBHOOK_ALLOW_HTTP = False
    api = api_as(people.alice)

    refused = api.post(hooks(keystore), {"url": "http://hooks.example.com/byok"}, expect=400).json()
    unknown = api.post(hooks(keystore), {"url": "https://h.example.com/", "events": ["key.exploded"]}, expect=400)

    assert refused == {"url": ["Enter an https:// URL."]}
    assert "events" in unknown.json()
    assert not Webhook.objects.exists()


def test_only_keystore_admins_manage_webhooks(api_as: Any, people: Any, keystore: Any) -> None:
    body = {"url": "https://hooks.example.com/byok"}

    assert api_as(people.bob).post(hooks(keystore), body, expect=403).json()["code"] == "permission_denied"
    assert api_as(people.dan).get(hooks(keystore), expect=403).json()["code"] == "permission_denied"
    assert api_as(people.eve).post(hooks(keystore), body, expect=404).json()["code"] == "not_found"
    assert api_as(None).get(hooks(keystore)).status_code in (401, 403)
    assert not Webhook.objects.exists()
    refusals = AuditEvent.objects.filter(operation="create_webhook", outcome="refused")
    assert sorted(refusals.values_list("actor_sub", flat=True)) == ["bob", "eve"]


def test_a_test_event_is_queued_and_a_webhook_can_be_removed(api_as: Any, people: Any, keystore: Any) -> None:
    api = api_as(people.alice)
    created = api.post(hooks(keystore), {"url": "https://hooks.example.com/byok"}, expect=201).json()

    delivery = api.post(f"{hooks(keystore)}{created['id']}/test/", expect=202).json()

    assert (delivery["event_type"], delivery["state"], delivery["attempts"]) == ("webhook.test", "PENDING", 0)
    assert Delivery.objects.get().payload["keystore"] == {"id": str(keystore.pk), "name": "Payments"}
    api.delete(f"{hooks(keystore)}{created['id']}/", expect=204)
    assert not Webhook.objects.exists()
    assert not Delivery.objects.exists()
    api.delete(f"{hooks(keystore)}{created['id']}/", expect=404)
    api.post(f"{hooks(keystore)}not-a-uuid/test/", expect=404)


def test_the_service_refuses_a_url_that_is_not_one(people: Any, keystore: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        services.webhook_create(actor=people.actor(people.alice), keystore_id=keystore.pk, url="hooks", events=[])
    assert "url" in refused.value.message_dict


def test_the_report_api_streams_csv_with_the_audit_head(api_as: Any, people: Any, keystore: Any) -> None:
    from keys import services as key_services

    key = key_services.key_create(
        actor=people.actor(people.bob), keystore_id=keystore.pk, name="K", alias="alias/k"
    ).key
    seq, digest = current_head()

    response = api_as(people.dan).client.get("/api/v1/reports/inventory/", {"format": "csv"})

    assert response.status_code == 200
    assert response["X-BYOK-Audit-Head"] == f"{seq}:{digest}"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(row["key_id"], row["check_value"]) for row in rows] == [(str(key.pk), key.kcv)]


def test_the_report_api_serves_pdf(api_as: Any, people: Any, keystore: Any) -> None:
    response = api_as(people.dan).client.get("/api/v1/reports/rotation-compliance/", {"format": "pdf"})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert b"".join(response.streaming_content).startswith(b"%PDF-")


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("inventory", {"format": "xlsx"}, "format"),
        ("activity", {"since": "yesterday-ish"}, "since"),
        ("activity", {"since": "2026-12-02", "until": "2026-12-01"}, "until"),
        ("inventory", {"keystore": "not-a-uuid"}, "keystore"),
    ],
)
def test_bad_report_parameters_are_400_naming_the_field(
    api_as: Any, people: Any, keystore: Any, kind: str, params: dict[str, str], field: str
) -> None:
    response = api_as(people.dan).client.get(f"/api/v1/reports/{kind}/", params)

    assert response.status_code == 400
    assert field in response.json()


def test_empty_report_parameters_are_400_in_the_api_but_absent_on_the_page(
    api_as: Any, people: Any, keystore: Any
) -> None:
    blank = {"format": "", "since": "", "until": "", "keystore": ""}

    response = api_as(people.dan).client.get("/api/v1/reports/activity/", blank)

    assert response.status_code == 400
    assert response.json() == {name: ["May not be blank."] for name in blank}
    # The page's form submits its untouched fields empty: there they mean "not given".
    page = verified_client(people.dan).get("/reports/activity/download/", blank)
    assert (page.status_code, page["Content-Type"]) == (200, "text/csv; charset=utf-8")


def test_a_keystore_the_caller_cannot_see_is_refused_like_an_unknown_one(
    api_as: Any, people: Any, keystore: Any
) -> None:
    response = api_as(people.eve).client.get("/api/v1/reports/inventory/", {"keystore": str(keystore.pk)})

    assert response.status_code == 400
    assert response.json() == {"keystore": ["No keystore with this ID that you can see."]}


def test_an_unknown_report_is_not_found(api_as: Any, people: Any) -> None:
    response = api_as(people.dan).client.get("/api/v1/reports/everything/")

    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_reports_need_a_login(api_as: Any) -> None:
    assert api_as(None).client.get("/api/v1/reports/inventory/").status_code in (401, 403)
