"""A key whose KMS key vanished: found, shown as such, and recreated in KMS with the key's own material."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from django.conf import settings

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal.aws import SANDBOX_ROLE_POLICY_NAME, AwsError
from byok_portal.errors import Conflict
from byok_portal.vocabulary import KeyState, KmsState, Operation, Outcome
from keys import services
from keys.jobs.reconcile import reconcile_everything, reconcile_key
from keys.lifecycle import allowed_operations
from keys.models import Key
from tests.conftest import create_sandbox_role
from tests.keys.helpers import account_admin_iam, kms_client, sandbox_view
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def vanish(sandbox_url: str, key: Key) -> None:
    """The KMS key disappears, as at the end of a deletion window run directly in AWS, or a sandbox reset."""
    ks = key.keystore
    url = f"{sandbox_url}/_sandbox/kms/{ks.aws_account_id}/{ks.region}/keys/{key.kms_key_id}/purge"
    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST")) as response:
        assert json.loads(response.read())["purged"] is True


@pytest.fixture
def key(people: Any, keystore: Any) -> Key:
    return services.key_create(
        actor=people.actor(people.bob),
        keystore_id=keystore.pk,
        name="orders",
        alias="alias/orders",
        tags={"app": "shop"},
    ).key


def found_missing(key: Key) -> Key:
    reconcile_key(key.pk, actor=Actor.system("reconcile"))
    key.refresh_from_db()
    assert key.kms_state == KmsState.MISSING
    return key


def test_reconciliation_shows_the_vanished_kms_key_on_the_dashboard_and_the_key_page(
    people: Any, key: Key, aws_sandbox: str
) -> None:
    vanish(aws_sandbox, key)
    key = found_missing(key)
    browser = verified_client(people.bob)

    dashboard = browser.get("/").content.decode()
    page = browser.get(f"/keys/{key.pk}/").content.decode()

    assert "Every key is in step with KMS" not in dashboard
    assert key.kms_key_arn in dashboard
    assert "No KMS key" in page
    assert 'id="kms-key-missing"' in page
    assert f'href="/keys/{key.pk}/recreate/"' in page
    # Not a routine operation: the API and an in-step key never offer it.
    assert Operation.RECREATE not in allowed_operations(key.state)


def test_recreate_is_offered_only_while_the_kms_key_is_missing(people: Any, key: Key, aws_sandbox: str) -> None:
    """One rule (the lifecycle row's ``repairs``): an in-step key's page has no way to recreate, nor the admin."""
    browser = verified_client(people.bob)
    link = f'href="/keys/{key.pk}/recreate/"'

    assert link not in browser.get(f"/keys/{key.pk}/").content.decode()
    vanish(aws_sandbox, key)
    found_missing(key)
    page = browser.get(f"/keys/{key.pk}/").content.decode()
    assert link in page
    # The way out comes first: every other operation needs the KMS key.
    assert page.index(link) < page.index(f'href="/keys/{key.pk}/deactivate/"')
    admin_actions = verified_client(people.root).get("/admin/keys/key/").content.decode()
    assert 'value="run_deactivate"' in admin_actions
    assert 'value="run_recreate"' not in admin_actions


def test_recreate_gives_a_new_kms_key_the_same_material_alias_and_tags(people: Any, key: Key, aws_sandbox: str) -> None:
    vanish(aws_sandbox, key)
    old_arn = found_missing(key).kms_key_arn

    response = verified_client(people.bob).post(f"/keys/{key.pk}/recreate/", follow=True)

    key.refresh_from_db()
    assert "recreated in KMS" in response.content.decode()
    assert key.kms_key_arn != old_arn
    assert (key.state, key.kms_state, key.drift) == (KeyState.ACTIVE, KmsState.ENABLED, [])
    view = sandbox_view(aws_sandbox, key)
    assert (view["key_state"], view["kcv"], view["aliases"]) == ("Enabled", key.kcv, ["alias/orders"])
    assert view["tags"] == {"app": "shop", settings.BYOK_TAG_KEY: str(key.pk)}
    event = AuditEvent.objects.filter(key_id=key.pk, operation=Operation.RECREATE).get()
    assert (event.outcome, event.details["previous_kms_key_arn"]) == (Outcome.SUCCESS, old_arn)
    assert event.details["kms_key_arn"] == key.kms_key_arn
    # Everything works on the new KMS key again.
    services.key_deactivate(actor=people.actor(people.bob), key_id=key.pk)
    assert sandbox_view(aws_sandbox, Key.objects.get(pk=key.pk))["key_state"] == "PendingImport"


def test_an_inactive_key_comes_back_without_material_and_activates(people: Any, key: Key, aws_sandbox: str) -> None:
    services.key_deactivate(actor=people.actor(people.bob), key_id=key.pk)
    vanish(aws_sandbox, key)
    found_missing(key)

    key = services.key_recreate(actor=people.actor(people.bob), key_id=key.pk).key

    assert (key.state, key.kms_state, sandbox_view(aws_sandbox, key)["key_state"]) == (
        KeyState.INACTIVE,
        KmsState.EMPTY,
        "PendingImport",
    )
    key = services.key_activate(actor=people.actor(people.bob), key_id=key.pk).key
    assert sandbox_view(aws_sandbox, key)["kcv"] == key.kcv


def test_an_operation_that_finds_the_kms_key_gone_marks_it_missing(people: Any, key: Key, aws_sandbox: str) -> None:
    vanish(aws_sandbox, key)

    with pytest.raises(AwsError) as failure:
        services.key_deactivate(actor=people.actor(people.bob), key_id=key.pk)

    key.refresh_from_db()
    assert failure.value.code == "NotFoundException"
    assert (key.state, key.kms_state) == (KeyState.ACTIVE, KmsState.MISSING)
    assert f'href="/keys/{key.pk}/recreate/"' in verified_client(people.bob).get(f"/keys/{key.pk}/").content.decode()


def test_recreate_is_refused_while_the_kms_key_exists(people: Any, key: Key, aws_sandbox: str) -> None:
    arn = key.kms_key_arn

    with pytest.raises(Conflict, match="still exists in AWS"):
        services.key_recreate(actor=people.actor(people.bob), key_id=key.pk)

    key.refresh_from_db()
    assert key.kms_key_arn == arn
    refusal = AuditEvent.objects.filter(key_id=key.pk, operation=Operation.RECREATE).get()
    assert (refusal.outcome, refusal.reason) == (Outcome.REFUSED, "kms_key_exists")


def test_a_kms_key_left_by_an_interrupted_attempt_is_adopted_not_duplicated(
    people: Any, key: Key, aws_sandbox: str
) -> None:
    vanish(aws_sandbox, key)
    found_missing(key)
    owner = kms_client(aws_sandbox, key.keystore)
    # As if the last attempt crashed right after CreateKey: a tagged KMS key the row never learnt of.
    leftover = owner.create_key(Origin="EXTERNAL", Tags=[{"TagKey": settings.BYOK_TAG_KEY, "TagValue": str(key.pk)}])
    keys_before = len(owner.list_keys()["Keys"])

    key = services.key_recreate(actor=people.actor(people.bob), key_id=key.pk).key

    assert key.kms_key_arn == leftover["KeyMetadata"]["Arn"]
    assert len(owner.list_keys()["Keys"]) == keys_before
    assert sandbox_view(aws_sandbox, key)["kcv"] == key.kcv


def test_the_way_back_after_the_sandbox_forgot_the_account(people: Any, key: Key, aws_sandbox: str) -> None:
    """As after ``make sandbox-reset``: the role and the KMS key are gone; nothing claims to be in step."""
    vanish(aws_sandbox, key)
    iam = account_admin_iam(aws_sandbox, key.keystore.aws_account_id, key.keystore.region)
    iam.delete_role_policy(RoleName="byok-portal", PolicyName=SANDBOX_ROLE_POLICY_NAME)
    iam.delete_role(RoleName="byok-portal")
    services_actor = Actor.system("reconcile")
    browser = verified_client(people.bob)

    assert reconcile_everything(actor=services_actor).failed_keystores == [str(key.keystore_id)]
    dashboard = browser.get("/").content.decode()
    assert "Every key is in step with KMS" not in dashboard
    assert 'id="unreachable-keystores"' in dashboard

    create_sandbox_role(key.keystore)
    reconcile_everything(actor=services_actor)
    key.refresh_from_db()
    key.keystore.refresh_from_db()
    assert (key.keystore.last_check_ok, key.kms_state) == (True, KmsState.MISSING)
    key = services.key_recreate(actor=people.actor(people.bob), key_id=key.pk).key
    assert sandbox_view(aws_sandbox, key)["kcv"] == key.kcv
    assert "Every key is in step with KMS" in browser.get("/").content.decode()
    reasons = AuditEvent.objects.filter(keystore_id=key.keystore_id, operation=Operation.RECONCILE, key_id=None)
    assert [e.reason for e in reasons.order_by("seq")] == ["connection_failed", "connection_restored"]


@pytest.mark.parametrize(
    ("key_spec", "key_usage"),
    [("HMAC_256", "GENERATE_VERIFY_MAC"), ("RSA_2048", "SIGN_VERIFY"), ("ECC_NIST_P256", "SIGN_VERIFY")],
)
def test_recreate_keeps_the_key_spec_usage_and_material_of_every_kind(
    people: Any, keystore: Any, aws_sandbox: str, key_spec: str, key_usage: str
) -> None:
    """The new KMS key has the key's own spec and usage and takes its material with the spec's wrapping (issue 14)."""
    key = services.key_create(
        actor=people.actor(people.bob),
        keystore_id=keystore.pk,
        name="signer",
        alias="alias/signer",
        key_spec=key_spec,
        key_usage=key_usage,
    ).key
    vanish(aws_sandbox, key)
    old_arn = found_missing(key).kms_key_arn

    key = services.key_recreate(actor=people.actor(people.bob), key_id=key.pk).key

    assert key.kms_key_arn != old_arn
    assert (key.key_spec, key.key_usage, key.state, key.kms_state) == (
        key_spec,
        key_usage,
        KeyState.ACTIVE,
        KmsState.ENABLED,
    )
    view = sandbox_view(aws_sandbox, key)
    assert (view["key_state"], view["key_spec"], view["aliases"]) == ("Enabled", key_spec, ["alias/signer"])
    assert (view["kcv"], view["public_key_sha256"]) == (key.kcv or None, key.public_key_sha256 or None)
    metadata = kms_client(aws_sandbox, keystore).describe_key(KeyId=key.kms_key_arn)["KeyMetadata"]
    assert (metadata["KeySpec"], metadata["KeyUsage"]) == (key_spec, key_usage)
    # Reconciliation finds it in step, public key included.
    reconcile_key(key.pk, actor=Actor.system("reconcile"))
    key.refresh_from_db()
    assert (key.kms_state, key.drift) == (KmsState.ENABLED, [])
