"""An alias is one key's per AWS account *and region*: a multi-Region key's replica never takes another
keystore's alias (review finding, "alias theft"), whichever operation would move it.

Two keystores of one AWS account: A (home eu-west-1) and B (home us-east-1). A multi-Region key of A
with a replica in us-east-1 holds its alias there too, where B's keys hold theirs. Every test looks at
AWS's side (ListAliases / DescribeKey in each region) as well as the portal's answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal.aws import AwsError
from byok_portal.vocabulary import Outcome
from keys import services
from keys.aliases import AliasTaken
from keys.jobs import reconcile
from keys.models import Key, PendingCreation
from keystores.models import Role
from keystores.services import keystore_create, membership_set
from tests.conftest import REGION, create_sandbox_role
from tests.keys.helpers import sandbox_client

pytestmark = pytest.mark.django_db

OTHER = "us-east-1"  # B's home region, and the region of A's replica


@pytest.fixture
def us_keystore(people: Any, keystore: Any) -> Any:
    """Keystore B: the same AWS account as ``keystore`` (A), home region us-east-1; carol is its custodian."""
    account = keystore.aws_account_id
    store = keystore_create(
        actor=people.actor(people.alice),
        name="US",
        aws_account_id=account,
        region=OTHER,
        role_arn=f"arn:aws:iam::{account}:role/byok-portal-us",
    )
    membership_set(actor=people.actor(people.alice), keystore_id=store.pk, user=people.carol, role=Role.CUSTODIAN)
    return create_sandbox_role(store)


def kms(sandbox_url: str, keystore: Any, region: str) -> Any:
    """A boto3 KMS client of the keystore's role in ``region``: how the test looks behind the portal's back."""
    return sandbox_client(sandbox_url, "kms", keystore.role_arn, region, ExternalId=keystore.external_id)


def target_of(client: Any, alias: str) -> str | None:
    """The ARN ``alias`` names in the client's region, per ListAliases + DescribeKey (None: no such alias)."""
    names = {a["AliasName"]: a.get("TargetKeyId") for a in client.list_aliases()["Aliases"]}
    if alias not in names:
        return None
    return str(client.describe_key(KeyId=names[alias])["KeyMetadata"]["Arn"])


def replica_arn(key: Key, region: str) -> str:
    return key.replicas.get(region=region).kms_key_arn


def multi_region_key(people: Any, keystore: Any, alias: str) -> Key:
    return services.key_create(
        actor=people.actor(people.bob),
        keystore_id=keystore.pk,
        name="dr",
        alias=alias,
        multi_region=True,
        replica_regions=[OTHER],
    ).key


def us_key(people: Any, us_keystore: Any, alias: str) -> Key:
    return services.key_create(
        actor=people.actor(people.carol), keystore_id=us_keystore.pk, name="us-orders", alias=alias
    ).key


def key_count(client: Any) -> int:
    return len(client.list_keys()["Keys"])


def test_changing_a_multi_region_keys_alias_to_one_held_in_a_replica_region_is_refused(
    people: Any, keystore: Any, us_keystore: Any, aws_sandbox: str
) -> None:
    k2 = us_key(people, us_keystore, "alias/orders")
    k1 = multi_region_key(people, keystore, "alias/dr")

    with pytest.raises(AliasTaken) as refused:
        services.key_update(actor=people.actor(people.bob), key_id=k1.pk, alias="alias/orders")

    assert refused.value.status == 409
    assert refused.value.as_dict()["code"] == "alias_taken"
    assert refused.value.extra == {"alias": "alias/orders", "region": OTHER, "state": "ACTIVE"}
    assert OTHER in refused.value.detail
    us, eu = kms(aws_sandbox, us_keystore, OTHER), kms(aws_sandbox, keystore, REGION)
    assert target_of(us, "alias/orders") == k2.kms_key_arn  # still B's key, in B's region
    assert target_of(us, "alias/dr") == replica_arn(k1, OTHER)
    assert target_of(eu, "alias/dr") == k1.kms_key_arn
    assert target_of(eu, "alias/orders") is None
    assert Key.objects.get(pk=k1.pk).alias == "alias/dr"
    event = AuditEvent.objects.filter(key_id=k1.pk).latest("seq")
    assert (event.operation, event.outcome, event.reason) == ("update", Outcome.REFUSED, "alias_taken")


