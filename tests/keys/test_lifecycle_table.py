"""Every cell of SPEC §2's lifecycle table, against the sandbox AWS, for every kind of key (SPEC §9).

The expected table is written out here from the SPEC, independently of
``keys.lifecycle``, so a wrong row in the code fails a test instead of agreeing
with itself. Allowed cells check the portal *and* the KMS key; no-op and refused
cells check that nothing changed anywhere.
"""

from __future__ import annotations

import datetime as dt
import urllib.error
from contextlib import nullcontext
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from audit.models import AuditEvent
from byok_portal import wrapping
from byok_portal.errors import Conflict
from byok_portal.vocabulary import KeyState, Operation
from keys import custody, services
from keys.lifecycle import InvalidState, UnsupportedForKeySpec
from keys.models import Key
from keys.operations import REGISTRY
from keys.services import Done
from tests.keys.helpers import public_pem, rsa_private_key, sandbox_view

pytestmark = pytest.mark.django_db

A, I, R, P, D = "ACTIVE", "INACTIVE", "REPLACED", "PENDING_DELETION", "DELETED"  # noqa: E741 - the SPEC table reads best in its initials
ALL = {A, I, R, P, D}
# operation: (allowed, no-op) straight from SPEC §2.
SPEC_TABLE: dict[str, tuple[set[str], set[str]]] = {
    "deactivate": ({A}, {I}),
    "activate": ({I}, {A}),
    "upload": ({A, R}, set()),
    "renew": ({A}, set()),
    "schedule_deletion": ({A, I, R}, {P, D}),
    "cancel_deletion": ({P}, set()),
    "prepare_download": (ALL - {D}, set()),
    "download": (ALL - {D}, set()),
    # Issue 12 item 12: a pending preparation is withdrawn before another is made.
    "withdraw_download": (ALL - {D}, set()),
    "update": ({A, I}, set()),
    "cleanup": ({P}, set()),
    # SPEC §11: a multi-Region key gets one more replica.
    "add_replica": ({A}, set()),
    # SPEC §10: native rotation, symmetric keys only.
    "rotate": ({A}, set()),
    # SPEC §10: material_valid_days' re-import before ValidTo, wherever KMS holds the material.
    "reimport": ({A, R}, {I, P}),
}
# The re-import runs on keys whose material expires after this many days (SPEC §10).
VALID_DAYS = 30
SYMMETRIC_ONLY = {"rotate"}
FAR_FUTURE = timezone.now() + dt.timedelta(days=400)
# SPEC §9: every operation works for every spec. The table runs for the symmetric default, one HMAC
# spec, one RSA spec with each usage and one EC spec; and (SPEC §11) for a multi-Region symmetric key
# with a replica, the third element.
KINDS = [
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", False),
    ("HMAC_256", "GENERATE_VERIFY_MAC", False),
    ("RSA_2048", "ENCRYPT_DECRYPT", False),
    ("RSA_2048", "SIGN_VERIFY", False),
    ("ECC_NIST_P256", "SIGN_VERIFY", False),
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", True),
]
REPLICA_REGION = "us-east-1"
NEW_REPLICA_REGION = "ca-central-1"


def key_in_state(state: str, people: Any, keystore: Any, kind: tuple[str, str, bool] = KINDS[0]) -> Key:
    bob = people.actor(people.bob)
    key_spec, key_usage, multi_region = kind
    key = services.key_create(
        actor=bob,
        keystore_id=keystore.pk,
        name="k",
        alias=f"alias/k-{state.lower()}",
        key_spec=key_spec,
        key_usage=key_usage,
        multi_region=multi_region,
        replica_regions=[REPLICA_REGION] if multi_region else [],
    ).key
    if state == I:
        services.key_deactivate(actor=bob, key_id=key.pk)
    elif state == R:
        services.key_renew(actor=bob, key_id=key.pk)
    elif state in (P, D):
        services.key_schedule_deletion(actor=bob, key_id=key.pk)
        if state == D:
            # A multi-Region key is cleaned up only once AWS has deleted it in every region.
            with time_machine.travel(FAR_FUTURE, tick=False) if multi_region else nullcontext():
                services.key_cleanup(actor=bob, key_id=key.pk, now=FAR_FUTURE)
    key.refresh_from_db()
    assert key.state == state
    return key


