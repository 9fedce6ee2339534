"""``manage.py audit_head``: print the chain's current ``(seq, hash)`` for external anchoring."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from audit import chain


class Command(BaseCommand):
    help = (
        "Print the current head of the audit hash chain as JSON {seq, hash}. Publish it somewhere the database's "
        "administrators cannot rewrite; `audit_verify --expect-seq/--expect-hash` then detects a cut-off tail."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        seq, digest = chain.current_head()
        self.stdout.write(json.dumps({"seq": seq, "hash": digest}))