def test_an_update_never_moves_an_alias_that_exists_in_aws_on_a_live_key(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    """CreateAlias first: an alias the portal does not know of, on a live portal key, stays where it is."""
    other = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="other").key
    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", alias="alias/k").key
    eu = kms(aws_sandbox, keystore, REGION)
    eu.create_alias(AliasName="alias/by-hand", TargetKeyId=other.kms_key_id)  # made in AWS, not in the portal

    with pytest.raises(AwsError) as failed:
        services.key_update(actor=people.actor(people.bob), key_id=key.pk, alias="alias/by-hand")

    assert failed.value.code == "AlreadyExistsException"
    assert target_of(eu, "alias/by-hand") == other.kms_key_arn
    assert target_of(eu, "alias/k") == key.kms_key_arn
    assert Key.objects.get(pk=key.pk).alias == "alias/k"


def test_creating_a_key_with_an_alias_a_replica_holds_in_its_region_is_refused_before_any_kms_call(
    people: Any, keystore: Any, us_keystore: Any, aws_sandbox: str
) -> None:
    k1 = multi_region_key(people, keystore, "alias/orders")
    us = kms(aws_sandbox, us_keystore, OTHER)
    keys_before = key_count(us)

    with pytest.raises(AliasTaken) as refused:
        us_key(people, us_keystore, "alias/orders")

    assert refused.value.extra == {"alias": "alias/orders", "region": OTHER}
    assert target_of(us, "alias/orders") == replica_arn(k1, OTHER)
    assert key_count(us) == keys_before  # no KMS key made, none to clean up
    assert not Key.objects.filter(keystore=us_keystore).exists()
    assert not PendingCreation.objects.exists()


def test_creating_a_multi_region_key_whose_replica_region_has_the_alias_is_refused_naming_that_region(
    people: Any, keystore: Any, us_keystore: Any, aws_sandbox: str
) -> None:
    k2 = us_key(people, us_keystore, "alias/orders")
    eu = kms(aws_sandbox, keystore, REGION)
    keys_before = key_count(eu)

    with pytest.raises(AliasTaken) as refused:
        multi_region_key(people, keystore, "alias/orders")

    assert refused.value.extra["region"] == OTHER
    assert key_count(eu) == keys_before
    assert target_of(kms(aws_sandbox, us_keystore, OTHER), "alias/orders") == k2.kms_key_arn
    assert target_of(eu, "alias/orders") is None


def test_add_replica_into_a_region_where_another_key_holds_the_alias_is_refused_before_replicatekey(
    people: Any, keystore: Any, us_keystore: Any, aws_sandbox: str
) -> None:
    k2 = us_key(people, us_keystore, "alias/orders")
    k1 = services.key_create(
        actor=people.actor(people.bob),
        keystore_id=keystore.pk,
        name="dr",
        alias="alias/orders",
        multi_region=True,
        replica_regions=["ap-southeast-2"],
    ).key

    with pytest.raises(AliasTaken) as refused:
        services.key_add_replica(actor=people.actor(people.bob), key_id=k1.pk, region=OTHER)

    assert refused.value.extra == {"alias": "alias/orders", "region": OTHER, "state": "ACTIVE"}
    us = kms(aws_sandbox, us_keystore, OTHER)
    with pytest.raises(us.exceptions.NotFoundException):
        us.describe_key(KeyId=k1.kms_key_id)  # no replica was made
    assert target_of(us, "alias/orders") == k2.kms_key_arn
    assert sorted(k1.replicas.values_list("region", flat=True)) == ["ap-southeast-2"]
    event = AuditEvent.objects.filter(key_id=k1.pk).latest("seq")
    assert (event.operation, event.outcome, event.reason) == ("add_replica", Outcome.REFUSED, "alias_taken")


def test_a_renewal_does_not_move_an_alias_another_key_holds_in_a_replica_region(
    people: Any, keystore: Any, us_keystore: Any, aws_sandbox: str
) -> None:
    """A state left by the defect (two keys claiming one alias in us-east-1, AWS pointing at B's):
    renewing A's key must not UpdateAlias B's alias over to the new key."""
    k1 = multi_region_key(people, keystore, "alias/orders")
    k2 = us_key(people, us_keystore, "alias/b")
    us = kms(aws_sandbox, us_keystore, OTHER)
    us.delete_alias(AliasName="alias/b")
    us.update_alias(AliasName="alias/orders", TargetKeyId=k2.kms_key_id)
    Key.objects.filter(pk=k2.pk).update(alias="alias/orders")
    eu = kms(aws_sandbox, keystore, REGION)
    keys_before = key_count(eu)

    with pytest.raises(AliasTaken) as refused:
        services.key_renew(actor=people.actor(people.bob), key_id=k1.pk)

    assert refused.value.extra["region"] == OTHER
    assert target_of(us, "alias/orders") == k2.kms_key_arn
    assert target_of(eu, "alias/orders") == k1.kms_key_arn
    assert key_count(eu) == keys_before  # refused before CreateKey
    assert not Key.objects.filter(replaces=k1).exists()


