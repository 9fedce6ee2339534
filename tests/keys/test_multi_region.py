"""Multi-Region keys (SPEC §11, issue 16) through the sandbox AWS over boto3: one key, the same material everywhere.

Faults are injected on the wire (:mod:`tests.faultproxy`), in one region at a time.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from html import unescape
from typing import Any

import pytest
import time_machine
from django.conf import settings

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal import aws
from byok_portal.aws import AwsError
from byok_portal.errors import Conflict
from byok_portal.vocabulary import KeyState, KmsState
from keys import services
from keys.jobs import cleanup, reconcile
from keys.models import Key, PendingCreation
from tests.conftest import REGION
from tests.faultproxy import FaultProxy, fault_proxy
from tests.keys.helpers import sandbox_client
from tests.web import verified_client

pytestmark = pytest.mark.django_db

REPLICAS = ["ap-southeast-2", "us-east-1"]
EVERY_REGION = [REGION, *REPLICAS]  # the order operations go through them: the primary, then replicas by region
# A refusal (HTTP 500) that outlasts botocore's retries of it.
STICKY = 10


@pytest.fixture
def proxy(aws_sandbox: str, settings: Any) -> Iterator[FaultProxy]:
    """The portal's AWS endpoint is the fault proxy in front of the sandbox."""
    with fault_proxy(aws_sandbox) as running:
        settings.BYOK_SANDBOX_URL = running.url
        aws.credential_cache.clear()
        yield running
    aws.credential_cache.clear()


def regional(sandbox_url: str, keystore: Any, region: str) -> Any:
    """A boto3 KMS client of the keystore's role in ``region``: how a test looks behind the portal's back."""
    return sandbox_client(sandbox_url, "kms", keystore.role_arn, region, ExternalId=keystore.external_id)


def aws_states(sandbox_url: str, key: Key) -> dict[str, str]:
    """The AWS key state of the key in each of its regions ("gone" where it no longer exists)."""
    states = {}
    for region in EVERY_REGION:
        client = regional(sandbox_url, key.keystore, region)
        try:
            states[region] = client.describe_key(KeyId=key.kms_key_id)["KeyMetadata"]["KeyState"]
        except client.exceptions.NotFoundException:
            states[region] = "gone"
    return states


def replica_states(key: Key) -> dict[str, str]:
    key.refresh_from_db()
    return {REGION: key.kms_state, **{r.region: r.kms_state for r in key.replicas.all()}}


def create(people: Any, keystore: Any, **kwargs: Any) -> Key:
    return services.key_create(
        actor=people.actor(people.bob),
        keystore_id=keystore.pk,
        name="dr",
        alias="alias/dr",
        tags={"team": "payments"},
        multi_region=True,
        replica_regions=REPLICAS,
        **kwargs,
    ).key


