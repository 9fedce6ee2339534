"""Run the daily cleanup once, synchronously (what Celery beat's ``cleanup_due_keys`` does)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.identity import Actor
from keys.jobs.cleanup import cleanup_due_keys


class Command(BaseCommand):
    help = "Delete keys whose deletion waiting period is over: state DELETED, the portal's material destroyed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=None, help="keys per transaction (default: setting)")

    def handle(self, *args: Any, **options: Any) -> None:
        summary = cleanup_due_keys(actor=Actor.system("cleanup"), batch_size=options["batch_size"])
        self.stdout.write(f"Cleaned up {summary.cleaned} key(s) in {summary.batches} batch(es).")
