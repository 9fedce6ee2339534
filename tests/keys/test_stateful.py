"""Random sequences of lifecycle operations (refused ones included), checked after every step.

Invariants: the portal state maps to the KMS key's state as SPEC §1/§2 say; a
DELETED key holds no material; where KMS holds material it is the portal's (same
KCV); and every operation, whatever its outcome, leaves exactly one audit event.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from audit.chain import verify
from audit.models import AuditEvent
from byok_portal.errors import ServiceError
from byok_portal.vocabulary import KeyState
from keys import services
from keys.models import Key, KeyMaterial
from tests.keys.helpers import current_sealed, public_pem, sandbox_view

pytestmark = pytest.mark.django_db

KMS_STATE_OF = {
    KeyState.ACTIVE: {"Enabled"},
    KeyState.INACTIVE: {"PendingImport"},
    KeyState.REPLACED: {"Enabled"},
    KeyState.PENDING_DELETION: {"PendingDeletion"},
    KeyState.DELETED: {"PendingDeletion"},
}
FAR_FUTURE = timezone.now() + dt.timedelta(days=400)
_names = itertools.count()


def test_random_operation_sequences_keep_every_invariant(people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob, carol = people.actor(people.bob), people.actor(people.carol)

    class KeyLifecycle(RuleBasedStateMachine):
        keys = Bundle("keys")

        def __init__(self) -> None:
            super().__init__()
            self.events = AuditEvent.objects.count()
            self.mine: list[Key] = []

        def _do(self, call: Any, expected_events: int = 1) -> None:
            # Refusals are part of the game; they are audited like the rest.
            with contextlib.suppress(ServiceError):
                call()
            self.events += expected_events

        @rule(target=keys)
        def create(self) -> Key:
            n = next(_names)
            key = services.key_create(actor=bob, keystore_id=keystore.pk, name=f"k{n}", alias=f"alias/k{n}").key
            self.events += 1
            self.mine.append(key)
            return key

        @rule(key=keys, operation=st.sampled_from(["deactivate", "activate", "upload", "schedule", "cancel", "rotate"]))
        def transition(self, key: Key, operation: str) -> None:
            calls: dict[str, Callable[..., Any]] = {
                "deactivate": services.key_deactivate,
                "activate": services.key_activate,
                "upload": services.key_upload,
                "schedule": services.key_schedule_deletion,
                "cancel": services.key_cancel_deletion,
                "rotate": services.key_rotate,
            }
            call = calls[operation]
            self._do(lambda: call(actor=bob, key_id=key.pk))

        @rule(target=keys, key=keys)
        def renew(self, key: Key) -> Key:
            before = set(Key.objects.values_list("pk", flat=True))
            self._do(lambda: services.key_renew(actor=bob, key_id=key.pk))
            new = Key.objects.exclude(pk__in=before).first()
            if new is None:
                return key
            self.mine.append(new)
            return new

        @rule(key=keys)
        def cleanup(self, key: Key) -> None:
            self._do(lambda: services.key_cleanup(actor=bob, key_id=key.pk, now=FAR_FUTURE))

        @rule(key=keys, downloader=st.sampled_from(["bob", "carol"]))
        def prepare_and_download(self, key: Key, downloader: str) -> None:
            self._do(lambda: services.key_prepare_download(actor=bob, key_id=key.pk, public_key_pem=public_pem()))
            who = bob if downloader == "bob" else carol
            self._do(lambda: services.key_download(actor=who, key_id=key.pk))

        @rule(key=keys, tag=st.text(alphabet="abc123", min_size=1, max_size=5))
        def update(self, key: Key, tag: str) -> None:
            self._do(lambda: services.key_update(actor=bob, key_id=key.pk, tags={"t": tag}, name=f"n-{tag}"))

        @invariant()
        def every_operation_is_audited_once(self) -> None:
            assert AuditEvent.objects.count() == self.events

        @invariant()
        def portal_and_kms_agree(self) -> None:
            for key in self.mine:
                key.refresh_from_db()
                view = sandbox_view(aws_sandbox, key)
                assert view["key_state"] in KMS_STATE_OF[KeyState(key.state)], (key.state, view["key_state"])
                if key.state == KeyState.DELETED:
                    assert current_sealed(key) is None
                else:
                    assert current_sealed(key)
                if view["has_material"]:
                    assert view["kcv"] == key.kcv

        @invariant()
        def every_material_version_is_the_one_kms_knows(self) -> None:
            for key in self.mine:
                key.refresh_from_db()
                if key.state in (KeyState.DELETED, KeyState.PENDING_DELETION):
                    continue  # a deleted KMS key is gone; one pending deletion is reconciled no more
                versions = list(KeyMaterial.objects.filter(key=key).order_by("version"))
                view = sandbox_view(aws_sandbox, key)
                assert [(v.kms_key_material_id, v.state) for v in versions] == [
                    (m["id"], m["state"]) for m in view["materials"]
                ]
                assert key.material_version == versions[-1].version  # nothing staged is left behind
                assert key.rotations == len(versions) - 1

    run_state_machine_as_test(
        KeyLifecycle,
        settings=settings(
            max_examples=12,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
    assert verify().ok
