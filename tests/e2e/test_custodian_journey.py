"""A custodian's whole journey in a real browser, two people for the two-person download.

alice (keystore creator) logs in through the real pages (password + TOTP enrolment),
creates a keystore, reads its IAM guide, adds bob, creates a key and takes it through
its lifecycle; bob, in a second browser context, downloads what alice prepared; both
see the audit trail. Screenshots of the main pages go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from django.utils import timezone
from playwright.sync_api import expect

from byok_portal.vocabulary import KeyState
from keys.custody import kcv
from keys.models import Key
from keystores.models import Keystore
from tests.e2e.conftest import axe_violations, log_in, record_axe, screenshot, screenshot_path
from tests.keys.helpers import public_pem, rsa_private_key

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ACCOUNT = "210987654321"


def confirm(page: Any, action: str, label: str, *, capture: str = "") -> None:
    """Open an action's confirmation dialog, check it states the consequence, and confirm."""
    page.get_by_role("link", name=label, exact=True).click()
    dialog = page.locator(f"#dialog-{action}")
    dialog.wait_for(state="visible")
    assert "What happens:" in dialog.inner_text()
    if capture:
        page.screenshot(path=str(screenshot_path(capture)))
    dialog.get_by_role("button", name=label, exact=True).click()
    page.wait_for_load_state("domcontentloaded")


def message(page: Any) -> str:
    return str(page.locator(".messages").inner_text())


