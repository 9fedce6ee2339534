"""Issue 12 items 2 and 3: AWS acted, its answer was lost, botocore retried — through a fault proxy on the wire.

The portal runs unchanged against the sandbox AWS; the proxy in front of it
(:mod:`tests.faultproxy`) forwards a call and drops the answer, so botocore's
own retry runs exactly as it would after a lost response on the internet.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal import aws
from byok_portal.vocabulary import KeyState
from keys import services
from keys.jobs import reconcile
from keys.models import Key
from tests.faultproxy import FaultProxy
from tests.keys.helpers import kms_client, live_portal_kms_keys, sandbox_view

pytestmark = pytest.mark.django_db


def owned_arns(keystore: Any) -> set[str]:
    return set(
        Key.objects.filter(keystore=keystore)
        .exclude(state__in=[KeyState.PENDING_DELETION, KeyState.DELETED])
        .values_list("kms_key_arn", flat=True)
    )


def reconcile_now() -> None:
    reconcile.reconcile_everything(actor=Actor.system("reconcile"))


def test_a_lost_createkey_answer_on_create_leaves_an_orphan_that_reconciliation_scans_for_and_removes(
    proxy: FaultProxy, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    proxy.inject("CreateKey", "lose")
    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", alias="alias/k").key
    assert proxy.injected == ["CreateKey:lose"]
    assert proxy.calls.count("CreateKey") == 2  # botocore's retry made a second KMS key
    live = live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY)
    (orphan,) = live - {key.kms_key_arn}

    reconcile_now()

    assert live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY) == owned_arns(keystore)
    assert sandbox_view(aws_sandbox, key)["key_state"] == "Enabled"  # the kept key is untouched
    event = AuditEvent.objects.get(operation="reconcile", reason="orphan_removed", keystore_id=keystore.pk)
    assert (event.details["kms_key"], event.details["tagged_key_id"]) == (orphan, str(key.pk))
    assert event.details["scheduled_for_deletion"] is True
    reconcile_now()  # a second run finds nothing more to do and says nothing
    assert AuditEvent.objects.filter(operation="reconcile", reason="orphan_removed").count() == 1


def test_a_lost_createkey_answer_on_renew_leaves_an_orphan_that_reconciliation_removes(
    proxy: FaultProxy, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k", alias="alias/k").key
    proxy.inject("CreateKey", "lose")
    new = services.key_renew(actor=bob, key_id=key.pk).key
    assert proxy.injected == ["CreateKey:lose"]
    assert len(live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY)) == 3

    reconcile_now()

    assert live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY) == owned_arns(keystore)
    assert sandbox_view(aws_sandbox, new)["aliases"] == ["alias/k"]
    event = AuditEvent.objects.get(operation="reconcile", reason="orphan_removed")
    assert event.details["tagged_key_id"] == str(new.pk)
    assert AuditEvent.objects.get(operation="renew", outcome="success").details["create_retried"] is True


def test_a_key_still_being_created_is_not_taken_for_an_orphan(
    people: Any, keystore: Any, aws_sandbox: str, settings: Any
) -> None:
    """A tagged KMS key whose creation journal still exists belongs to a creation in progress."""
    from keys.models import PendingCreation

    journal = PendingCreation.objects.create(
        key_id="0f0e0d0c-0b0a-4000-8000-0000000000aa", keystore=keystore, operation="create"
    )
    arn = aws.kms_for(keystore).create_external_key(
        description="in progress", tags={settings.BYOK_TAG_KEY: str(journal.key_id)}
    )
    assert reconcile.sweep_untracked_kms_keys(keystore.pk, actor=Actor.system("reconcile")).resolved == 0
    assert arn in live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY)


def test_a_customers_own_key_without_the_portal_tag_is_never_touched(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    client = kms_client(aws_sandbox, keystore)
    theirs = client.create_key(Tags=[{"TagKey": "team", "TagValue": "payments"}])["KeyMetadata"]["KeyId"]
    client.create_alias(AliasName="alias/theirs", TargetKeyId=theirs)
    reconcile_now()
    assert client.describe_key(KeyId=theirs)["KeyMetadata"]["KeyState"] == "Enabled"
    assert not AuditEvent.objects.filter(reason="orphan_removed").exists()


def test_a_lost_createalias_answer_keeps_the_alias_the_portal_just_made(
    proxy: FaultProxy, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    proxy.inject("CreateAlias", "lose")
    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", alias="alias/app").key
    assert proxy.injected == ["CreateAlias:lose"]
    assert sandbox_view(aws_sandbox, key)["aliases"] == ["alias/app"]
    assert live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY) == {key.kms_key_arn}


def _strand_alias(aws_sandbox: str, keystore: Any, alias: str) -> str:
    """What the old code left behind: an alias on a portal-made KMS key that was then scheduled for deletion."""
    client = kms_client(aws_sandbox, keystore)
    dead = client.create_key(
        Origin="EXTERNAL", Tags=[{"TagKey": settings.BYOK_TAG_KEY, "TagValue": "0f0e0d0c-0b0a-4000-8000-0000000000bb"}]
    )["KeyMetadata"]
    client.create_alias(AliasName=alias, TargetKeyId=dead["KeyId"])
    client.schedule_key_deletion(KeyId=dead["KeyId"], PendingWindowInDays=7)
    return str(dead["Arn"])


def test_an_alias_stranded_on_a_portal_key_pending_deletion_is_repointed_by_the_next_create(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    _strand_alias(aws_sandbox, keystore, "alias/app")
    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", alias="alias/app").key
    assert sandbox_view(aws_sandbox, key)["aliases"] == ["alias/app"]


def test_reconciliation_deletes_an_alias_stranded_on_an_orphan(people: Any, keystore: Any, aws_sandbox: str) -> None:
    dead = _strand_alias(aws_sandbox, keystore, "alias/app")
    reconcile_now()
    client = kms_client(aws_sandbox, keystore)
    assert "alias/app" not in [a["AliasName"] for a in client.list_aliases()["Aliases"]]
    event = AuditEvent.objects.get(operation="reconcile", reason="orphan_removed")
    assert (event.details["kms_key"], event.details["aliases_deleted"]) == (dead, ["alias/app"])
    assert event.details["scheduled_for_deletion"] is False  # it already was


def test_a_foreign_alias_is_never_taken(people: Any, keystore: Any, aws_sandbox: str) -> None:
    from byok_portal.aws import AwsError

    client = kms_client(aws_sandbox, keystore)
    theirs = client.create_key()["KeyMetadata"]["KeyId"]
    client.create_alias(AliasName="alias/app", TargetKeyId=theirs)
    with pytest.raises(AwsError) as refused:
        services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", alias="alias/app")
    assert refused.value.code == "AlreadyExistsException"
    assert client.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"] == theirs
    assert live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY) == set()


def test_a_foreign_alias_on_a_key_the_role_may_not_see_is_left_alone(
    proxy: FaultProxy, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    """Least privilege: DescribeKey on someone else's key is AccessDenied. The alias is still not the portal's."""
    from byok_portal.aws import AwsError

    client = kms_client(aws_sandbox, keystore)
    theirs = client.create_key()["KeyMetadata"]["KeyId"]
    client.create_alias(AliasName="alias/app", TargetKeyId=theirs)
    proxy.inject("DescribeKey", "deny")
    with pytest.raises(AwsError) as refused:
        services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", alias="alias/app")
    assert refused.value.code == "AlreadyExistsException"
    assert proxy.injected == ["DescribeKey:deny"]
    assert client.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"] == theirs


def test_a_retried_createkey_has_its_duplicate_removed_as_soon_as_the_create_commits(
    proxy: FaultProxy,
    people: Any,
    keystore: Any,
    aws_sandbox: str,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not an hour later: the create sees botocore retried its CreateKey and has the keystore scanned on commit."""
    from byok_portal.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)  # the scan task runs here instead of in a worker
    proxy.inject("CreateKey", "lose")
    with django_capture_on_commit_callbacks(execute=True):
        key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k").key

    assert live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY) == {key.kms_key_arn}
    created = AuditEvent.objects.get(operation="create", outcome="success")
    assert created.details == {"key_spec": "SYMMETRIC_DEFAULT", "key_usage": "ENCRYPT_DECRYPT", "create_retried": True}
    assert AuditEvent.objects.get(operation="reconcile", reason="orphan_removed").details["tagged_key_id"] == str(
        key.pk
    )


def test_reconciliation_moves_an_alias_back_from_an_orphan_to_the_live_key_that_owns_it(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    """A renew that died after UpdateAlias and before its commit: the alias names the new, unowned KMS key."""
    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", alias="alias/app").key
    client = kms_client(aws_sandbox, keystore)
    orphan = client.create_key(
        Origin="EXTERNAL", Tags=[{"TagKey": settings.BYOK_TAG_KEY, "TagValue": "0f0e0d0c-0b0a-4000-8000-0000000000dd"}]
    )["KeyMetadata"]
    client.update_alias(AliasName="alias/app", TargetKeyId=orphan["KeyId"])

    reconcile_now()

    assert sandbox_view(aws_sandbox, key)["aliases"] == ["alias/app"]
    event = AuditEvent.objects.get(operation="reconcile", reason="orphan_removed")
    assert (event.details["kms_key"], event.details["aliases_repointed"]) == (orphan["Arn"], ["alias/app"])
    assert live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY) == {key.kms_key_arn}
    key.refresh_from_db()
    assert key.drift == []  # repaired before the keys were compared with KMS
