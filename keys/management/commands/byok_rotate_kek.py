"""Re-wrap every key's sealed material under the current KEK: a thin caller of :func:`keys.jobs.kek.rotate_kek`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.identity import Actor
from keys.jobs.kek import rotate_kek


class Command(BaseCommand):
    help = "Re-seal every key's material under the current KEK (after setting BYOK_KEK_PREVIOUS to the old one)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, batch_size: int, **options: Any) -> None:
        done = rotate_kek(actor=Actor.system("kek-rotation"), batch_size=batch_size)
        self.stdout.write(f"re-wrapped {done.rewrapped} key(s); {done.already_current} already under the current KEK")
        for name, count in done.others_resealed.items():
            self.stdout.write(f"re-sealed {count} {name} secret(s)")