def test_a_key_lives_its_life_in_the_browser(
    live_server: Any, new_context: Any, people: Any, aws_sandbox: str, settings: Any
) -> None:
    base = live_server.url
    alice_page = new_context().new_page()
    log_in(alice_page, base, "alice", "alice-password-123")
    assert "Dashboard" in alice_page.title()

    # A keystore, and its IAM setup guide.
    alice_page.get_by_role("link", name="New keystore").first.click()
    alice_page.get_by_label("Name").fill("Payments production")
    alice_page.get_by_label("AWS account ID").fill(ACCOUNT)
    alice_page.get_by_label("Region").select_option("eu-west-1")
    alice_page.get_by_label("Role ARN").fill(f"arn:aws:iam::{ACCOUNT}:role/byok-portal")
    alice_page.get_by_role("button", name="Create keystore").click()
    alice_page.wait_for_url(re.compile(r"/keystores/[0-9a-f-]{36}/$"))
    keystore = Keystore.objects.get(name="Payments production")
    assert "Keystore “Payments production” created" in message(alice_page)
    guide = alice_page.locator("#iam")
    trust = json.loads(guide.locator("#trust-policy").inner_text())
    condition = trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"]
    assert condition == keystore.external_id
    assert "kms:KeyOrigin" in guide.locator("#permissions-policy").inner_text()
    alice_page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    guide.get_by_role("button", name="Copy trust policy JSON").click()
    # The button says so (its accessible name changes with it, so it is found by what it copies).
    expect(guide.locator("button[data-copy=trust-policy] .copy-label")).to_have_text("Copied")
    assert json.loads(alice_page.evaluate("navigator.clipboard.readText()")) == trust

    alice_page.get_by_role("button", name="Test connection").click()
    assert "Connection OK" in message(alice_page)
    assert "Connected" in alice_page.locator("#connection").inner_text()

    # bob becomes a custodian: he will download.
    alice_page.get_by_label("User").fill("bob")
    alice_page.get_by_label("Role").select_option("custodian")
    alice_page.get_by_role("button", name="Save role").click()
    assert "is now custodian" in message(alice_page)
    screenshot(alice_page, "03-keystore-detail-iam-guide")

    # A key; a bad alias is refused next to its field first.
    alice_page.get_by_role("link", name="New key").first.click()
    alice_page.get_by_label("Name").fill("Orders database")
    alice_page.get_by_label("Alias").fill("orders-db")
    alice_page.get_by_label("Tags").fill("app=orders\nteam=payments")
    expires = timezone.localdate() + dt.timedelta(days=20)
    alice_page.get_by_label("Expires").fill(expires.isoformat())
    alice_page.get_by_role("button", name="Create key").click()
    assert "An alias is 'alias/'" in alice_page.locator("#id_alias_error").inner_text()
    assert alice_page.get_by_label("Alias").get_attribute("aria-invalid") == "true"
    screenshot(alice_page, "05-key-create-with-error")
    alice_page.get_by_label("Alias").fill("alias/orders-db")
    alice_page.get_by_role("button", name="Create key").click()
    alice_page.wait_for_url(re.compile(r"/keys/[0-9a-f-]{36}/$"))
    key = Key.objects.get(name="Orders database", state=KeyState.ACTIVE)
    assert f"KCV {key.kcv}" in message(alice_page)

    # Deactivate, activate: only allowed actions, each confirmed with its consequence.
    assert alice_page.get_by_role("link", name="Activate", exact=True).count() == 0
    confirm(alice_page, "deactivate", "Deactivate", capture="06-confirm-deactivate-dialog")
    assert "deactivated" in message(alice_page)
    assert alice_page.locator("h1 .badge").inner_text() == "Inactive"
    confirm(alice_page, "activate", "Activate")
    assert "activated" in message(alice_page)
    assert alice_page.locator("h1 .badge").inner_text() == "Active"

    # Renew: the alias moves to the new key; the page follows it.
    confirm(alice_page, "renew", "Renew")
    assert "renewed" in message(alice_page)
    new_key = Key.objects.get(replaces=key)
    assert alice_page.url.endswith(f"/keys/{new_key.pk}/")
    assert "Replaces" in alice_page.locator("ol.chain").inner_text()

    # Schedule deletion of the replaced key (7 days), then cancel it.
    alice_page.get_by_role("link", name=key.name, exact=False).filter(has_text="Orders database").first.click()
    alice_page.wait_for_url(f"{base}/keys/{key.pk}/")
    alice_page.get_by_role("link", name="Schedule deletion", exact=True).click()
    dialog = alice_page.locator("#dialog-schedule-deletion")
    dialog.get_by_label("Waiting period (days)").fill("7")
    dialog.get_by_role("button", name="Schedule deletion").click()
    alice_page.wait_for_load_state("domcontentloaded")
    assert "Deletion of “Orders database” scheduled" in message(alice_page)
    assert "Deletion scheduled for" in alice_page.locator(".banner-bad").first.inner_text()
    screenshot(alice_page, "07-key-pending-deletion")
    confirm(alice_page, "cancel-deletion", "Cancel deletion")
    assert "cancelled" in message(alice_page)
    assert alice_page.locator("h1 .badge").inner_text() == "Inactive"

    # alice prepares a download of the new key...
    alice_page.goto(f"{base}/keys/{new_key.pk}/")
    screenshot(alice_page, "04-key-detail")
    alice_page.get_by_role("link", name="Prepare download").click()
    alice_page.get_by_label("Public key (PEM)").fill(public_pem())
    alice_page.get_by_role("button", name="Prepare download").click()
    assert "Download prepared" in message(alice_page)
    assert "another custodian must download" in alice_page.locator("#download-status").inner_text()
    assert alice_page.get_by_role("link", name="Download", exact=True).count() == 0

    # ...and bob, logged in separately, downloads it: a file, never a page.
    bob_page = new_context().new_page()
    log_in(bob_page, base, "bob", "bob-password-123")
    bob_page.goto(f"{base}/keys/{new_key.pk}/")
    bob_page.get_by_role("link", name="Download", exact=True).click()
    screenshot(bob_page, "08-download-second-person")
    with bob_page.expect_download() as download_info:
        bob_page.get_by_role("button", name="Download the file").click()
    download = download_info.value
    assert download.suggested_filename == f"byok-{new_key.pk}-wrapped.json"
    document = json.loads(Path(download.path()).read_text())
    assert set(document) == {"key_id", "wrapping_algorithm", "wrapped_key_material", "kcv", "public_key_fingerprint"}
    assert document["key_id"] == str(new_key.pk)
    assert document["wrapping_algorithm"] == "RSAES_OAEP_SHA_256"
    material = rsa_private_key().decrypt(
        base64.b64decode(document["wrapped_key_material"]),
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    assert kcv(material) == document["kcv"] == new_key.kcv

    # The audit trail shows both people.
    bob_page.goto(f"{base}/keys/{new_key.pk}/")
    bob_page.get_by_role("link", name="Full audit trail of this key").click()
    trail = bob_page.locator("table.audit-events").inner_text()
    assert "download" in trail
    assert "prepare_download" in trail
    screenshot(bob_page, "09-audit-trail")

    # The overview pages, for the README and the CI artifacts.
    alice_page.goto(f"{base}/keys/")
    screenshot(alice_page, "02-key-list")
    alice_page.goto(f"{base}/")
    assert (
        "Orders database"
        in alice_page.locator("#expiring-heading + *, section[aria-labelledby=expiring-heading]").first.inner_text()
    )
    screenshot(alice_page, "01-dashboard")
    alice_page.goto(f"{base}/keystores/")
    screenshot(alice_page, "10-keystore-list")


def test_confirmations_work_without_javascript(
    live_server: Any, new_context: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    """With JS off, an action button opens the confirmation page, which carries the same consequence and form."""
    from keys import services

    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="no-js").key
    context = new_context()
    page = context.new_page()
    log_in(page, live_server.url, "bob", "bob-password-123")
    no_js = context.browser.new_context(java_script_enabled=False, storage_state=context.storage_state())
    try:
        page = no_js.new_page()
        page.goto(f"{live_server.url}/keys/{key.pk}/")
        page.get_by_role("link", name="Deactivate", exact=True).click()
        page.wait_for_url(f"{live_server.url}/keys/{key.pk}/deactivate/")
        assert "KMS key is disabled" in page.locator(".consequence").inner_text()
        page.get_by_role("button", name="Deactivate", exact=True).click()
        page.wait_for_url(f"{live_server.url}/keys/{key.pk}/")
        assert "deactivated" in page.locator(".messages").inner_text()
    finally:
        no_js.close()
    key.refresh_from_db()
    assert key.state == KeyState.INACTIVE


MAIN_PAGES = {
    "dashboard": "/",
    "keystore-list": "/keystores/",
    "keystore-detail": "/keystores/{keystore}/",
    "keystore-create": "/keystores/new/",
    "key-list": "/keys/",
    "key-detail": "/keys/{key}/",
    "key-create": "/keys/new/",
    "key-edit": "/keys/{key}/edit/",
    "key-confirm": "/keys/{key}/schedule-deletion/",
    "prepare-download": "/keys/{key}/prepare-download/",
    "download": "/keys/{key}/download/",
    "audit": "/audit/",
    "account": "/accounts/",
}


def test_main_pages_have_no_critical_accessibility_violations(
    live_server: Any, new_context: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    """axe-core on every main page: no critical violations; serious ones are recorded (artifacts/axe/)."""
    from keys import services

    key = services.key_create(
        actor=people.actor(people.alice),
        keystore_id=keystore.pk,
        name="a11y",
        alias="alias/a11y",
        tags={"app": "a11y"},
        expires=timezone.localdate() + dt.timedelta(days=5),
    ).key
    services.key_prepare_download(actor=people.actor(people.bob), key_id=key.pk, public_key_pem=public_pem())
    page = new_context().new_page()
    login_violations = _check(page, f"{live_server.url}/accounts/login/", "login")
    log_in(page, live_server.url, "alice", "alice-password-123")
    critical: dict[str, list[str]] = {}
    serious: dict[str, list[str]] = {}
    for name, path in MAIN_PAGES.items():
        violations = _check(page, live_server.url + path.format(keystore=keystore.pk, key=key.pk), name)
        if name == "dashboard":
            violations += login_violations
        critical[name] = [v["id"] for v in violations if v["impact"] == "critical"]
        serious[name] = [v["id"] for v in violations if v["impact"] == "serious"]
    assert not any(critical.values()), critical
    # Serious findings are fixed as they appear; none are known today.
    assert not any(serious.values()), serious


def _check(page: Any, url: str, name: str) -> list[dict[str, Any]]:
    page.goto(url)
    violations = axe_violations(page)
    record_axe(name, violations)
    return violations
