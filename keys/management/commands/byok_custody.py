"""``byok_custody init`` creates the HSM KEK if absent; ``byok_custody status`` reports the token (SPEC §13)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys import custody, hsm


class Command(BaseCommand):
    help = (
        "Custody backend: `init` creates the KEK in the PKCS#11 token if absent; `status` reports token and mechanisms."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["init", "status"])

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if custody.backend() != custody.PKCS11:
            if action == "init":
                raise CommandError("BYOK_CUSTODY=software: the KEK is BYOK_KEK/BYOK_KEK_FILE, nothing to initialise")
            self.stdout.write("backend: software (AES-256-GCM under BYOK_KEK)")
            return
        try:
            if action == "init":
                info, created = hsm.init_kek()
                verb = "created" if created else "already present:"
                self.stdout.write(f"KEK {verb} label={info.label} id={info.kek_id.hex()}")
                return
            status = hsm.status()
        except hsm.HsmError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("backend: pkcs11")
        self.stdout.write(f"module: {status.module}")
        self.stdout.write(f"token: {status.token_label} ({status.manufacturer} {status.model})")
        if status.kek is None:
            self.stdout.write("KEK: MISSING (run `manage.py byok_custody init`)")
        else:
            self.stdout.write(f"KEK: label={status.kek.label} id={status.kek.kek_id.hex()}")
        for name, present in sorted(status.mechanisms.items()):
            self.stdout.write(f"mechanism {name}: {'yes' if present else 'MISSING'}")
        self.stdout.write(f"mechanism CKM_RSA_PKCS_OAEP with SHA-256: {'yes' if status.oaep_sha256 else 'MISSING'}")
        self.stdout.write(f"wrapping for KMS and downloads: {hsm.wrapping_algorithm()}")
        if not status.oaep_sha256 and hsm.wrapping_algorithm() != "RSAES_OAEP_SHA_1":
            self.stdout.write("  -> this token needs BYOK_PKCS11_OAEP_HASH=SHA1")
        if status.kek is None or not all(status.mechanisms.values()):
            raise CommandError("the token is not ready for BYOK_CUSTODY=pkcs11 (see above)")
