"""A bulk action from the key list's selection, followed live on the job page (static JS under the strict CSP)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import expect

from byok_portal.vocabulary import KeyState
from jobs import services
from jobs.models import Job
from keys.models import Key
from keys.services import key_create
from tests.e2e.conftest import log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_selection_becomes_a_job_whose_page_follows_it(
    live_server: Any, new_context: Any, people: Any, keystore: Any
) -> None:
    keys = [key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name=f"k{i}").key for i in range(3)]
    page = new_context().new_page()
    log_in(page, live_server.url, "bob", "bob-password-123")
    page.goto(f"{live_server.url}/keys/")
    for key in keys[:2]:
        page.get_by_label(f"Select {key.name}").check()
    page.select_option("#bulk-operation", "deactivate")
    page.get_by_role("button", name="Run on the selected keys").click()
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}/$"))

    panel = page.locator("#job")
    expect(panel.locator('[data-field="state"]')).to_have_text("QUEUED")
    expect(page.locator("#job-progress")).to_have_attribute("max", "2")

    job = Job.objects.get()
    for lane in {keystore.pk}:  # the worker's code, here: the page must notice on its own
        services.run_lane(job.pk, lane, until=time.monotonic() + 60, limit=100)

    expect(panel.locator('[data-field="state"]')).to_have_text("DONE", timeout=10_000)
    expect(panel.locator('[data-field="done"]')).to_have_text("2")
    expect(panel.locator('[data-field="eta"]')).to_have_text("finished")
    assert page.locator("#job-progress").evaluate("bar => bar.value") == 2
    expect(page.locator('#job-results [data-field="outcome"]')).to_have_text(["SUCCESS", "SUCCESS"])
    screenshot(page, "bulk-job")
    assert [Key.objects.get(pk=k.pk).state for k in keys] == [KeyState.INACTIVE, KeyState.INACTIVE, KeyState.ACTIVE]