def snapshot(key: Key, sandbox_url: str) -> dict[str, Any]:
    key.refresh_from_db()
    portal = {
        f: getattr(key, f)
        for f in (
            "state",
            "kms_state",
            "name",
            "alias",
            "tags",
            "expires",
            "kcv",
            "public_key_sha256",
            "deletion_date",
            "kms_key_arn",
        )
    }
    portal["material"] = [
        (v.version, v.state, v.kms_key_material_id, bytes(v.material_sealed) if v.material_sealed else None)
        for v in key.materials.order_by("version")
    ]
    portal["prepared"] = (key.download_public_key, key.download_prepared_by_sub)
    portal["replicas"] = sorted(key.replicas.values_list("region", "kms_state", "deletion_date"))
    return {"portal": portal, "kms": kms_view(sandbox_url, key), "replicas": replica_views(sandbox_url, key)}


def kms_view(sandbox_url: str, key: Key, region: str = "") -> dict[str, Any] | None:
    """The sandbox's view of the key's KMS key (in ``region``), or None once AWS has deleted it."""
    try:
        return sandbox_view(sandbox_url, key, region)
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
        return None


def replica_views(sandbox_url: str, key: Key) -> dict[str, Any]:
    return {region: kms_view(sandbox_url, key, region) for region in (REPLICA_REGION, NEW_REPLICA_REGION)}


# The input each operation is run with here; the function that runs it comes from the registry.
INPUT: dict[str, dict[str, Any]] = {
    "schedule_deletion": {"pending_window_days": 9},
    "prepare_download": {"public_key": public_pem()},
    "update": {"name": "renamed", "tags": {"team": "payments"}, "alias": "alias/renamed"},
    "cleanup": {"now": FAR_FUTURE},
    "add_replica": {"region": NEW_REPLICA_REGION},
}


def run(operation: str, key: Key, people: Any) -> Any:
    """Run ``operation`` through its registry entry, as every door does (the download by a second person)."""
    entry = REGISTRY[Operation(operation)]
    if operation == "download":
        return entry.release(people.actor(people.carol), key.pk)
    return entry.run(people.actor(people.bob), key.pk, INPUT.get(operation))


def test_the_registry_runs_every_operation_of_the_table() -> None:
    """Every row of the SPEC's table has a registry entry (and create, which no key state governs, and
    recreate, a repair for a vanished KMS key: its cells are in tests/keys/test_recreate.py)."""
    assert {str(op) for op in REGISTRY} == set(SPEC_TABLE) | {"create", "recreate"}


def last_event(key: Key) -> AuditEvent:
    event = AuditEvent.objects.filter(key_id=key.pk).order_by("-seq").first()
    assert event is not None
    return event


# SPEC §13: the table runs on both custody backends. BYOK_CUSTODY=pkcs11 keeps symmetric and HMAC
# material only (keys.hsm.check_spec); its RSA/EC refusal is tested in tests/custody/test_pkcs11.py.
# The multi-Region kind runs on software only (CI time; its custody is the symmetric kind's).
HSM_KINDS = [kind for kind in KINDS if not kind[0].startswith(("RSA", "ECC")) and not kind[2]]
CELLS = [
    (op, state, kind, backend)
    for backend in ("software", "pkcs11")
    for kind in (KINDS if backend == "software" else HSM_KINDS)
    for op in SPEC_TABLE
    for state in (A, I, R, P, D)
    if op not in SYMMETRIC_ONLY or kind[0] == "SYMMETRIC_DEFAULT"
]
CELL_IDS = [
    f"{backend}-{kind[0]}-{kind[1]}{'-multi-region' if kind[2] else ''}-{op}-{state}"
    for op, state, kind, backend in CELLS
]
UNSUPPORTED = [(op, kind) for kind in KINDS if kind[0] != "SYMMETRIC_DEFAULT" for op in sorted(SYMMETRIC_ONLY)]


