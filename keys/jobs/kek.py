"""KEK rotation: re-seal every key's material (every version of it) under the current KEK, within a backend or
between them.

- ``software``: set ``BYOK_KEK`` (or ``BYOK_KEK_FILE``) to the new KEK and
  ``BYOK_KEK_PREVIOUS`` to the old one(s), restart, run ``byok_rotate_kek``, then drop
  the old KEK from ``BYOK_KEK_PREVIOUS``. Blobs sealed before material versions existed
  are brought to the current format on the way.
- ``pkcs11``: set ``BYOK_PKCS11_KEK_LABEL`` to a new label, run ``byok_custody init``
  (a new KEK in the token) and ``byok_rotate_kek``: each blob names the KEK that wrapped
  it, so the HSM unwraps it under the old KEK and wraps it under the new one; the
  plaintext never leaves the token. Delete the old KEK from the token afterwards.
- ``software`` → ``pkcs11`` (migrating an installation): keep ``BYOK_KEK`` set, switch
  to ``BYOK_CUSTODY=pkcs11``, ``byok_custody init``, ``byok_rotate_kek``: each
  software-sealed material version is opened one last time and moved into the HSM. Keys
  of a spec the HSM cannot hold (RSA and EC; see :func:`keys.hsm.check_spec`) cannot move:
  the run refuses before it starts.
  The way back (pkcs11 → software) would take the material out of the HSM: refused.

Each key's versions are re-sealed under the key's row lock in its own transaction, so the
rotation can be interrupted and run again. Secrets other apps seal under the software KEK
(webhook signing secrets) are re-sealed by the same run, through the re-sealers those apps
hand in at start-up (:func:`reseal_also`): after one run nothing is left under the old KEK,
so dropping it from ``BYOK_KEK_PREVIOUS`` loses nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction

from accounts.identity import Actor
from audit.services import record
from byok_portal.vocabulary import Operation, Outcome
from keys import custody, hsm
from keys.models import Key, KeyMaterial


@dataclass(frozen=True)
class KekRotation:
    """What one rotation run did."""

    rewrapped: int
    already_current: int
    moved_into_hsm: int = 0
    #: Per re-sealer (e.g. ``webhooks``): how many of its secrets it re-sealed.
    others_resealed: dict[str, int] = field(default_factory=dict)


#: Re-seals one kind of software-sealed secret under the current KEK; returns how many it re-sealed.
Resealer = Callable[[], int]
_resealers: dict[str, Resealer] = {}


def reseal_also(name: str, resealer: Resealer) -> None:
    """Make every KEK rotation re-seal ``name`` too (apps above ``keys`` call this from ``ready()``)."""
    _resealers[name] = resealer


def _refuse_impossible_moves() -> None:
    """Refuse, before touching any row, a rotation that cannot finish (see the module docstring)."""
    sealed = KeyMaterial.objects.exclude(material_sealed=None)
    if custody.backend() == custody.SOFTWARE:
        if any(
            not custody.is_software_sealed(bytes(blob or b""))
            for blob in sealed.values_list("material_sealed", flat=True).iterator()
        ):
            raise custody.CustodyError(
                "Some material is held by the HSM: BYOK_CUSTODY=software cannot take it out (set BYOK_CUSTODY=pkcs11)"
            )
        return
    stuck: dict[str, str] = {}
    for spec, blob in sealed.values_list("key__key_spec", "material_sealed").iterator():
        if custody.is_software_sealed(bytes(blob or b"")) and spec not in stuck:
            try:
                hsm.check_spec(spec)
            except hsm.UnsupportedSpec as exc:
                stuck[spec] = str(exc)
    if stuck:
        raise custody.CustodyError(
            f"Keys of {', '.join(sorted(stuck))} are sealed under the software KEK and cannot move into this HSM "
            f"({' '.join(stuck.values())}); nothing was changed"
        )


def reseal(key_id: uuid.UUID, key_spec: str, blob: bytes, version: int = 1) -> tuple[bytes, bool]:
    """Version ``version``'s ``blob`` sealed under the current KEK of the configured backend, and whether it moved
    into the HSM."""
    if custody.backend() == custody.PKCS11 and custody.is_software_sealed(blob):
        plaintext = custody.unseal_software(key_id, blob, version)
        try:
            return custody.seal(key_id, hsm.import_plaintext(key_spec, plaintext), version), True
        finally:
            custody.wipe(plaintext)
    material = custody.unseal(key_id, blob, version)
    try:
        if isinstance(material, hsm.HsmMaterial):
            return custody.seal(key_id, hsm.rewrap(material), version), False
        return custody.seal(key_id, material, version), False
    finally:
        custody.wipe(material)


def rotate_kek(*, actor: Actor, batch_size: int = 500) -> KekRotation:
    """Re-seal every sealed material not yet under the current KEK, and audit the run."""
    _refuse_impossible_moves()
    rewrapped = already = moved = 0
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
                    version.material_sealed, into_hsm = reseal(key.pk, key.key_spec, sealed, version.version)
                    version.save(update_fields=["material_sealed"])
                    rewrapped += 1
                    moved += into_hsm
    others = {name: _resealers[name]() for name in sorted(_resealers)}
    with transaction.atomic():
        record(
            actor=actor,
            operation=Operation.ROTATE_KEK,
            outcome=Outcome.SUCCESS,
            # Names without "wrapped"/"secret"/"kek": the trail redacts entries so named (audit.services).
            details={
                "resealed": rewrapped,
                "already_current": already,
                "moved_into_hsm": moved,
                "others_resealed": others,
            },
        )
    return KekRotation(rewrapped=rewrapped, already_current=already, moved_into_hsm=moved, others_resealed=others)
