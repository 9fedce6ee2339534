"""Every KMS call of every multi-step operation made to fail, before or after AWS acted.

"before": AWS refuses (nothing happened in KMS). "after": AWS acted but the
response was lost (a timeout) — the hard case for retries. Either way the caller
gets a clear error, the portal keeps a truthful state and its material, the
attempt is audited as failed, a plain retry converges, and no KMS key is left
orphaned. Faults are injected into the AWS layer (the only mock in the suite's
AWS tests); everything else runs against the sandbox over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings

from audit.models import AuditEvent
from byok_portal.aws import AwsError, KmsSession
from byok_portal.vocabulary import KeyState
from keys import custody, services
from keys.models import Key, KeyMaterial, PendingCreation
from tests.keys.helpers import current_material, live_portal_kms_keys, sandbox_view

pytestmark = pytest.mark.django_db

# The KMS calls each operation makes, in order (also the call counts the issue bounds).
CALLS: dict[str, list[str]] = {
    "create": ["CreateKey", "GetParametersForImport", "ImportKeyMaterial", "CreateAlias"],
    # ListKeyRotations: which material versions KMS holds, so only what is missing is imported or deleted.
    "deactivate": ["DisableKey", "ListKeyRotations", "DeleteImportedKeyMaterial"],
    "activate": ["ListKeyRotations", "GetParametersForImport", "ImportKeyMaterial", "EnableKey"],
    # An upload of a key whose material is all there imports nothing (GetParametersForImport costs quota).
    "upload": ["ListKeyRotations", "EnableKey"],
    "renew": ["CreateKey", "GetParametersForImport", "ImportKeyMaterial", "UpdateAlias"],
    "schedule_deletion": ["ScheduleKeyDeletion"],
    "cancel_deletion": ["CancelKeyDeletion", "ListKeyRotations", "DeleteImportedKeyMaterial"],
    # Stage (what is there?), import NEW, rotate, confirm (listed CURRENT, and DescribeKey's CurrentKeyMaterialId).
    "rotate": [
        "ListKeyRotations",
        "GetParametersForImport",
        "ImportKeyMaterial",
        "RotateKeyOnDemand",
        "ListKeyRotations",
        "DescribeKey",
    ],
    # The new alias is claimed with CreateAlias (never UpdateAlias: an existing alias is not moved over blindly).
    "update": ["TagResource", "CreateAlias", "DeleteAlias"],
}
START_STATE = {
    "deactivate": KeyState.ACTIVE,
    "activate": KeyState.INACTIVE,
    "upload": KeyState.ACTIVE,
    "renew": KeyState.ACTIVE,
    "schedule_deletion": KeyState.ACTIVE,
    "cancel_deletion": KeyState.PENDING_DELETION,
    "update": KeyState.ACTIVE,
    "rotate": KeyState.ACTIVE,
}
END_STATE = {
    "deactivate": (KeyState.INACTIVE, "PendingImport"),
    "activate": (KeyState.ACTIVE, "Enabled"),
    "upload": (KeyState.ACTIVE, "Enabled"),
    "renew": (KeyState.REPLACED, "Enabled"),
    "schedule_deletion": (KeyState.PENDING_DELETION, "PendingDeletion"),
    "cancel_deletion": (KeyState.INACTIVE, "PendingImport"),
    "update": (KeyState.ACTIVE, "Enabled"),
    "rotate": (KeyState.ACTIVE, "Enabled"),
}


@contextmanager
def kms_calls(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None, mode: str = "before") -> Iterator[list[str]]:
    """Record KMS calls; make call number ``fail_at`` fail before or after AWS acts."""
    real = KmsSession._call
    seen: list[str] = []

    def call(self: KmsSession, operation: str, **kwargs: Any) -> dict[str, Any]:
        index = len(seen)
        seen.append(operation)
        if index == fail_at:
            if mode == "before":
                raise AwsError(kind="kms_error", operation=operation, code="KMSInternalException", message="injected")
            real(self, operation, **kwargs)
            raise AwsError(kind="aws_connection_error", operation=operation, code="Timeout", message="injected")
        return real(self, operation, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(KmsSession, "_call", call)
        yield seen


def prepared_key(state: str, people: Any, keystore: Any, alias: str = "alias/app") -> Key:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k", alias=alias, tags={"a": "1"}).key
    if state == KeyState.INACTIVE:
        services.key_deactivate(actor=bob, key_id=key.pk)
    elif state == KeyState.PENDING_DELETION:
        services.key_schedule_deletion(actor=bob, key_id=key.pk)
    key.refresh_from_db()
    return key


def operation_call(operation: str, people: Any, key: Key) -> Callable[[], Any]:
    bob = people.actor(people.bob)
    return {
        "deactivate": lambda: services.key_deactivate(actor=bob, key_id=key.pk),
        "activate": lambda: services.key_activate(actor=bob, key_id=key.pk),
        "upload": lambda: services.key_upload(actor=bob, key_id=key.pk),
        "renew": lambda: services.key_renew(actor=bob, key_id=key.pk),
        "schedule_deletion": lambda: services.key_schedule_deletion(actor=bob, key_id=key.pk),
        "cancel_deletion": lambda: services.key_cancel_deletion(actor=bob, key_id=key.pk),
        "update": lambda: services.key_update(actor=bob, key_id=key.pk, tags={"a": "2"}, alias="alias/app2"),
        "rotate": lambda: services.key_rotate(actor=bob, key_id=key.pk),
    }[operation]


def assert_no_orphans(url: str, keystore: Any) -> None:
    expected = set(
        Key.objects.filter(keystore=keystore)
        .exclude(state__in=[KeyState.PENDING_DELETION, KeyState.DELETED])
        .values_list("kms_key_arn", flat=True)
    )
    assert live_portal_kms_keys(url, keystore, settings.BYOK_TAG_KEY) == expected
    assert not PendingCreation.objects.exists()


# A lost answer of RotateKeyOnDemand is recovered within the same call: see the test after the matrix.
RECOVERED_IN_CALL = {("rotate", CALLS["rotate"].index("RotateKeyOnDemand"), "after")}
CASES = [
    (op, i, mode)
    for op, calls in CALLS.items()
    if op != "create"
    for i in range(len(calls))
    for mode in ("before", "after")
    if (op, i, mode) not in RECOVERED_IN_CALL
]


@pytest.mark.parametrize(("operation", "fail_at", "mode"), CASES, ids=[f"{o}-{CALLS[o][i]}-{m}" for o, i, m in CASES])
def test_a_failed_kms_call_leaves_a_truthful_state_and_a_retry_converges(
    operation: str, fail_at: int, mode: str, people: Any, keystore: Any, aws_sandbox: str, monkeypatch: Any
) -> None:
    key = prepared_key(START_STATE[operation], people, keystore)
    kcv_before = key.kcv
    with kms_calls(monkeypatch, fail_at, mode) as seen, pytest.raises(AwsError) as failure:
        operation_call(operation, people, key)()
    assert seen[: fail_at + 1] == CALLS[operation][: fail_at + 1]
    assert failure.value.code in ("KMSInternalException", "Timeout")

    key.refresh_from_db()
    assert key.state == START_STATE[operation]  # the portal claims nothing that did not commit
    assert custody.kcv(current_material(key)) == kcv_before  # no material lost
    event = AuditEvent.objects.filter(key_id=key.pk).order_by("-seq").first()
    assert event is not None
    assert (event.operation, event.outcome, event.reason) == (operation, "failed", failure.value.code)

    operation_call(operation, people, key)()  # the retry
    key.refresh_from_db()
    state, kms_state = END_STATE[operation]
    assert (key.state, sandbox_view(aws_sandbox, key)["key_state"]) == (state, kms_state)
    if operation == "renew":
        new = Key.objects.get(replaces=key)
        assert sandbox_view(aws_sandbox, new)["aliases"] == ["alias/app"]
    if operation == "update":
        assert sandbox_view(aws_sandbox, key)["aliases"] == ["alias/app2"]
    if operation == "rotate":
        assert_rotated_once(aws_sandbox, key)
    assert_no_orphans(aws_sandbox, keystore)


def test_a_rotation_whose_rotate_answer_is_lost_still_completes(
    people: Any, keystore: Any, aws_sandbox: str, monkeypatch: Any
) -> None:
    """AWS rotated but the answer was lost: the rotation asks AWS what happened and finishes, in the same call."""
    key = prepared_key(KeyState.ACTIVE, people, keystore)
    [(_, fail_at, mode)] = RECOVERED_IN_CALL
    with kms_calls(monkeypatch, fail_at, mode) as seen:
        services.key_rotate(actor=people.actor(people.bob), key_id=key.pk)
    assert seen[fail_at] == "RotateKeyOnDemand"
    key.refresh_from_db()
    assert_rotated_once(aws_sandbox, key)
    assert AuditEvent.objects.filter(key_id=key.pk, operation="rotate", outcome="success").count() == 1


def assert_rotated_once(url: str, key: Key) -> None:
    """Exactly one rotation happened, the portal holds both materials, and nothing is left pending anywhere."""
    versions = list(KeyMaterial.objects.filter(key=key).order_by("version").values_list("version", "state"))
    assert versions == [(1, "NON_CURRENT"), (2, "CURRENT")]
    view = sandbox_view(url, key)
    assert [(m["state"], m["imported"]) for m in view["materials"]] == [("NON_CURRENT", True), ("CURRENT", True)]
    current = KeyMaterial.objects.get(key=key, state="CURRENT")
    assert view["kcv"] == current.kcv == key.kcv
    assert (key.material_version, key.rotations) == (2, 1)


@pytest.mark.parametrize("mode", ["before", "after"])
@pytest.mark.parametrize("fail_at", range(len(CALLS["create"])), ids=CALLS["create"])
def test_a_failed_create_leaves_no_key_and_no_orphan(
    fail_at: int, mode: str, people: Any, keystore: Any, aws_sandbox: str, monkeypatch: Any
) -> None:
    bob = people.actor(people.bob)
    with kms_calls(monkeypatch, fail_at, mode) as seen, pytest.raises(AwsError):
        services.key_create(actor=bob, keystore_id=keystore.pk, name="k", alias="alias/new")
    assert seen[: fail_at + 1] == CALLS["create"][: fail_at + 1]
    assert not Key.objects.exists()
    event = AuditEvent.objects.filter(keystore_id=keystore.pk, operation="create").order_by("-seq").first()
    assert event is not None
    assert event.outcome == "failed"
    assert_no_orphans(aws_sandbox, keystore)

    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k", alias="alias/new").key
    assert sandbox_view(aws_sandbox, key)["aliases"] == ["alias/new"]
    assert_no_orphans(aws_sandbox, keystore)


def test_a_clean_run_makes_exactly_the_documented_calls(
    people: Any, keystore: Any, aws_sandbox: str, monkeypatch: Any
) -> None:
    with kms_calls(monkeypatch) as seen:
        services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", alias="alias/x")
    assert seen == CALLS["create"]
    for operation, state in START_STATE.items():
        key = prepared_key(state, people, keystore, alias=f"alias/{operation}")
        with kms_calls(monkeypatch) as seen:
            operation_call(operation, people, key)()
        assert seen == CALLS[operation], operation


def test_an_interrupted_create_is_recovered_by_its_journal(people: Any, keystore: Any, aws_sandbox: str) -> None:
    """A process that died right after CreateKey: only the journal row and the tagged KMS key remain."""
    import datetime as dt

    from accounts.identity import Actor
    from byok_portal import aws

    journal = PendingCreation.objects.create(
        key_id="0f0e0d0c-0b0a-4000-8000-000000000001", keystore=keystore, operation="create"
    )
    kms = aws.kms_for(keystore)
    kms.create_external_key(description="orphan", tags={settings.BYOK_TAG_KEY: str(journal.key_id)})
    PendingCreation.objects.filter(pk=journal.pk).update(started_at=journal.started_at - dt.timedelta(hours=1))

    assert services.recover_pending_creations(actor=Actor.system("reconcile")) == 1
    assert_no_orphans(aws_sandbox, keystore)
    assert AuditEvent.objects.filter(operation="reconcile", reason="orphan_removed").count() == 1