@pytest.mark.parametrize(("operation", "kind"), UNSUPPORTED, ids=[f"{k[0]}-{k[1]}-{op}" for op, k in UNSUPPORTED])
def test_rotate_is_refused_for_keys_that_are_not_symmetric_whatever_their_state(
    operation: str, kind: tuple[str, str, bool], people: Any, keystore: Any, aws_sandbox: str
) -> None:
    key = key_in_state(A, people, keystore, kind)
    before = snapshot(key, aws_sandbox)
    with pytest.raises(UnsupportedForKeySpec) as refused:
        run(operation, key, people)
    assert refused.value.code == "unsupported_for_key_spec"
    assert snapshot(key, aws_sandbox) == before
    assert (last_event(key).operation, last_event(key).outcome) == (operation, "refused")


def check_value(holder: dict[str, Any]) -> Any:
    """A key's check value as the portal and the sandbox both state it: the KCV, or the public key's SHA-256."""
    return holder["kcv"] or holder["public_key_sha256"]


@pytest.mark.parametrize(
    ("operation", "state", "kind", "custody_backend"), CELLS, ids=CELL_IDS, indirect=["custody_backend"]
)
def test_lifecycle_cell(
    operation: str,
    state: str,
    kind: tuple[str, str, bool],
    custody_backend: str,
    people: Any,
    keystore: Any,
    aws_sandbox: str,
) -> None:
    allowed, noop = SPEC_TABLE[operation]
    key = key_in_state(state, people, keystore, kind)
    assert (key.key_spec, key.key_usage, key.multi_region) == kind
    # Every sealed version is sealed by the backend under test: format byte 2 software, 3 HSM (keys.custody).
    for sealed in key.materials.exclude(material_sealed=None).values_list("material_sealed", flat=True):
        assert bytes(sealed or b"")[:1] == (b"\x03" if custody_backend == "pkcs11" else b"\x02")
    if state != D:  # KMS holds (or held) exactly the portal's material
        assert sandbox_view(aws_sandbox, key)["key_spec"] == kind[0]
    if operation == "rotate" and kind[0] != "SYMMETRIC_DEFAULT":
        # Whatever the state: the spec cannot rotate (SPEC §9, §10).
        before = snapshot(key, aws_sandbox)
        with pytest.raises(UnsupportedForKeySpec):
            run(operation, key, people)
        assert snapshot(key, aws_sandbox) == before
        return
    if operation == "add_replica" and state in allowed and not key.multi_region:
        # AWS cannot make a single-Region key multi-Region: refused whatever the state allows.
        before = snapshot(key, aws_sandbox)
        with pytest.raises(Conflict) as not_multi_region:
            run(operation, key, people)
        assert not_multi_region.value.extra["reason"] == "not_multi_region"
        assert snapshot(key, aws_sandbox) == before
        assert (last_event(key).operation, last_event(key).outcome) == (operation, "refused")
        return
    if operation in ("download", "withdraw_download") and state in allowed:
        services.key_prepare_download(actor=people.actor(people.bob), key_id=key.pk, public_key_pem=public_pem())
    if operation == "reimport":
        # A policy given after the material went in: the re-import gives every material its expiry.
        Key.objects.filter(pk=key.pk).update(material_valid_days=VALID_DAYS)
    before = snapshot(key, aws_sandbox)
    events_before = AuditEvent.objects.count()

    if state not in allowed and state not in noop:
        with pytest.raises(InvalidState) as refused:
            run(operation, key, people)
        assert refused.value.code == "invalid_state"
        assert refused.value.extra["allowed_states"] == sorted(allowed)
        assert snapshot(key, aws_sandbox) == before
        assert (last_event(key).operation, last_event(key).outcome) == (operation, "refused")
        assert AuditEvent.objects.count() == events_before + 1
        return

    # A multi-Region key's cleanup waits until AWS has deleted it in every region.
    later = time_machine.travel(FAR_FUTURE, tick=False) if kind[2] and operation == "cleanup" else nullcontext()
    with later:
        result = run(operation, key, people)
    after = snapshot(key, aws_sandbox)
    event = last_event(key)
    assert AuditEvent.objects.count() == events_before + 1
    assert event.operation == operation
    # What the service says happened is what the audit trail says.
    if isinstance(result, Done):
        assert result.outcome == event.outcome
    if state in noop:
        assert after == before
        assert event.outcome == "noop"
        return
    assert event.outcome == "success"
    if isinstance(result, Done):
        result = result.key
    assert (event.state_before, event.state_after) == (state, after["portal"]["state"])
    check_effect(operation, state, before, after, key, result, aws_sandbox, kind, custody_backend)


