"""``manage.py audit_verify``: walk the audit hash chain and report the first bad event."""

from __future__ import annotations

import json
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import chain


class Command(BaseCommand):
    help = (
        "Verify the audit hash chain. Prints one JSON object (ok, events, first_bad, problem, head) and exits "
        "non-zero when the chain is broken. Give a head published earlier with --expect-seq/--expect-hash to "
        "also detect a cut-off tail."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--expect-seq", type=int, help="Sequence number of a published head.")
        parser.add_argument("--expect-hash", help="Hash of that published head (64 hex digits).")

    def handle(self, *args: Any, **options: Any) -> None:
        seq, digest = options["expect_seq"], options["expect_hash"]
        if (seq is None) != (digest is None):
            raise CommandError("Give --expect-seq and --expect-hash together.")
        if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise CommandError("--expect-hash must be 64 lower-case hex digits.")
        if seq is not None and seq < 0:
            raise CommandError("--expect-seq must not be negative.")
        result = chain.verify(expected_head=(seq, digest) if seq is not None and digest is not None else None)
        report = {
            "ok": result.ok,
            "events": result.events,
            "first_bad": result.first_bad,
            "problem": result.problem,
            "head": {"seq": result.head_seq, "hash": result.head_hash},
        }
        self.stdout.write(json.dumps(report))
        if not result.ok:
            raise CommandError(f"audit chain broken at event #{result.first_bad}: {result.problem}", returncode=1)
