"""Reports as files: CSV rows checked against the database, PDFs read back, scoped to the reader."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest
from django.utils import timezone
from pypdf import PdfReader

from accounts.identity import Actor
from audit.chain import current_head
from audit.models import AuditEvent
from keys import services as key_services
from keys.models import Key
from tests.reports.conftest import aged
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def download(user: Any, kind: str, **params: str) -> Any:
    response = verified_client(user).get(f"/reports/{kind}/download/", params)
    assert response.status_code == 200, response.content
    return response


def csv_rows(response: Any) -> list[dict[str, str]]:
    assert response.streaming, "CSV reports are streamed"
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def pdf_text(response: Any) -> str:
    assert response["Content-Type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(b"".join(response.streaming_content)))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_the_inventory_csv_is_every_key_the_reader_sees_as_the_database_has_it(
    people: Any, keystore: Any, estate: dict[str, Key]
) -> None:
    bob = people.actor(people.bob)
    created = key_services.key_create(actor=bob, keystore_id=keystore.pk, name="Live", alias="alias/live").key
    key_services.key_rotate(actor=bob, key_id=created.pk)
    key_services.key_rotate(actor=bob, key_id=created.pk)

    rows = csv_rows(download(people.dan, "inventory"))

    visible = Key.objects.filter(keystore=keystore).order_by("name", "id")
    assert [row["key_id"] for row in rows] == [str(key.pk) for key in visible]
    now = timezone.now()
    for row in rows:
        key = Key.objects.get(pk=row["key_id"])
        assert row["keystore"] == "Payments"
        assert (row["name"], row["alias"], row["state"], row["kms_state"]) == (
            key.name,
            key.alias,
            key.state,
            key.kms_state,
        )
        assert (row["key_spec"], row["key_usage"], row["regions"]) == (key.key_spec, key.key_usage, "eu-west-1")
        assert row["check_value"] == key.kcv
        current = key.materials.get(state="CURRENT")
        since = current.rotated_at or current.imported_at
        assert since is not None
        assert row["material_versions"] == str(key.materials.count())
        assert int(row["material_age_days"]) == (now - since).days
        assert row["expires"] == (key.expires.isoformat() if key.expires else "")
        assert row["kms_key_arn"] == key.kms_key_arn
    by_id = {row["key_id"]: row for row in rows}
    assert by_id[str(estate["old"].pk)]["material_age_days"] == "400"
    last = AuditEvent.objects.filter(key_id=created.pk).order_by("-seq").first()
    assert last is not None
    assert by_id[str(created.pk)]["last_operation"] == last.operation == "rotate"
    assert by_id[str(created.pk)]["material_versions"] == "3"
    assert by_id[str(estate["fresh"].pk)]["material_versions"] == "1"
    assert by_id[str(created.pk)]["last_operation_at"] == last.time.isoformat()
    assert str(estate["hidden"].pk) not in by_id


def test_the_rotation_compliance_csv_measures_the_current_material_against_each_key_s_policy(
    people: Any, keystore: Any, estate: dict[str, Key]
) -> None:
    bob = people.actor(people.bob)
    Key.objects.filter(pk__in=[estate["old"].pk, estate["inactive"].pk]).update(rotation_period_days=180)
    # A key rotated today: old as a key, new as material, so compliant against a 90-day policy.
    rotated = aged(key_services.key_create(actor=bob, keystore_id=keystore.pk, name="Rotated").key, 400)
    key_services.key_update(actor=bob, key_id=rotated.pk, rotation_period_days=90)
    key_services.key_rotate(actor=bob, key_id=rotated.pk)

    rows = csv_rows(download(people.dan, "rotation-compliance"))

    # Live keys only (active and inactive), oldest material first; "Fresh" has no policy: not checked.
    assert [(row["name"], row["status"]) for row in rows] == [
        ("Old", "OVERDUE"),
        ("Parked", "OVERDUE"),
        ("Fresh", "NO POLICY"),
        ("Rotated", "COMPLIANT"),
    ]
    old = estate["old"].materials.get(state="CURRENT")
    assert old.imported_at is not None
    assert (rows[0]["rotation_policy_days"], rows[0]["material_versions"]) == ("180", "1")
    assert rows[0]["material_since"] == old.imported_at.date().isoformat()
    assert rows[0]["rotation_due"] == (old.imported_at + dt.timedelta(days=180)).date().isoformat()
    assert (rows[2]["rotation_policy_days"], rows[2]["rotation_due"]) == ("", "")
    current = Key.objects.get(pk=rotated.pk).materials.get(state="CURRENT")
    assert current.version == 2
    assert current.rotated_at is not None
    assert (rows[3]["material_versions"], rows[3]["material_age_days"], rows[3]["rotation_policy_days"]) == (
        "2",
        "0",
        "90",
    )
    assert rows[3]["material_since"] == current.rotated_at.date().isoformat()
    assert rows[3]["rotation_due"] == (current.rotated_at + dt.timedelta(days=90)).date().isoformat()


def test_the_activity_csv_is_the_period_s_events_the_reader_may_see(
    people: Any, keystore: Any, estate: dict[str, Key], time_machine: Any
) -> None:
    bob = people.actor(people.bob)
    # Audit time never runs backwards, so the story moves forwards from today.
    today = timezone.now().astimezone(dt.UTC).date()
    early = key_services.key_create(actor=bob, keystore_id=keystore.pk, name="Early").key
    time_machine.move_to(dt.datetime.combine(today + dt.timedelta(days=8), dt.time(12), tzinfo=dt.UTC), tick=False)
    key_services.key_deactivate(actor=bob, key_id=early.pk)
    key_services.key_update(actor=bob, key_id=early.pk, name="Early (parked)")
    time_machine.move_to(dt.datetime.combine(today + dt.timedelta(days=18), dt.time(12), tzinfo=dt.UTC), tick=False)
    key_services.key_activate(actor=bob, key_id=early.pk)
    since, until = today + dt.timedelta(days=5), today + dt.timedelta(days=15)

    rows = csv_rows(download(people.dan, "activity", since=since.isoformat(), until=until.isoformat()))

    expected = AuditEvent.objects.filter(
        keystore_id=keystore.pk, time__date__gte=since, time__date__lte=until
    ).order_by("seq")
    assert [int(row["seq"]) for row in rows] == [event.seq for event in expected]
    assert [(row["operation"], row["actor"], row["state_before"], row["state_after"]) for row in rows] == [
        ("deactivate", "bob", "ACTIVE", "INACTIVE"),
        ("update", "bob", "INACTIVE", "INACTIVE"),
    ]
    assert {row["hash"] for row in rows} == {event.hash for event in expected}


def test_the_activity_csv_names_who_approved_an_approved_operation(people: Any, keystore: Any) -> None:
    from approvals import services as approvals
    from approvals.models import ApprovalPolicy, ApprovalRequest
    from byok_portal.dual_control import ApprovalPending
    from byok_portal.vocabulary import Operation
    from keys.operations import REGISTRY

    bob = people.actor(people.bob)
    key = key_services.key_create(actor=bob, keystore_id=keystore.pk, name="Ledger").key
    ApprovalPolicy.objects.update_or_create(keystore=keystore, defaults={"disable": 2})
    with pytest.raises(ApprovalPending):
        REGISTRY[Operation.DEACTIVATE].run(bob, key.pk)
    request = ApprovalRequest.objects.get()
    approvals.approve(actor=people.actor(people.carol), request_id=request.pk)
    approvals.approve(actor=people.actor(people.alice), request_id=request.pk)
    approvals.execute(request.pk)

    rows = csv_rows(download(people.dan, "activity"))

    by_operation = {row["operation"]: row for row in rows if row["key_id"] == str(key.pk)}
    deactivated = AuditEvent.objects.get(key_id=key.pk, operation="deactivate", outcome="success")
    approvers = deactivated.details["approval"]["approvers"]
    assert [a["sub"] for a in approvers] == ["carol", "alice"]
    names = ", ".join(a["name"] for a in approvers)  # display names, as the trail recorded them
    assert names == f"carol, {people.alice.email}"
    assert by_operation["deactivate"]["approvals"] == names
    assert by_operation["execute_approval"]["approvals"] == names
    assert by_operation["request_approval"]["approvals"] == ""
    assert by_operation["create"]["approvals"] == ""


def test_the_inventory_pdf_lists_the_keys_and_the_audit_head_it_was_built_from(
    people: Any, estate: dict[str, Key]
) -> None:
    seq, digest = current_head()

    response = download(people.dan, "inventory", format="pdf")

    text = pdf_text(response)
    joined = text.replace("\n", "")  # a key id may wrap onto a second line of its cell
    for name in ("fresh", "old", "inactive"):
        assert estate[name].alias in text
        assert str(estate[name].pk) in joined
        assert estate[name].key_spec in joined
    assert estate["old"].kcv in text
    assert "alias/hidden" not in text
    assert f"sequence {seq}, hash {digest}" in text
    assert response["X-BYOK-Audit-Head"] == f"{seq}:{digest}"
    assert f"audit-{seq}.pdf" in response["Content-Disposition"]


def test_a_long_report_fills_several_pages_each_with_the_heading_and_the_head(people: Any, make_key: Any) -> None:
    for n in range(70):
        make_key(name=f"Key {n:03}", alias=f"alias/bulk-{n:03}")
    seq, digest = current_head()

    reader = PdfReader(io.BytesIO(b"".join(download(people.dan, "inventory", format="pdf").streaming_content)))

    assert len(reader.pages) >= 2
    for page in reader.pages:
        text = page.extract_text()
        assert f"sequence {seq}, hash {digest}" in text
        assert "Key ID" in text
    assert "alias/bulk-069" in reader.pages[-1].extract_text()
    assert "70 row(s). End of report." in reader.pages[-1].extract_text()


def test_bad_parameters_are_named_on_the_page(people: Any, keystore: Any) -> None:
    response = verified_client(people.dan).get("/reports/activity/download/", {"format": "xls", "since": "soon"})

    assert response.status_code == 400
    assert b"<strong>format</strong>: Choose one of: csv, pdf." in response.content
    assert b"<strong>since</strong>" in response.content


def test_the_reports_page_asks_for_a_login(client: Any) -> None:
    assert client.get("/reports/inventory/download/").status_code == 302


def test_a_system_actor_name_shows_as_who_in_activity(people: Any, estate: dict[str, Key]) -> None:
    from keys.jobs.cleanup import cleanup_due_keys

    Key.objects.filter(pk=estate["old"].pk).update(
        state="PENDING_DELETION", deletion_date=timezone.now() - dt.timedelta(days=1)
    )
    cleanup_due_keys(actor=Actor.system("cleanup"))

    rows = csv_rows(download(people.dan, "activity"))

    assert [(row["operation"], row["actor"], row["actor_iss"]) for row in rows][-1] == (
        "cleanup",
        "BYOK Portal (cleanup)",
        "system",
    )


def test_the_inventory_s_queries_do_not_grow_with_the_keys(people: Any, make_key: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> tuple[int, int]:
        client = verified_client(people.dan)
        with CaptureQueriesContext(connection) as captured:
            rows = len(csv_rows(client.get("/reports/inventory/download/", {"format": "csv"})))
        return len(captured.captured_queries), rows

    for _ in range(3):
        make_key()
    few = queries()
    for _ in range(30):
        make_key()
    many = queries()

    assert (few[1], many[1]) == (3, 33)
    assert few[0] == many[0]