def test_a_three_region_key_encrypts_in_one_region_and_decrypts_in_the_others(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    key = create(people, keystore)

    assert key.multi_region is True
    assert key.kms_key_id.startswith("mrk-")
    assert replica_states(key) == dict.fromkeys(EVERY_REGION, KmsState.ENABLED)
    assert {r.region: r.kms_key_arn for r in key.replicas.all()} == {
        region: key.kms_key_arn.replace(f":{REGION}:", f":{region}:") for region in REPLICAS
    }
    ciphertext = regional(aws_sandbox, keystore, "us-east-1").encrypt(KeyId="alias/dr", Plaintext=b"ledger 7")[
        "CiphertextBlob"
    ]
    for region in (REGION, "ap-southeast-2"):
        client = regional(aws_sandbox, keystore, region)
        assert client.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"ledger 7"
        # Tags and alias in every region: aliases and tags are regional in AWS.
        tags = {t["TagKey"]: t["TagValue"] for t in client.list_resource_tags(KeyId=key.kms_key_id)["Tags"]}
        assert tags == {"team": "payments", settings.BYOK_TAG_KEY: str(key.pk)}
        assert [a["AliasName"] for a in client.list_aliases(KeyId=key.kms_key_id)["Aliases"]] == ["alias/dr"]


def test_deactivate_leaves_no_region_holding_material_and_activate_brings_every_region_back(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    key = create(people, keystore)
    bob = people.actor(people.bob)

    services.key_deactivate(actor=bob, key_id=key.pk)

    assert aws_states(aws_sandbox, key) == dict.fromkeys(EVERY_REGION, "PendingImport")
    assert replica_states(key) == dict.fromkeys(EVERY_REGION, KmsState.EMPTY)
    services.key_activate(actor=bob, key_id=key.pk)
    assert aws_states(aws_sandbox, key) == dict.fromkeys(EVERY_REGION, "Enabled")
    assert replica_states(key) == dict.fromkeys(EVERY_REGION, KmsState.ENABLED)


def test_material_deleted_behind_the_portals_back_in_one_replica_is_drift_there_and_upload_repairs_only_it(
    people: Any, keystore: Any, aws_sandbox: str, proxy: FaultProxy
) -> None:
    key = create(people, keystore)
    regional(aws_sandbox, keystore, "us-east-1").delete_imported_key_material(KeyId=key.kms_key_id)

    result = reconcile.reconcile_key(key.pk, actor=Actor.system("reconcile"))

    assert result == reconcile.KeyResult.DRIFT
    key.refresh_from_db()
    replicas = {r.region: r for r in key.replicas.all()}
    assert replicas["us-east-1"].kms_state == KmsState.EMPTY
    assert len(replicas["us-east-1"].drift) == 1
    assert "PendingImport" in replicas["us-east-1"].drift[0]
    assert replicas["ap-southeast-2"].drift == []
    assert key.kms_state == KmsState.ENABLED
    assert [line for line in key.drift if line.startswith("In us-east-1:")] == key.drift
    # The key page and the dashboard say which region is out of step.
    client = verified_client(people.bob)
    page = " ".join(unescape(re.sub(r"<[^>]+>", " ", client.get(f"/keys/{key.pk}/").content.decode())).split())
    assert "us-east-1 No key material" in page
    assert "Out of step: In us-east-1: The KMS key has no key material" in page
    assert "ap-southeast-2 Enabled" in page
    dashboard = unescape(client.get("/").content.decode())
    assert "In us-east-1: The KMS key has no key material" in dashboard
    proxy.regional_calls.clear()

    services.key_upload(actor=people.actor(people.bob), key_id=key.pk)

    imports = [region for operation, region in proxy.regional_calls if operation == "ImportKeyMaterial"]
    assert imports == ["us-east-1"]
    assert aws_states(aws_sandbox, key) == dict.fromkeys(EVERY_REGION, "Enabled")
    key.refresh_from_db()
    assert key.drift == []
    assert all(r.drift == [] and r.kms_state == KmsState.ENABLED for r in key.replicas.all())


@pytest.mark.parametrize("failing_region", REPLICAS)
@pytest.mark.parametrize("operation", ["ReplicateKey", "ImportKeyMaterial"])
def test_a_create_failing_in_one_replica_region_leaves_no_key_and_no_orphan_and_a_retry_succeeds(
    people: Any, keystore: Any, aws_sandbox: str, proxy: FaultProxy, failing_region: str, operation: str
) -> None:
    if operation == "ReplicateKey":
        # Called in the primary's region, once per replica in order: let the ones before failing_region's through.
        proxy.inject(operation, "refuse", region=REGION, skip=REPLICAS.index(failing_region), times=STICKY)
    else:
        proxy.inject(operation, "refuse", region=failing_region, times=STICKY)

    with pytest.raises(AwsError) as failed:
        create(people, keystore)

    assert failed.value.code == "KMSInternalException"
    assert not Key.objects.exists()
    assert not PendingCreation.objects.exists()
    # Every regional KMS key the attempt made is on its way out: replicas, then the primary waiting for them.
    for key_arn in _tagged_keys(aws_sandbox, keystore):
        assert key_arn[1] in ("PendingDeletion", "PendingReplicaDeletion"), key_arn
    event = AuditEvent.objects.get(operation="create", outcome="failed")
    assert event.details["replica_regions"] == REPLICAS
    proxy.faults.clear()

    key = create(people, keystore)

    assert replica_states(key) == dict.fromkeys(EVERY_REGION, KmsState.ENABLED)


def _tagged_keys(sandbox_url: str, keystore: Any) -> list[tuple[str, str]]:
    """(ARN, AWS state) of every portal-tagged KMS key in the keystore's account, in every region."""
    found = []
    for region in EVERY_REGION:
        client = regional(sandbox_url, keystore, region)
        for entry in client.list_keys()["Keys"]:
            tags = {t["TagKey"] for t in client.list_resource_tags(KeyId=entry["KeyId"])["Tags"]}
            if settings.BYOK_TAG_KEY in tags:
                found.append((entry["KeyArn"], client.describe_key(KeyId=entry["KeyId"])["KeyMetadata"]["KeyState"]))
    return found


@pytest.mark.parametrize("failing_region", EVERY_REGION)
def test_an_activate_failing_in_one_region_records_each_regions_state_and_a_retry_converges(
    people: Any, keystore: Any, aws_sandbox: str, proxy: FaultProxy, failing_region: str
) -> None:
    key = create(people, keystore)
    bob = people.actor(people.bob)
    services.key_deactivate(actor=bob, key_id=key.pk)
    proxy.inject("ImportKeyMaterial", "refuse", region=failing_region, times=STICKY)

    with pytest.raises(AwsError):
        services.key_activate(actor=bob, key_id=key.pk)

    key.refresh_from_db()
    assert key.state == KeyState.INACTIVE
    # The primary first, then the replicas by region: those before the failing one are done, the rest untouched.
    done = EVERY_REGION[: EVERY_REGION.index(failing_region)]
    expected = {region: KmsState.ENABLED if region in done else KmsState.EMPTY for region in EVERY_REGION}
    assert replica_states(key) == {**expected, failing_region: KmsState.UNKNOWN}
    assert aws_states(aws_sandbox, key) == {
        region: "Enabled" if region in done else "PendingImport" for region in EVERY_REGION
    }
    event = AuditEvent.objects.get(operation="activate", outcome="failed")
    assert event.details == {"failed_region": failing_region, "regions_done": sorted(done)}
    assert failing_region in event.error
    proxy.faults.clear()

    services.key_activate(actor=bob, key_id=key.pk)

    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE
    assert replica_states(key) == dict.fromkeys(EVERY_REGION, KmsState.ENABLED)
    assert aws_states(aws_sandbox, key) == dict.fromkeys(EVERY_REGION, "Enabled")


@pytest.mark.parametrize("failing_region", [*REPLICAS, REGION])
def test_schedule_deletion_refused_in_one_region_records_each_regions_state_and_a_retry_converges(
    people: Any, keystore: Any, aws_sandbox: str, proxy: FaultProxy, failing_region: str
) -> None:
    key = create(people, keystore)
    bob = people.actor(people.bob)
    proxy.inject("ScheduleKeyDeletion", "refuse", region=failing_region, times=STICKY)

    with pytest.raises(AwsError):
        services.key_schedule_deletion(actor=bob, key_id=key.pk, pending_window_days=7)

    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE
    # Replicas go first, in region order: those before the failing one are scheduled, the rest untouched.
    order = [*REPLICAS, REGION]
    before = order[: order.index(failing_region)]
    expected_portal = {
        region: KmsState.PENDING_DELETION if region in before else KmsState.ENABLED for region in EVERY_REGION
    }
    expected_portal[failing_region] = KmsState.UNKNOWN
    assert replica_states(key) == expected_portal
    assert aws_states(aws_sandbox, key) == {
        region: "PendingDeletion" if region in before else "Enabled" for region in EVERY_REGION
    }
    proxy.faults.clear()

    services.key_schedule_deletion(actor=bob, key_id=key.pk, pending_window_days=7)

    key.refresh_from_db()
    assert key.state == KeyState.PENDING_DELETION
    assert replica_states(key) == dict.fromkeys(EVERY_REGION, KmsState.PENDING_DELETION)
    assert aws_states(aws_sandbox, key) == {
        REGION: "PendingReplicaDeletion",
        "ap-southeast-2": "PendingDeletion",
        "us-east-1": "PendingDeletion",
    }


@pytest.mark.parametrize("failing_region", [*REPLICAS, REGION])
def test_a_lost_schedule_deletion_answer_in_any_region_converges_at_once(
    people: Any, keystore: Any, aws_sandbox: str, proxy: FaultProxy, failing_region: str
) -> None:
    key = create(people, keystore)
    proxy.inject("ScheduleKeyDeletion", "lose", region=failing_region)  # AWS acts; botocore retries the lost answer

    services.key_schedule_deletion(actor=people.actor(people.bob), key_id=key.pk, pending_window_days=7)

    assert proxy.injected == ["ScheduleKeyDeletion:lose"]
    assert replica_states(key) == dict.fromkeys(EVERY_REGION, KmsState.PENDING_DELETION)
    assert aws_states(aws_sandbox, key)[failing_region] in ("PendingDeletion", "PendingReplicaDeletion")


def test_schedule_deletion_does_replicas_first_and_cleanup_waits_for_every_region(
    people: Any, keystore: Any, aws_sandbox: str, proxy: FaultProxy
) -> None:
    key = create(people, keystore)
    start = dt.datetime.now(dt.UTC)

    services.key_schedule_deletion(actor=people.actor(people.bob), key_id=key.pk, pending_window_days=7)

    scheduled = [region for operation, region in proxy.regional_calls if operation == "ScheduleKeyDeletion"]
    assert scheduled == [*REPLICAS, REGION]
    key.refresh_from_db()
    replica_dates = [r.deletion_date for r in key.replicas.all()]
    assert all(replica_dates)
    assert key.deletion_date == max(d for d in replica_dates if d) + dt.timedelta(days=7)
    system = Actor.system("cleanup")
    with time_machine.travel(start + dt.timedelta(days=8), tick=False):
        # The replicas are gone; the primary's own window has only started.
        assert aws_states(aws_sandbox, key) == {REGION: "PendingDeletion", **dict.fromkeys(REPLICAS, "gone")}
        with pytest.raises(Conflict) as early:
            services.key_cleanup(actor=system, key_id=key.pk, now=key.deletion_date + dt.timedelta(seconds=1))
        assert early.value.extra["regions"] == [REGION]
    with time_machine.travel(start + dt.timedelta(days=15), tick=False):
        assert aws_states(aws_sandbox, key) == dict.fromkeys(EVERY_REGION, "gone")
        assert cleanup.cleanup_due_keys(actor=system).cleaned == 1
    key.refresh_from_db()
    assert key.state == KeyState.DELETED
    assert not key.materials.exclude(material_sealed=None).exists()


def test_cancel_deletion_brings_every_region_back_without_material(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    key = create(people, keystore)
    bob = people.actor(people.bob)
    services.key_schedule_deletion(actor=bob, key_id=key.pk, pending_window_days=7)

    services.key_cancel_deletion(actor=bob, key_id=key.pk)

    key.refresh_from_db()
    assert key.state == KeyState.INACTIVE
    assert key.deletion_date is None
    assert all(r.deletion_date is None for r in key.replicas.all())
    assert aws_states(aws_sandbox, key) == dict.fromkeys(EVERY_REGION, "PendingImport")


def test_update_applies_tags_and_alias_in_every_region(people: Any, keystore: Any, aws_sandbox: str) -> None:
    key = create(people, keystore)

    services.key_update(actor=people.actor(people.bob), key_id=key.pk, tags={"team": "risk"}, alias="alias/dr2")

    for region in EVERY_REGION:
        client = regional(aws_sandbox, keystore, region)
        tags = {t["TagKey"]: t["TagValue"] for t in client.list_resource_tags(KeyId=key.kms_key_id)["Tags"]}
        assert tags == {"team": "risk", settings.BYOK_TAG_KEY: str(key.pk)}
        assert [a["AliasName"] for a in client.list_aliases(KeyId=key.kms_key_id)["Aliases"]] == ["alias/dr2"]


def test_renew_makes_a_new_multi_region_key_in_the_same_regions_and_moves_the_alias_in_each(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    old = create(people, keystore)

    new = services.key_renew(actor=people.actor(people.bob), key_id=old.pk).key

    assert new.multi_region is True
    assert sorted(r.region for r in new.replicas.all()) == REPLICAS
    for region in EVERY_REGION:
        client = regional(aws_sandbox, keystore, region)
        assert client.describe_key(KeyId="alias/dr")["KeyMetadata"]["KeyId"] == new.kms_key_id
        assert client.describe_key(KeyId=old.kms_key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert aws_states(aws_sandbox, new) == dict.fromkeys(EVERY_REGION, "Enabled")


def test_add_replica_replicates_to_one_more_region_with_the_same_material(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    key = create(people, keystore)

    services.key_add_replica(actor=people.actor(people.bob), key_id=key.pk, region="ca-central-1")

    key.refresh_from_db()
    assert sorted(r.region for r in key.replicas.all()) == sorted([*REPLICAS, "ca-central-1"])
    ciphertext = regional(aws_sandbox, keystore, REGION).encrypt(KeyId=key.kms_key_id, Plaintext=b"x")["CiphertextBlob"]
    client = regional(aws_sandbox, keystore, "ca-central-1")
    assert client.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"x"
    assert [a["AliasName"] for a in client.list_aliases(KeyId=key.kms_key_id)["Aliases"]] == ["alias/dr"]


def test_an_add_replica_interrupted_after_replicatekey_is_adopted_by_the_retry(
    people: Any, keystore: Any, aws_sandbox: str, proxy: FaultProxy
) -> None:
    key = create(people, keystore)
    bob = people.actor(people.bob)
    proxy.inject("ImportKeyMaterial", "refuse", region="ca-central-1", times=STICKY)

    with pytest.raises(AwsError):
        services.key_add_replica(actor=bob, key_id=key.pk, region="ca-central-1")

    assert not key.replicas.filter(region="ca-central-1").exists()
    reconcile.reconcile_key(key.pk, actor=Actor.system("reconcile"))
    key.refresh_from_db()
    assert any("ca-central-1" in line for line in key.drift)  # AWS has a replica the portal does not know of
    proxy.faults.clear()

    services.key_add_replica(actor=bob, key_id=key.pk, region="ca-central-1")

    assert key.replicas.get(region="ca-central-1").kms_state == KmsState.ENABLED
    assert aws_states(aws_sandbox, key)[REGION] == "Enabled"
    assert (
        regional(aws_sandbox, keystore, "ca-central-1").describe_key(KeyId=key.kms_key_id)["KeyMetadata"]["KeyState"]
        == "Enabled"
    )


def test_the_pages_create_a_multi_region_key_and_add_a_replica_checking_the_region(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    client = verified_client(people.bob)
    created = client.post(
        "/keys/new/",
        {"keystore": str(keystore.pk), "name": "dr", "multi_region": "on", "replica_regions": "us-east-1"},
    )
    assert created.status_code == 302, created.content.decode()[:2000]
    key = Key.objects.get(name="dr")
    assert (key.multi_region, [r.region for r in key.replicas.all()]) == (True, ["us-east-1"])
    page = client.get(f"/keys/{key.pk}/").content.decode()
    assert f'action="/keys/{key.pk}/add-replica/"' in page

    refused = client.post(f"/keys/{key.pk}/add-replica/", {"region": REGION})

    assert refused.status_code == 400
    assert "the keystore&#x27;s own region" in refused.content.decode()
    added = client.post(f"/keys/{key.pk}/add-replica/", {"region": "ca-central-1"})
    assert added.status_code == 302
    assert sorted(r.region for r in key.replicas.all()) == ["ca-central-1", "us-east-1"]


def test_rotate_puts_the_new_material_in_every_region_and_old_ciphertexts_still_decrypt_everywhere(
    people: Any, keystore: Any, aws_sandbox: str, proxy: FaultProxy
) -> None:
    key = create(people, keystore)
    bob = people.actor(people.bob)
    before = regional(aws_sandbox, keystore, "us-east-1").encrypt(KeyId=key.kms_key_id, Plaintext=b"old")[
        "CiphertextBlob"
    ]
    proxy.inject("ImportKeyMaterial", "refuse", region="us-east-1", times=STICKY)

    with pytest.raises(AwsError):  # the replica in us-east-1 refuses the new material: no rotation yet
        services.key_rotate(actor=bob, key_id=key.pk)

    assert "RotateKeyOnDemand" not in proxy.calls
    key.refresh_from_db()
    assert (key.state, key.rotations) == (KeyState.ACTIVE, 0)
    proxy.faults.clear()

    services.key_rotate(actor=bob, key_id=key.pk)  # the retry goes on with the staged material

    key.refresh_from_db()
    assert (key.rotations, key.material_version) == (1, 2)
    current = {
        region: regional(aws_sandbox, keystore, region).describe_key(KeyId=key.kms_key_id)["KeyMetadata"][
            "CurrentKeyMaterialId"
        ]
        for region in EVERY_REGION
    }
    assert set(current.values()) == {key.materials.get(version=2).kms_key_material_id}
    after = regional(aws_sandbox, keystore, REGION).encrypt(KeyId=key.kms_key_id, Plaintext=b"new")["CiphertextBlob"]
    for region in EVERY_REGION:
        client = regional(aws_sandbox, keystore, region)
        assert client.decrypt(CiphertextBlob=before)["Plaintext"] == b"old"
        assert client.decrypt(CiphertextBlob=after)["Plaintext"] == b"new"
