"""A custodian's whole journey in a real browser, two people for the two-person download.

alice (keystore creator) logs in through the real pages (password + TOTP enrolment),
creates a keystore with the sandbox's suggested values, reads its IAM guide, is refused
by the sandbox's STS until she creates the role there, adds bob, creates a key, restarts
the sandbox (as a restart of ``make run`` does) and takes the same key through its
lifecycle; bob, in a second browser context, downloads what alice prepared; both
see the audit trail. Screenshots of the main pages go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from django.utils import timezone
from playwright.sync_api import expect

from accounts.identity import Actor
from byok_portal.vocabulary import KeyState
from keys.custody import kcv
from keys.jobs.reconcile import reconcile_everything, reconcile_key
from keys.models import Key
from keystores import services as keystore_services
from keystores.models import Keystore
from tests.e2e.conftest import RestartableSandbox, axe_violations, log_in, record_axe, screenshot, screenshot_path
from tests.keys.helpers import public_pem, rsa_private_key

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ACCOUNT = "111122223333"  # the sandbox's suggested account


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
    live_server: Any, new_context: Any, people: Any, restartable_sandbox: RestartableSandbox, settings: Any
) -> None:
    base = live_server.url
    alice_page = new_context().new_page()
    log_in(alice_page, base, "alice", "alice-password-123")
    assert "Dashboard" in alice_page.title()

    # A keystore, and its IAM setup guide. In sandbox mode the form already holds values that work there.
    alice_page.get_by_role("link", name="New keystore").first.click()
    assert alice_page.get_by_label("AWS account ID").input_value() == ACCOUNT
    assert alice_page.get_by_label("Region").input_value() == "eu-west-1"
    assert alice_page.get_by_label("Role ARN").input_value() == f"arn:aws:iam::{ACCOUNT}:role/byok-portal"
    alice_page.get_by_label("Name").fill("Payments production")
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

    # The role does not exist yet: the sandbox refuses as AWS's STS would.
    alice_page.get_by_role("button", name="Test connection").click()
    assert "Connection failed" in message(alice_page)
    assert "AccessDenied" in alice_page.locator("#connection-error").inner_text()
    screenshot(alice_page, "03a-keystore-connection-refused")
    alice_page.get_by_role("button", name="Create this role in the sandbox").click()
    assert f"Role {keystore.role_arn} created in the sandbox" in message(alice_page)
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

    # `make run` is restarted: the sandbox comes back from its state file with the same keys, and the
    # portal carries on with them.
    restartable_sandbox.restart()
    assert reconcile_everything(actor=Actor.system("reconcile")).drift == 0
    alice_page.reload()
    assert "KMS is not in step" not in alice_page.locator("main").inner_text()
    alice_page.goto(f"{base}/")
    assert (
        "Every key is in step with KMS" in alice_page.locator("section[aria-labelledby=attention-heading]").inner_text()
    )
    alice_page.goto(f"{base}/keys/{key.pk}/")

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
    # [pages] The page confirms the download in place of the button, with the unwrap commands below.
    expect(bob_page.locator("#download-done")).to_contain_text(f"Downloaded byok-{new_key.pk}-wrapped.json")
    assert bob_page.get_by_role("button", name="Download the file").count() == 0
    assert "openssl pkeyutl -decrypt" in bob_page.locator("#unwrap-commands").inner_text()
    screenshot(bob_page, "08b-download-done")
    document = json.loads(Path(download.path()).read_text())
    assert set(document) == {
        "key_id",
        "key_spec",
        "wrapping_algorithm",
        "wrapped_key_material",
        "kcv",
        "public_key_sha256",
        "public_key_fingerprint",
        "material_version",
        "materials",
    }
    assert document["key_id"] == str(new_key.pk)
    # SPEC §16: every material version, wrapped; a key that never rotated has just its first, current one.
    assert document["material_version"] == 1
    assert [(m["version"], m["state"]) for m in document["materials"]] == [(1, "CURRENT")]
    assert document["wrapping_algorithm"] == "RSAES_OAEP_SHA_256"
    material = rsa_private_key().decrypt(
        base64.b64decode(document["wrapped_key_material"]),
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    assert kcv(material) == document["kcv"] == new_key.kcv

    # The audit trail shows both people.
    bob_page.goto(f"{base}/keys/{new_key.pk}/")
    assert "The preparation is used up" in message(bob_page)  # [pages] the key page confirms it too
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
    "keystore-edit": "/keystores/{keystore}/edit/",
    "keystore-delete": "/keystores/{keystore}/delete/",
    "key-list": "/keys/",
    "key-detail": "/keys/{key}/",
    "key-create": "/keys/new/",
    "key-edit": "/keys/{key}/edit/",
    "key-confirm": "/keys/{key}/schedule-deletion/",
    "prepare-download": "/keys/{key}/prepare-download/",
    "download": "/keys/{key}/download/",
    "audit": "/audit/",
    "account": "/accounts/",
    # What the sandbox and a vanished KMS key add: a refused connection, and the way out of a missing KMS key.
    "keystore-detail-refused": "/keystores/{refused}/",
    "key-detail-missing": "/keys/{missing}/",
    "key-confirm-recreate": "/keys/{missing}/recreate/",
}
# A laptop and a phone (issue 13 item 5): every page is checked at both widths.
AXE_WIDTHS = {"1280": {"width": 1280, "height": 800}, "390": {"width": 390, "height": 844}}


@pytest.mark.parametrize("width", sorted(AXE_WIDTHS))
def test_main_pages_have_no_accessibility_violations(
    width: str, live_server: Any, new_context: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    """axe-core (WCAG 2.1 A/AA and best practices) on every main page: no violation of any impact.

    Findings are kept per page and width in artifacts/axe/. The key page is checked with a
    download prepared by someone else (its richest state), and on the phone also with the menu open.
    """
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
    refused = keystore_services.keystore_create(
        actor=people.actor(people.alice),
        name="Not set up yet",
        aws_account_id=keystore.aws_account_id,
        region=keystore.region,
        role_arn=f"arn:aws:iam::{keystore.aws_account_id}:role/never-created",
    )
    assert not keystore_services.keystore_test_connection(
        actor=people.actor(people.alice), keystore_id=refused.pk
    ).last_check_ok
    missing = services.key_create(actor=people.actor(people.alice), keystore_id=keystore.pk, name="vanished").key
    ks = keystore
    purge = f"{aws_sandbox}/_sandbox/kms/{ks.aws_account_id}/{ks.region}/keys/{missing.kms_key_id}/purge"
    urllib.request.urlopen(urllib.request.Request(purge, data=b"", method="POST")).close()
    reconcile_key(missing.pk, actor=Actor.system("reconcile"))
    page = new_context(viewport=AXE_WIDTHS[width]).new_page()
    found: dict[str, list[str]] = {}
    found["login"] = _check(page, f"{live_server.url}/accounts/login/", f"login-{width}")
    log_in(page, live_server.url, "alice", "alice-password-123")
    for name, path in MAIN_PAGES.items():
        url = live_server.url + path.format(keystore=keystore.pk, key=key.pk, refused=refused.pk, missing=missing.pk)
        found[name] = _check(page, url, f"{name}-{width}")
        # Nothing pushes the page itself sideways (wide tables and code scroll inside their own boxes).
        if page.evaluate("document.documentElement.scrollWidth") > AXE_WIDTHS[width]["width"]:
            found[name].append("page wider than the screen")
        if name == "key-detail-missing":  # the page under test really is the way out
            assert page.get_by_role("link", name="Recreate in KMS", exact=True).count() == 1
        if name == "keystore-detail-refused":
            assert page.get_by_role("button", name="Create this role in the sandbox").count() == 1
    if width == "390":
        page.goto(f"{live_server.url}/keys/{key.pk}/")
        page.get_by_role("button", name="Menu").click()
        found["menu-open"] = _ids(page, f"menu-open-{width}")
    # Any finding, whatever its impact, is fixed as it appears; none are known today.
    assert not any(found.values()), {name: ids for name, ids in found.items() if ids}


def _check(page: Any, url: str, name: str) -> list[str]:
    page.goto(url)
    return _ids(page, name)


def _ids(page: Any, name: str) -> list[str]:
    violations = axe_violations(page)
    record_axe(name, violations)
    return [f"{v['id']} ({v['impact']})" for v in violations]
