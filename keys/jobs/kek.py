"""KEK rotation: re-seal every key's material (every version of it) under the current KEK.

Rotation: set ``BYOK_KEK`` (or ``BYOK_KEK_FILE``) to the new KEK and
``BYOK_KEK_PREVIOUS`` to the old one(s), restart, run ``byok_rotate_kek``, then drop
the old KEK from ``BYOK_KEK_PREVIOUS``. Each row is re-sealed under a row lock in its
own transaction, so the rotation can be interrupted and run again. Blobs sealed before
material versions existed are brought to the current format on the way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import transaction

from accounts.identity import Actor
from audit.services import record
from byok_portal.vocabulary import Operation, Outcome
from keys import custody
from keys.models import Key, KeyMaterial


@dataclass(frozen=True)
class KekRotation:
    """What one rotation run did."""

    rewrapped: int
    already_current: int


def rotate_kek(*, actor: Actor, batch_size: int = 500) -> KekRotation:
    """Re-seal every sealed material not yet under the current KEK, and audit the run."""
    rewrapped = already = 0
    last_pk: uuid.UUID | None = None
    while True:
        page = Key.objects.filter(materials__material_sealed__isnull=False).distinct().order_by("pk")
        if last_pk is not None:
            page = page.filter(pk__gt=last_pk)
        ids = list(page.values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        last_pk = ids[-1]
        for key_id in ids:
            with transaction.atomic():
                # The key's row lock: what every operation on the key takes before it touches material.
                key = Key.objects.select_for_update().get(pk=key_id)
                for version in KeyMaterial.objects.filter(key=key).exclude(material_sealed=None):
                    sealed = bytes(version.material_sealed or b"")
                    if custody.sealed_with_current_kek(sealed):
                        already += 1
                        continue
                    material = custody.unseal(key.pk, sealed, version.version)
                    try:
                        version.material_sealed = custody.seal(key.pk, material, version.version)
                    finally:
                        custody.wipe(material)
                    version.save(update_fields=["material_sealed"])
                    rewrapped += 1
    with transaction.atomic():
        record(
            actor=actor,
            operation=Operation.ROTATE_KEK,
            outcome=Outcome.SUCCESS,
            details={"rewrapped": rewrapped, "already_current": already},
        )
    return KekRotation(rewrapped=rewrapped, already_current=already)
