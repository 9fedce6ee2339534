"""On BYOK_CUSTODY=pkcs11 the plaintext material never enters the portal process (SPEC §13).

Two keys (symmetric and HMAC) go through creation, deactivation, reactivation (a
re-import) and a two-person download against the sandbox AWS, with every log record
kept. Then:

- every custody function the services use hands out :class:`~keys.hsm.HsmMaterial`
  or wrapped bytes, never plaintext;
- the database holds only HSM blobs, which no software KEK opens;
- a *separate* process (tests/custody/memscan.py) unwraps the downloads with the
  downloader's private key (so only it learns the material), checks each against the
  key's KCV, and searches this process's whole readable memory and the evidence (logs,
  every table, audit) for the material, raw, hex and base64. A control value this
  process holds must be found, so the scan provably reads this process's memory.

The sandbox AWS runs in a process of its own here, as AWS would: it decrypts what is
imported and keeps the material, which would otherwise sit in this process. SoftHSM2
itself is a library inside this process (a real HSM is a device); it wipes a key object's
memory when the object is destroyed, which this test also relies on.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

from keys import custody, hsm, services
from keys.models import Key
from tests.custody.softhsm import SoftHsmToken
from tests.keys.helpers import current_sealed, public_pem, rsa_private_key
from tests.test_canary import database_dump

pytestmark = pytest.mark.django_db

SOFTWARE_KEKS = [b"k" * 32, b"n" * 32]  # the suite's BYOK_KEK and the KEK rotation test's new one


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    """The sandbox AWS in a process of its own (overrides the suite's in-process one for this module)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "sandbox_aws", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "sandbox AWS listening on http://127.0.0.1:PORT (...)"
        yield line.split(" on ", 1)[1].split()[0]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_material_is_nowhere_in_the_portal_process(
    pkcs11_custody: SoftHsmToken,
    people: Any,
    keystore: Any,
    aws_sandbox: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    bob, carol = people.actor(people.bob), people.actor(people.carol)
    downloads = []
    for spec in ("SYMMETRIC_DEFAULT", "HMAC_256"):
        key = services.key_create(actor=bob, keystore_id=keystore.pk, name=spec, key_spec=spec).key
        services.key_deactivate(actor=bob, key_id=key.pk)
        services.key_activate(actor=bob, key_id=key.pk)
        # What the custody API hands out on this path: handles and wrapped bytes only.
        opened = custody.unseal(key.pk, current_sealed(key) or b"")
        assert isinstance(opened, hsm.HsmMaterial)
        assert isinstance(custody.generate_material(spec), hsm.HsmMaterial)
        services.key_prepare_download(actor=bob, key_id=key.pk, public_key_pem=public_pem())
        released = services.key_download(actor=carol, key_id=key.pk)
        downloads.append(
            {
                "key_spec": spec,
                "algorithm": released.wrapping_algorithm,
                "wrapped": released.wrapped_b64,
                "kcv": key.kcv,
            }
        )

    # The database holds only HSM blobs, and no software KEK opens them.
    for key in Key.objects.all():
        blob = current_sealed(key) or b""
        assert blob.startswith(hsm.FORMAT_HSM)
        wrapped = hsm.parse(blob)[0].wrapped
        for software_kek in SOFTWARE_KEKS:
            with pytest.raises(InvalidUnwrap):
                aes_key_unwrap_with_padding(software_kek, wrapped)
        with pytest.raises(custody.CustodyError):
            custody.unseal_software(key.pk, blob)

    evidence = tmp_path / "evidence.bin"
    evidence.write_bytes(caplog.text.encode() + b"\n" + database_dump())
    control = bytearray(secrets.token_bytes(32))  # held by this process until the scan is done
    case = tmp_path / "case.json"
    private_pem = rsa_private_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    case.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "evidence": str(evidence),
                "control_hex": control.hex(),
                "private_key_pem": private_pem.decode(),
                "downloads": downloads,
            }
        )
    )
    scan = subprocess.run(
        [sys.executable, "-m", "tests.custody.memscan", str(case)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    found = json.loads(scan.stdout)
    assert found["kcvs"] == [d["kcv"] for d in downloads]  # the scanner searched for the keys' own material
    assert found["material_lengths"] == [32, 32]
    assert found["control_in_memory"] >= 1  # it does read this process's memory
    assert found["bytes_scanned"] > 50 * 1024 * 1024
    assert (found["in_memory"], found["in_evidence"]) == (0, 0)
    assert control  # kept alive up to here
