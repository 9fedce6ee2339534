"""Every cell of SPEC §2's lifecycle table, against the sandbox AWS, for every kind of key (SPEC §9).

The expected table is written out here from the SPEC, independently of
``keys.lifecycle``, so a wrong row in the code fails a test instead of agreeing
with itself. Allowed cells check the portal *and* the KMS key; no-op and refused
cells check that nothing changed anywhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from byok_portal import wrapping
from byok_portal.errors import Conflict
from byok_portal.vocabulary import KeyState, Operation
from keys import custody, services
from keys.lifecycle import InvalidState
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
}
FAR_FUTURE = timezone.now() + dt.timedelta(days=400)
# SPEC §9: every operation works for every spec. The table runs for the symmetric default, one HMAC
# spec, one RSA spec with each usage and one EC spec.
KINDS = [
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
    ("HMAC_256", "GENERATE_VERIFY_MAC"),
    ("RSA_2048", "ENCRYPT_DECRYPT"),
    ("RSA_2048", "SIGN_VERIFY"),
    ("ECC_NIST_P256", "SIGN_VERIFY"),
]


def key_in_state(state: str, people: Any, keystore: Any, kind: tuple[str, str] = KINDS[0]) -> Key:
    bob = people.actor(people.bob)
    key_spec, key_usage = kind
    key = services.key_create(
        actor=bob,
        keystore_id=keystore.pk,
        name="k",
        alias=f"alias/k-{state.lower()}",
        key_spec=key_spec,
        key_usage=key_usage,
    ).key
    if state == I:
        services.key_deactivate(actor=bob, key_id=key.pk)
    elif state == R:
        services.key_renew(actor=bob, key_id=key.pk)
    elif state in (P, D):
        services.key_schedule_deletion(actor=bob, key_id=key.pk)
        if state == D:
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
    portal["material"] = bytes(key.material_sealed) if key.material_sealed else None
    portal["prepared"] = (key.download_public_key, key.download_prepared_by_sub)
    return {"portal": portal, "kms": sandbox_view(sandbox_url, key)}


# The input each operation is run with here; the function that runs it comes from the registry.
INPUT: dict[str, dict[str, Any]] = {
    "schedule_deletion": {"pending_window_days": 9},
    "prepare_download": {"public_key": public_pem()},
    "update": {"name": "renamed", "tags": {"team": "payments"}, "alias": "alias/renamed"},
    "cleanup": {"now": FAR_FUTURE},
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
HSM_KINDS = [kind for kind in KINDS if not kind[0].startswith(("RSA", "ECC"))]
CELLS = [
    (op, state, kind, backend)
    for backend in ("software", "pkcs11")
    for kind in (KINDS if backend == "software" else HSM_KINDS)
    for op in SPEC_TABLE
    for state in (A, I, R, P, D)
]


def check_value(holder: dict[str, Any]) -> Any:
    """A key's check value as the portal and the sandbox both state it: the KCV, or the public key's SHA-256."""
    return holder["kcv"] or holder["public_key_sha256"]


@pytest.mark.parametrize(
    ("operation", "state", "kind", "custody_backend"),
    CELLS,
    ids=[f"{backend}-{kind[0]}-{kind[1]}-{op}-{state}" for op, state, kind, backend in CELLS],
    indirect=["custody_backend"],
)
def test_lifecycle_cell(
    operation: str,
    state: str,
    kind: tuple[str, str],
    custody_backend: str,
    people: Any,
    keystore: Any,
    aws_sandbox: str,
) -> None:
    allowed, noop = SPEC_TABLE[operation]
    key = key_in_state(state, people, keystore, kind)
    assert (key.key_spec, key.key_usage) == kind
    if key.material_sealed:  # sealed by the backend under test: format byte 1 software, 2 HSM (keys.custody)
        assert bytes(key.material_sealed)[:1] == (b"\x02" if custody_backend == "pkcs11" else b"\x01")
    if state != D:  # KMS holds (or held) exactly the portal's material
        assert sandbox_view(aws_sandbox, key)["key_spec"] == kind[0]
    if operation in ("download", "withdraw_download") and state in allowed:
        services.key_prepare_download(actor=people.actor(people.bob), key_id=key.pk, public_key_pem=public_pem())
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
    kind: tuple[str, str],
    backend: str,
) -> None:
    portal, kms = after["portal"], after["kms"]
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
        assert (new.key_spec, new.key_usage, new_kms["key_spec"], new_kms["key_usage"]) == (*kind, *kind)
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
    elif operation == "cleanup":
        assert (portal["state"], portal["material"]) == (D, None)
        assert kms == before["kms"]
    else:  # pragma: no cover - a new operation needs its expected effect here
        pytest.fail(f"no expected effect written for {operation}")