def test_a_create_never_takes_over_an_alias_on_a_live_keys_replica_the_portal_does_not_know_of(
    people: Any, keystore: Any, us_keystore: Any, aws_sandbox: str
) -> None:
    """The alias points at a portal-tagged KMS key (A's replica), no portal row claims the alias in us-east-1:
    it looks "stranded", but the KMS key is a live key's, so AWS's AlreadyExists stands."""
    k1 = multi_region_key(people, keystore, "alias/dr")
    us = kms(aws_sandbox, us_keystore, OTHER)
    us.create_alias(AliasName="alias/orders", TargetKeyId=k1.kms_key_id)  # by hand, behind the portal's back

    with pytest.raises(AwsError) as failed:
        us_key(people, us_keystore, "alias/orders")

    assert failed.value.code == "AlreadyExistsException"
    assert target_of(us, "alias/orders") == replica_arn(k1, OTHER)
    assert not Key.objects.filter(keystore=us_keystore).exists()


def test_the_same_alias_stays_free_for_keys_in_other_accounts_and_other_regions(
    people: Any, keystore: Any, us_keystore: Any, aws_sandbox: str
) -> None:
    """The rule is per account and region, no wider: a single-Region key of B does not block A's home region."""
    us_key(people, us_keystore, "alias/orders")

    k1 = services.key_create(
        actor=people.actor(people.bob), keystore_id=keystore.pk, name="eu-orders", alias="alias/orders"
    ).key

    assert target_of(kms(aws_sandbox, keystore, REGION), "alias/orders") == k1.kms_key_arn


# --- concurrency --------------------------------------------------------------------------


def _advisory_lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return int(cursor.fetchone()[0])


def _wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_creates_claiming_one_alias_in_one_region_at_once_leave_one_owner_and_a_409(
    people: Any, keystore: Any, us_keystore: Any, aws_sandbox: str, proxy: Any
) -> None:
    """A's multi-Region create (replica in us-east-1) is held just after its CreateKey, past every check;
    B's create of the same alias in us-east-1 starts then. B must not pass on the strength of a check
    made before A commits: it waits for A's claim and is refused with 409, and AWS agrees."""
    if connection.vendor != "postgresql":
        pytest.skip("advisory locks need PostgreSQL (set DATABASE_URL=postgres://...)")
    outcomes: dict[str, Any] = {}

    def create_b() -> None:
        try:
            outcomes["b"] = us_key(people, us_keystore, "alias/orders")
        except Exception as exc:  # the outcome is what the test checks
            outcomes["b"] = exc
        finally:
            connections.close_all()

    b = threading.Thread(target=create_b)

    def start_b_while_a_waits() -> None:
        b.start()
        try:
            # B either finishes (no lock stopped it) or waits on A's alias lock.
            _wait_until(lambda: "b" in outcomes or _advisory_lock_waiters() > 0)
        finally:
            connections.close_all()

    proxy.when_answered("CreateKey", start_b_while_a_waits)
    a = multi_region_key(people, keystore, "alias/orders")
    b.join(timeout=60)

    assert isinstance(outcomes["b"], AliasTaken), outcomes["b"]
    assert outcomes["b"].extra == {"alias": "alias/orders", "region": OTHER}
    assert target_of(kms(aws_sandbox, us_keystore, OTHER), "alias/orders") == replica_arn(a, OTHER)
    assert target_of(kms(aws_sandbox, keystore, REGION), "alias/orders") == a.kms_key_arn
    assert list(Key.objects.filter(alias="alias/orders").values_list("pk", flat=True)) == [a.pk]
    assert key_count(kms(aws_sandbox, us_keystore, OTHER)) == 1  # A's replica; B never called CreateKey


def test_the_home_keystores_kms_sweep_leaves_another_keystores_replica_in_its_region_alone(
    people: Any, keystore: Any, us_keystore: Any, aws_sandbox: str
) -> None:
    """Found alongside the alias defect: B's sweep lists us-east-1, sees A's replica (portal-tagged, not a
    primary of any row) and took it for an orphan, scheduling another team's key for deletion."""
    k1 = multi_region_key(people, keystore, "alias/dr")

    result = reconcile.sweep_untracked_kms_keys(us_keystore.pk, actor=Actor.system("reconcile"))

    assert result.resolved == 0
    us = kms(aws_sandbox, us_keystore, OTHER)
    assert us.describe_key(KeyId=k1.kms_key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert target_of(us, "alias/dr") == replica_arn(k1, OTHER)
