"""Compare every managed key with KMS once, synchronously (what Celery beat's ``reconcile_all`` does)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from accounts.identity import Actor
from keys.jobs.reconcile import reconcile_everything


class Command(BaseCommand):
    help = "DescribeKey, aliases and tags for every managed key; store the KMS state and record drift."

    def handle(self, *args: Any, **options: Any) -> None:
        summary = reconcile_everything(actor=Actor.system("reconcile"))
        self.stdout.write(
            f"Reconciled {summary.checked} key(s) in {summary.keystores} keystore(s): "
            f"{summary.in_step} in step, {summary.drift} with drift, {summary.repaired} repaired, "
            f"{summary.errors} not checked (AWS error), {summary.skipped} skipped; "
            f"{summary.orphans_resolved} interrupted creation(s) resolved."
        )
        for keystore_id in summary.failed_keystores:
            self.stderr.write(f"Keystore {keystore_id}: KMS could not be reached (see the log).")
