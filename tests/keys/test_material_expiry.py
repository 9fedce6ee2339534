"""Material expiry (SPEC §10, ``material_valid_days``) against the sandbox AWS, read back through boto3.

A key with ``material_valid_days`` has each material imported with
``ExpirationModel=KEY_MATERIAL_EXPIRES`` and ``ValidTo`` that many days ahead. AWS deletes a
material at its ValidTo, and a key missing any permanently associated material is
``PendingImport``: the hourly re-import (``keys.jobs.reimport``) imports every material of a
key again, in every region, before that. Time moves with time-machine, for the portal and
the sandbox alike (both run in this process).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from audit.models import AuditEvent
from byok_portal.aws import AwsError
from byok_portal.vocabulary import KeyState, Operation
from keys import custody, services
from keys.jobs import reconcile
from keys.jobs.reimport import due_for_reimport, reimport_expiring_materials
from keys.lifecycle import reimport_due
from keys.models import Key, KeyMaterial, MaterialState
from tests.keys.helpers import current_material, kms_client, sandbox_view
from tests.keys.test_fault_injection import kms_calls

pytestmark = pytest.mark.django_db
SYSTEM = services.Actor.system("test")
DAYS = 30
REPLICA = "us-east-1"


@pytest.fixture(autouse=True)
def _fast_wrapping_keys(settings: Any) -> None:
    settings.BYOK_IMPORT_WRAPPING_KEY_SPEC = "RSA_2048"
    settings.BYOK_REIMPORT_MARGIN_DAYS = 3


class Clock:
    """Moves the portal's and the sandbox's time forward, frozen from the first move on.

    Real time runs until then: a multi-Region key's replica is made while AWS's time passes.
    """

    def __init__(self) -> None:
        self._travel: Any = None
        self._traveller: Any = None

    def shift(self, delta: dt.timedelta) -> None:
        if self._traveller is None:
            self._travel = time_machine.travel(timezone.now(), tick=False)
            self._traveller = self._travel.start()
        self._traveller.shift(delta)

    def stop(self) -> None:
        if self._travel is not None:
            self._travel.stop()


@pytest.fixture
def clock() -> Iterator[Clock]:
    moving = Clock()
    yield moving
    moving.stop()


def later(clock: Clock, **delta: float) -> dt.datetime:
    clock.shift(dt.timedelta(**delta))
    return timezone.now()


def close(a: dt.datetime | None, b: dt.datetime | None) -> bool:
    """Two moments within seconds of each other (a missing one is close to nothing)."""
    return a is not None and b is not None and abs(a - b) < dt.timedelta(seconds=5)


def aws_expiries(client: Any, key: Key) -> list[tuple[str, str, dt.datetime | None]]:
    """(KeyMaterialId, ExpirationModel, ValidTo) of every material, as ListKeyRotations reports them."""
    rotations = client.list_key_rotations(KeyId=key.kms_key_arn, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    return [(r["KeyMaterialId"], r.get("ExpirationModel", ""), r.get("ValidTo")) for r in rotations]


def stored_expiries(key: Key) -> list[dt.datetime | None]:
    return list(KeyMaterial.objects.filter(key=key).order_by("version").values_list("valid_to", flat=True))


def test_material_is_imported_expiring_when_the_key_says_so_and_the_portal_knows_when(
    people: Any, keystore: Any, aws_sandbox: str, clock: Any
) -> None:
    bob = people.actor(people.bob)
    keystore.material_valid_days = DAYS
    keystore.save()
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k").key
    plain = services.key_create(actor=bob, keystore_id=keystore.pk, name="p", material_valid_days=None).key
    client = kms_client(aws_sandbox, keystore)
    expected = timezone.now() + dt.timedelta(days=DAYS)

    assert key.material_valid_days == DAYS  # the keystore's default
    meta = client.describe_key(KeyId=key.kms_key_arn)["KeyMetadata"]
    assert meta["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert close(meta["ValidTo"], expected)
    [(_material_id, model, valid_to)] = aws_expiries(client, key)
    assert (model, close(valid_to, expected)) == ("KEY_MATERIAL_EXPIRES", True)
    [stored] = stored_expiries(key)
    assert stored is not None
    assert close(stored, expected)

    # A rotation's new material expires too, DAYS after its own import.
    rotated_at = later(clock, days=10)
    services.key_rotate(actor=bob, key_id=key.pk)
    expiries = aws_expiries(client, key)
    assert [model for _, model, _ in expiries] == ["KEY_MATERIAL_EXPIRES", "KEY_MATERIAL_EXPIRES"]
    assert close(expiries[0][2], expected)
    assert close(expiries[1][2], rotated_at + dt.timedelta(days=DAYS))
    assert [close(a, b[2]) for a, b in zip(stored_expiries(key), expiries, strict=True)] == [True, True]

    assert client.describe_key(KeyId=plain.kms_key_arn)["KeyMetadata"]["ExpirationModel"] == (
        "KEY_MATERIAL_DOES_NOT_EXPIRE"
    )
    assert stored_expiries(plain) == [None]


def test_the_reimport_job_renews_every_materials_expiry_before_aws_deletes_it(
    people: Any, keystore: Any, aws_sandbox: str, clock: Any
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k", material_valid_days=DAYS).key
    later(clock, days=5)
    services.key_rotate(actor=bob, key_id=key.pk)
    calm = services.key_create(actor=bob, keystore_id=keystore.pk, name="calm", material_valid_days=DAYS + 10).key
    client = kms_client(aws_sandbox, keystore)
    app_ciphertext = client.encrypt(KeyId=key.kms_key_arn, Plaintext=b"July")["CiphertextBlob"]

    # Four days later nothing is within the 3-day margin yet.
    later(clock, days=DAYS - 5 - 4)
    assert due_for_reimport(timezone.now()) == []
    now = later(clock, days=2)  # version 1 expires in 2 days: due; version 2 and the calm key are not
    assert due_for_reimport(now) == [key.pk]

    summary = reimport_expiring_materials(actor=SYSTEM, pace_seconds=0)

    assert (summary.reimported, summary.failed, summary.skipped) == (1, 0, 0)
    renewed = now + dt.timedelta(days=DAYS)
    expiries = aws_expiries(client, key)
    assert [(model, close(valid_to, renewed)) for _, model, valid_to in expiries] == [
        ("KEY_MATERIAL_EXPIRES", True),
        ("KEY_MATERIAL_EXPIRES", True),  # every material, not only the one that was near
    ]
    assert all(v is not None and close(v, renewed) for v in stored_expiries(key))
    event = AuditEvent.objects.filter(key_id=key.pk, operation=Operation.REIMPORT).get()
    assert (event.outcome, event.actor_sub, event.details["versions"]) == ("success", "test", [1, 2])
    assert close(dt.datetime.fromisoformat(event.details["valid_to"]), renewed)
    assert len(event.kms_request_ids) == 4  # GetParametersForImport + ImportKeyMaterial per version
    assert not AuditEvent.objects.filter(key_id=calm.pk, operation=Operation.REIMPORT).exists()
    # A second run (a redelivered task) finds nothing due.
    assert reimport_expiring_materials(actor=SYSTEM, pace_seconds=0).reimported == 0

    # Past the first expiry date the key still works: nothing expired.
    later(clock, days=DAYS - 1)
    assert sandbox_view(aws_sandbox, key)["key_state"] == "Enabled"
    assert client.decrypt(CiphertextBlob=app_ciphertext)["Plaintext"] == b"July"


def test_an_expired_material_stops_the_key_reconciliation_names_it_and_the_reimport_restores_it(
    people: Any, keystore: Any, aws_sandbox: str, clock: Any
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k", material_valid_days=DAYS).key
    client = kms_client(aws_sandbox, keystore)
    under_v1 = client.encrypt(KeyId=key.kms_key_arn, Plaintext=b"January")["CiphertextBlob"]
    later(clock, days=10)
    services.key_rotate(actor=bob, key_id=key.pk)

    # The re-import never ran (workers down): AWS deletes version 1 at its ValidTo, version 2 stays.
    later(clock, days=DAYS - 10, hours=1)
    assert [(m["state"], m["imported"]) for m in sandbox_view(aws_sandbox, key)["materials"]] == [
        ("NON_CURRENT", False),
        ("CURRENT", True),
    ]
    assert client.describe_key(KeyId=key.kms_key_arn)["KeyMetadata"]["KeyState"] == "PendingImport"
    with pytest.raises(client.exceptions.KMSInvalidStateException):
        client.encrypt(KeyId=key.kms_key_arn, Plaintext=b"x")

    assert reconcile.reconcile_key(key.pk, actor=SYSTEM) == reconcile.KeyResult.DRIFT
    key.refresh_from_db()
    drift = AuditEvent.objects.filter(key_id=key.pk, operation=Operation.RECONCILE).latest("seq")
    assert reconcile.MATERIAL_EXPIRED in drift.details["codes"]
    assert any("version 1" in line and "expired" in line for line in key.drift)

    summary = reimport_expiring_materials(actor=SYSTEM, pace_seconds=0)

    assert summary.reimported == 1
    key.refresh_from_db()
    assert key.kms_state == "ENABLED"  # seen at once, not at the next reconciliation
    assert client.describe_key(KeyId=key.kms_key_arn)["KeyMetadata"]["KeyState"] == "Enabled"
    assert client.decrypt(CiphertextBlob=under_v1)["Plaintext"] == b"January"
    assert reconcile.reconcile_key(key.pk, actor=SYSTEM) == reconcile.KeyResult.IN_STEP


def test_an_hmac_keys_one_material_is_reimported_and_its_expiry_named_by_reconciliation(
    people: Any, keystore: Any, aws_sandbox: str, clock: Any
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(
        actor=bob, keystore_id=keystore.pk, name="mac", key_spec="HMAC_256", material_valid_days=2
    ).key
    # Valid for 2 days: re-imported at half its validity, not at every run within the 3-day margin.
    assert due_for_reimport(later(clock, hours=12)) == []
    now = later(clock, hours=13)
    assert reimport_expiring_materials(actor=SYSTEM, pace_seconds=0).reimported == 1
    view = sandbox_view(aws_sandbox, key)
    assert view["expiration_model"] == "KEY_MATERIAL_EXPIRES"
    assert close(dt.datetime.fromisoformat(view["valid_to"]), now + dt.timedelta(days=2))

    later(clock, days=3)  # expired
    assert sandbox_view(aws_sandbox, key)["key_state"] == "PendingImport"
    assert reconcile.reconcile_key(key.pk, actor=SYSTEM) == reconcile.KeyResult.DRIFT
    key.refresh_from_db()
    assert any("expired in AWS" in line for line in key.drift)
    assert reimport_expiring_materials(actor=SYSTEM, pace_seconds=0).reimported == 1
    assert sandbox_view(aws_sandbox, key)["key_state"] == "Enabled"


def test_a_multi_region_keys_material_is_reimported_in_every_region(
    people: Any, keystore: Any, aws_sandbox: str, clock: Any
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(
        actor=bob,
        keystore_id=keystore.pk,
        name="mrk",
        multi_region=True,
        replica_regions=[REPLICA],
        material_valid_days=DAYS,
    ).key
    for region in ("", REPLICA):
        assert sandbox_view(aws_sandbox, key, region)["expiration_model"] == "KEY_MATERIAL_EXPIRES"

    now = later(clock, days=DAYS - 1)
    assert reimport_expiring_materials(actor=SYSTEM, pace_seconds=0).reimported == 1

    for region in ("", REPLICA):
        view = sandbox_view(aws_sandbox, key, region)
        assert view["key_state"] == "Enabled"
        assert close(dt.datetime.fromisoformat(view["valid_to"]), now + dt.timedelta(days=DAYS)), region
    event = AuditEvent.objects.filter(key_id=key.pk, operation=Operation.REIMPORT).get()
    assert event.details["regions"] == sorted([keystore.region, REPLICA])
    later(clock, days=2)  # past the first ValidTo: both regions still work
    assert {sandbox_view(aws_sandbox, key, r)["key_state"] for r in ("", REPLICA)} == {"Enabled"}


def test_a_changed_policy_reaches_kms_at_the_next_run(people: Any, keystore: Any, aws_sandbox: str, clock: Any) -> None:
    bob = people.actor(people.bob)
    expiring = services.key_create(actor=bob, keystore_id=keystore.pk, name="e", material_valid_days=DAYS).key
    forever = services.key_create(actor=bob, keystore_id=keystore.pk, name="f").key
    services.key_update(actor=bob, key_id=expiring.pk, material_valid_days=None)
    services.key_update(actor=bob, key_id=forever.pk, material_valid_days=90)
    assert set(due_for_reimport(timezone.now())) == {expiring.pk, forever.pk}

    now = later(clock, hours=1)
    assert reimport_expiring_materials(actor=SYSTEM, pace_seconds=0).reimported == 2

    assert sandbox_view(aws_sandbox, expiring)["expiration_model"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"
    assert stored_expiries(expiring) == [None]
    view = sandbox_view(aws_sandbox, forever)
    assert close(dt.datetime.fromisoformat(view["valid_to"]), now + dt.timedelta(days=90))
    assert due_for_reimport(now) == []
    changed = AuditEvent.objects.filter(key_id=forever.pk, operation=Operation.UPDATE).latest("seq")
    assert changed.details["changed"]["valid_days"] == {"from": None, "to": 90}


def test_deactivate_forgets_the_expiry_and_activate_imports_with_a_new_one(
    people: Any, keystore: Any, aws_sandbox: str, clock: Any
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k", material_valid_days=DAYS).key
    services.key_deactivate(actor=bob, key_id=key.pk)
    assert stored_expiries(key) == [None]  # KMS holds nothing: nothing expires, nothing to re-import
    now = later(clock, days=DAYS + 5)
    assert due_for_reimport(now) == []
    services.key_activate(actor=bob, key_id=key.pk)
    [stored] = stored_expiries(key)
    assert stored is not None
    assert close(stored, now + dt.timedelta(days=DAYS))


@pytest.mark.parametrize("days", [0, 366, -1, True, 1.5])
def test_a_validity_outside_awss_range_is_refused_naming_the_field(
    days: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = people.actor(people.bob)
    with pytest.raises(ValidationError) as bad:
        services.key_create(actor=bob, keystore_id=keystore.pk, name="k", material_valid_days=days)
    assert "365" in bad.value.message_dict["material_valid_days"][0]
    assert not Key.objects.exists()


def test_the_reimport_rule_takes_half_the_validity_when_shorter_than_the_margin() -> None:
    now = timezone.now()
    assert reimport_due(None, 30, now)  # the policy wants an expiry the material lacks
    assert reimport_due(now + dt.timedelta(days=10), None, now)  # the policy no longer wants one
    assert not reimport_due(None, None, now)
    assert not reimport_due(now + dt.timedelta(days=3, seconds=1), 30, now)
    assert reimport_due(now + dt.timedelta(days=3), 30, now)
    assert not reimport_due(now + dt.timedelta(hours=13), 1, now)
    assert reimport_due(now + dt.timedelta(hours=12), 1, now)


# --- faults: every KMS call of the re-import, before or after AWS acted ----------------

REIMPORT_CALLS = ["GetParametersForImport", "ImportKeyMaterial"]
FAULTS = [(i, mode) for i in range(len(REIMPORT_CALLS)) for mode in ("before", "after")]


@pytest.mark.parametrize(("fail_at", "mode"), FAULTS, ids=[f"{REIMPORT_CALLS[i]}-{m}" for i, m in FAULTS])
def test_a_failed_reimport_call_keeps_material_and_expiry_truthful_and_the_next_run_converges(
    fail_at: int, mode: str, people: Any, keystore: Any, aws_sandbox: str, monkeypatch: Any, clock: Any
) -> None:
    key = services.key_create(
        actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", material_valid_days=DAYS
    ).key
    kcv, [first_expiry] = key.kcv, stored_expiries(key)
    now = later(clock, days=DAYS - 1)

    with kms_calls(monkeypatch, fail_at, mode) as seen:
        summary = reimport_expiring_materials(actor=SYSTEM, pace_seconds=0)
    assert seen == REIMPORT_CALLS[: fail_at + 1]
    assert (summary.reimported, summary.failed) == (0, 1)

    key.refresh_from_db()
    assert (key.state, custody.kcv(current_material(key))) == (KeyState.ACTIVE, kcv)
    # The portal keeps the expiry it knows for sure (the earlier one): the key stays due.
    assert stored_expiries(key) == [first_expiry]
    assert due_for_reimport(now) == [key.pk]
    failed = AuditEvent.objects.filter(key_id=key.pk, operation=Operation.REIMPORT).get()
    assert (failed.outcome, failed.reason) == ("failed", "KMSInternalException" if mode == "before" else "Timeout")

    assert reimport_expiring_materials(actor=SYSTEM, pace_seconds=0).reimported == 1  # the next run
    [stored] = stored_expiries(key)
    assert stored is not None
    assert close(stored, now + dt.timedelta(days=DAYS))
    assert close(dt.datetime.fromisoformat(sandbox_view(aws_sandbox, key)["valid_to"]), stored)
    assert sandbox_view(aws_sandbox, key)["key_state"] == "Enabled"


def test_a_reimport_lost_in_the_replica_region_is_retried_there(
    people: Any, keystore: Any, proxy: Any, clock: Any
) -> None:
    """The fault proxy loses ImportKeyMaterial's answer in the replica's region (AWS did import it)."""
    key = services.key_create(
        actor=people.actor(people.bob),
        keystore_id=keystore.pk,
        name="mrk",
        multi_region=True,
        replica_regions=[REPLICA],
        material_valid_days=DAYS,
    ).key
    later(clock, days=DAYS - 1)
    # Lost every time (botocore's retries included): the operation fails in that region.
    proxy.inject("ImportKeyMaterial", "lose", region=REPLICA, times=10)

    failed = reimport_expiring_materials(actor=SYSTEM, pace_seconds=0)

    assert failed.failed == 1
    assert proxy.injected[0] == "ImportKeyMaterial:lose"
    proxy.faults.clear()
    event = AuditEvent.objects.filter(key_id=key.pk, operation=Operation.REIMPORT).get()
    assert (event.outcome, event.details["failed_region"], event.details["regions_done"]) == (
        "failed",
        REPLICA,
        [keystore.region],
    )
    assert reimport_expiring_materials(actor=SYSTEM, pace_seconds=0).reimported == 1
    assert KeyMaterial.objects.get(key=key).valid_to == key.materials.get().valid_to
    assert AuditEvent.objects.filter(key_id=key.pk, operation=Operation.REIMPORT, outcome="success").count() == 1


def test_no_material_leaks_into_the_reimports_audit_or_errors(
    people: Any, keystore: Any, aws_sandbox: str, clock: Any, monkeypatch: Any
) -> None:
    key = services.key_create(
        actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", material_valid_days=DAYS
    ).key
    material = bytes(current_material(key))
    later(clock, days=DAYS - 1)
    with kms_calls(monkeypatch, 1, "before"), pytest.raises(AwsError) as failure:
        services.key_reimport(actor=SYSTEM, key_id=key.pk)
    services.key_reimport(actor=SYSTEM, key_id=key.pk)
    trail = repr(list(AuditEvent.objects.filter(key_id=key.pk).values()))
    for form in (material.hex(), material.hex().upper(), repr(material)):
        assert form not in trail
        assert form not in str(failure.value)
    assert KeyMaterial.objects.filter(key=key, state=MaterialState.CURRENT).exists()
