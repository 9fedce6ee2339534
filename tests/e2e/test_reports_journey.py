"""Reports and notifications in a real browser: the dashboard's charts over time, report downloads,
and a webhook added with its secret shown once and a test event sent."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from audit.chain import current_head
from keys import services as key_services
from notifications.models import Delivery, Webhook
from tests.e2e.conftest import axe_violations, log_in, record_axe, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_auditor_reads_the_charts_and_downloads_reports(
    live_server: Any, new_context: Any, people: Any, keystore: Any
) -> None:
    bob = people.actor(people.bob)
    keys = [
        key_services.key_create(actor=bob, keystore_id=keystore.pk, name=f"Card {n}", alias=f"alias/card-{n}").key
        for n in range(3)
    ]
    key_services.key_deactivate(actor=bob, key_id=keys[0].pk)
    page = new_context().new_page()
    log_in(page, live_server.url, "dan", "dan-password-123")

    page.get_by_role("link", name="Trends and reports").click()
    page.wait_for_url("**/reports/")
    charts = page.locator("svg.chart")
    assert charts.count() == 3
    for name in ("Operations per day", "Keys by state at the end of each day", "Material age"):
        assert page.get_by_role("img", name=name).is_visible()
    screenshot(page, "20-reports-and-trends")
    violations = axe_violations(page)
    record_axe("reports", violations)
    assert not violations, violations

    form = page.locator("#report-inventory")
    with page.expect_download() as csv_download:
        form.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(csv_download.value.path()).read_text())))
    assert sorted(row["key_id"] for row in rows) == sorted(str(key.pk) for key in keys)
    assert {row["alias"]: row["state"] for row in rows}["alias/card-0"] == "INACTIVE"

    seq, digest = current_head()
    with page.expect_download() as pdf_download:
        form.get_by_role("button", name="Download PDF").click()
    assert pdf_download.value.suggested_filename.endswith(f"-audit-{seq}.pdf")
    text = "\n".join(p.extract_text() for p in PdfReader(pdf_download.value.path()).pages)
    assert all(f"alias/card-{n}" in text for n in range(3))
    assert f"sequence {seq}, hash {digest}" in text


def test_an_admin_adds_a_webhook_sees_its_secret_once_and_sends_a_test_event(
    live_server: Any, new_context: Any, people: Any, keystore: Any
) -> None:
    page = new_context().new_page()
    log_in(page, live_server.url, "alice", "alice-password-123")
    page.goto(f"{live_server.url}/keystores/{keystore.pk}/")
    page.get_by_role("link", name="Webhooks").click()

    page.get_by_label("URL").fill("https://hooks.example.com/byok")
    page.get_by_label("Key deleted").check()
    page.get_by_role("button", name="Add webhook").click()

    secret = page.locator("#webhook-secret").inner_text().strip()
    assert secret.startswith("whsec_")
    screenshot(page, "21-webhook-secret-shown-once")
    page.get_by_role("button", name="Send test event").click()
    assert "Test event queued" in page.locator(".messages").inner_text()
    assert secret not in page.content()  # never shown again
    assert "webhook.test" in page.locator("#deliveries").inner_text()
    webhook = Webhook.objects.get()
    assert (webhook.url, webhook.events) == ("https://hooks.example.com/byok", ["key.deleted"])
    assert Delivery.objects.get().event_type == "webhook.test"