def check_effect(
    operation: str,
    state: str,
    before: dict[str, Any],
    after: dict[str, Any],
    key: Key,
    result: Any,
    url: str,
    kind: tuple[str, str, bool],
    backend: str,
) -> None:
    portal, kms = after["portal"], after["kms"]
    replica = after["replicas"][REPLICA_REGION]
    multi_region = kind[2]
    if multi_region and portal["state"] not in (P, D):
        # Every region holds what the primary holds (SPEC §11); pending deletion, the primary waits for them.
        assert (replica["key_state"], replica["has_material"]) == (kms["key_state"], kms["has_material"])
        assert replica["aliases"] == kms["aliases"]
        assert replica["tags"] == kms["tags"]
    if operation == "deactivate" or operation == "cancel_deletion":
        assert portal["state"] == I
        assert (kms["key_state"], kms["has_material"]) == ("PendingImport", False)
        assert portal["deletion_date"] is None
    elif operation in ("activate", "upload"):
        assert portal["state"] == (A if operation == "activate" else state)
        assert (kms["key_state"], check_value(kms)) == ("Enabled", check_value(portal))
    elif operation == "renew":
        assert portal["state"] == R
        assert (kms["key_state"], kms["aliases"]) == ("Enabled", [])
        new = Key.objects.get(replaces=key)
        assert (result.pk, new.state, new.alias) == (new.pk, KeyState.ACTIVE, before["portal"]["alias"])
        new_kms = sandbox_view(url, new)
        new_check = new.kcv or new.public_key_sha256
        assert (new_kms["key_state"], new_kms["aliases"], check_value(new_kms)) == ("Enabled", [new.alias], new_check)
        assert new_check != check_value(portal)
        # Same spec and usage, in the portal and in KMS (SPEC §9).
        assert (new.key_spec, new.key_usage, new_kms["key_spec"], new_kms["key_usage"]) == (*kind[:2], *kind[:2])
        assert [r.region for r in new.replicas.all()] == ([REPLICA_REGION] if multi_region else [])
    elif operation == "schedule_deletion" and multi_region:
        # Replicas first; the primary waits for them, then its own window: the portal's date is the latest.
        assert portal["state"] == P
        assert (kms["key_state"], replica["key_state"]) == ("PendingReplicaDeletion", "PendingDeletion")
        assert dt.timedelta(days=17, hours=23) < portal["deletion_date"] - timezone.now() <= dt.timedelta(days=18)
    elif operation == "schedule_deletion":
        assert portal["state"] == P
        assert kms["key_state"] == "PendingDeletion"
        assert portal["deletion_date"] is not None
        assert dt.timedelta(days=8, hours=23) < portal["deletion_date"] - timezone.now() <= dt.timedelta(days=9)
    elif operation == "prepare_download":
        assert portal["prepared"] == (public_pem().strip(), "bob")
        assert kms == before["kms"]
    elif operation == "download":
        assert portal["prepared"] == ("", "")
        assert result.kcv == portal["kcv"]
        assert result.public_key_sha256 == portal["public_key_sha256"]
        expected_wrapping = "RSA_AES_KEY_WRAP_SHA_256" if kind[0].startswith(("RSA", "ECC")) else "RSAES_OAEP_SHA_256"
        if backend == "pkcs11":  # wrapped inside SoftHSM2, whose CKM_RSA_PKCS_OAEP offers SHA-1 only
            expected_wrapping = "RSAES_OAEP_SHA_1"
        assert result.wrapping_algorithm == expected_wrapping
        # What the second person receives unwraps, with the prepared key, to the key's own material.
        released = wrapping.unwrap(result.wrapping_algorithm, rsa_private_key(), result.wrapped_key_material)
        checks = custody.check_values(kind[0], bytearray(released))
        assert check_value({"kcv": checks.kcv, "public_key_sha256": checks.public_key_sha256}) == check_value(portal)
        assert kms == before["kms"]
        creator = key.keystore.created_by
        assert creator is not None
        with pytest.raises(Conflict):  # single use
            services.key_download(actor=services.Actor.for_user(creator), key_id=key.pk)
    elif operation == "withdraw_download":
        assert portal["prepared"] == ("", "")
        assert (portal["state"], kms) == (state, before["kms"])
        creator = key.keystore.created_by
        assert creator is not None
        with pytest.raises(Conflict):  # nothing left to download
            services.key_download(actor=services.Actor.for_user(creator), key_id=key.pk)
    elif operation == "update":
        assert (portal["name"], portal["alias"], portal["tags"]) == ("renamed", "alias/renamed", {"team": "payments"})
        assert kms["aliases"] == ["alias/renamed"]
        assert kms["tags"]["team"] == "payments"
    elif operation == "cleanup" and multi_region:
        assert portal["state"] == D
        assert portal["material"] == [(v, s, i, None) for v, s, i, _ in before["portal"]["material"]]
        assert (kms, replica) == (None, None)  # cleaned up only once gone from every region
    elif operation == "cleanup":
        # Every version's sealed copy is destroyed; the versions stay as the key's history.
        assert portal["state"] == D
        assert portal["material"] == [(v, s, i, None) for v, s, i, _ in before["portal"]["material"]]
        assert kms == before["kms"]
    elif operation == "rotate":
        # The same KMS key in every region, a new current material (SPEC §10, §11).
        assert (portal["state"], portal["kms_key_arn"], kms["key_state"]) == (
            A,
            before["portal"]["kms_key_arn"],
            "Enabled",
        )
        assert key.material_version == 2
        assert kms["kcv"] != check_value(before["portal"])
    elif operation == "add_replica":
        assert portal["state"] == A
        new_replica = after["replicas"][NEW_REPLICA_REGION]
        assert (new_replica["key_state"], new_replica["kcv"]) == ("Enabled", portal["kcv"])
        assert new_replica["aliases"] == kms["aliases"]
        assert (NEW_REPLICA_REGION, "ENABLED") in [(r, s) for r, s, _ in portal["replicas"]]
    elif operation == "reimport":
        # The same material, now expiring VALID_DAYS from now in KMS, in every region; the portal knows when.
        assert (portal["state"], kms["key_state"], check_value(kms)) == (state, "Enabled", check_value(portal))
        assert kms["expiration_model"] == "KEY_MATERIAL_EXPIRES"
        expected = timezone.now() + dt.timedelta(days=VALID_DAYS)
        views = [kms, *([replica] if multi_region else [])]
        valid_tos = [m["valid_to"] for view in views for m in view["materials"]] or [v["valid_to"] for v in views]
        for valid_to in valid_tos:
            assert abs(dt.datetime.fromisoformat(valid_to) - expected) < dt.timedelta(minutes=1)
        stored = list(key.materials.filter(state__in=("CURRENT", "NON_CURRENT")).values_list("valid_to", flat=True))
        assert stored
        assert all(v is not None and abs(v - expected) < dt.timedelta(minutes=1) for v in stored)
    else:  # pragma: no cover - a new operation needs its expected effect here
        pytest.fail(f"no expected effect written for {operation}")
