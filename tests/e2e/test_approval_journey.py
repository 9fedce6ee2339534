"""Dual control in a real browser (SPEC §12): two custodians, one asks for a key's deletion, the other approves it.

bob asks on the key page and is told it waits; the key page shows the pending request. carol sees
the count in her navigation, opens the request from her inbox, reads its full content and approves.
A real Celery worker on Redis runs the deletion as bob: the key is pending deletion, in KMS too.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import expect

from approvals.models import ApprovalPolicy, ApprovalRequest
from keys.models import Key
from keys.services import key_create
from tests.e2e.conftest import log_in, screenshot
from tests.keys.helpers import sandbox_view
from tests.tasks.conftest import portal_broker, redis_url, start_worker, worker_env

__all__ = ["portal_broker", "redis_url", "start_worker", "worker_env"]

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_one_custodian_asks_for_a_deletion_and_another_approves_it_in_the_inbox(
    live_server: Any,
    new_context: Any,
    people: Any,
    keystore: Any,
    aws_sandbox: str,
    start_worker: Any,
    portal_broker: str,
) -> None:
    ApprovalPolicy.objects.create(keystore=keystore, destroy=1)
    key = key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="payments-2026").key
    start_worker()
    base = live_server.url

    # bob asks: the confirmation names the consequence; the answer says it waits for approval.
    bob_page = new_context().new_page()
    log_in(bob_page, base, "bob", "bob-password-123")
    bob_page.goto(f"{base}/keys/{key.pk}/")
    bob_page.get_by_role("link", name="Schedule deletion", exact=True).click()
    dialog = bob_page.locator("#dialog-schedule-deletion")
    dialog.wait_for(state="visible")
    dialog.get_by_label("Waiting period (days)").fill("7")
    dialog.get_by_role("button", name="Schedule deletion").click()
    expect(bob_page.locator(".messages")).to_contain_text("waits for approval")
    panel = bob_page.locator("#pending-approval")
    expect(panel).to_contain_text("bob asked to schedule_deletion")
    expect(panel).to_contain_text("pending_window_days")
    expect(panel).to_contain_text("nobody yet")
    assert Key.objects.get(pk=key.pk).state == "ACTIVE"

    # carol: the count in her navigation, the request in her inbox, its full content, her approval.
    carol_page = new_context().new_page()
    log_in(carol_page, base, "carol", "carol-password-123")
    expect(carol_page.locator("#nav-approvals")).to_contain_text("1")
    carol_page.locator(".menu-toggle").click()  # at 1366 px the menu is folded behind "Menu"
    carol_page.locator("#nav-approvals").click()
    carol_page.locator("#awaiting").get_by_role("link", name="schedule_deletion").click()
    content = carol_page.locator("#request-content")
    expect(content).to_contain_text("payments-2026")
    expect(content).to_contain_text("pending_window_days = 7")
    expect(content).to_contain_text("bob (local | bob)")
    expect(content).to_contain_text("0 of 1 needed")
    screenshot(carol_page, "approval-request")
    carol_page.get_by_role("button", name="Approve schedule_deletion").click()
    expect(carol_page.locator(".messages")).to_contain_text("Approved.")

    # The worker runs the deletion as bob; bob's key page then shows it pending deletion.
    deadline = time.monotonic() + 60
    while ApprovalRequest.objects.get().state != "EXECUTED" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ApprovalRequest.objects.get().state == "EXECUTED"
    bob_page.goto(f"{base}/keys/{key.pk}/")
    expect(bob_page.locator("h1")).to_contain_text(re.compile("Pending deletion"))
    expect(bob_page.locator("#pending-approval")).to_have_count(0)
    assert sandbox_view(aws_sandbox, key)["key_state"] == "PendingDeletion"
    carol_page.reload()
    expect(carol_page.locator("#approvers")).to_contain_text("carol")
    expect(carol_page.locator("#nav-approvals")).not_to_contain_text("1")
