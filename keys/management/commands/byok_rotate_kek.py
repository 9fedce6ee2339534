"""Re-wrap every key's sealed material under the current KEK.

Rotation: set ``BYOK_KEK`` (or ``BYOK_KEK_FILE``) to the new KEK and
``BYOK_KEK_PREVIOUS`` to the old one(s), restart, run this command, then drop the
old KEK from ``BYOK_KEK_PREVIOUS``. Each row is re-sealed under a row lock in its
own transaction, so the command can be interrupted and run again.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.identity import Actor
from audit.services import record
from byok_portal.vocabulary import Operation, Outcome
from keys import custody
from keys.models import Key


class Command(BaseCommand):
    help = "Re-seal every key's material under the current KEK (after setting BYOK_KEK_PREVIOUS to the old one)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, batch_size: int, **options: Any) -> None:
        rewrapped = already = 0
        last_pk = None
        while True:
            page = Key.objects.exclude(material_sealed=None).order_by("pk")
            if last_pk is not None:
                page = page.filter(pk__gt=last_pk)
            ids = list(page.values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            last_pk = ids[-1]
            for key_id in ids:
                with transaction.atomic():
                    key = Key.objects.select_for_update().get(pk=key_id)
                    if not key.material_sealed:
                        continue  # cleaned up meanwhile
                    if custody.sealed_with_current_kek(bytes(key.material_sealed)):
                        already += 1
                        continue
                    material = custody.unseal(key.pk, key.material_sealed)
                    try:
                        key.material_sealed = custody.seal(key.pk, material)
                    finally:
                        custody.wipe(material)
                    key.save(update_fields=["material_sealed"])
                    rewrapped += 1
        with transaction.atomic():
            record(
                actor=Actor.system("kek-rotation"),
                operation=Operation.ROTATE_KEK,
                outcome=Outcome.SUCCESS,
                details={"rewrapped": rewrapped, "already_current": already},
            )
        self.stdout.write(f"re-wrapped {rewrapped} key(s); {already} already under the current KEK")
