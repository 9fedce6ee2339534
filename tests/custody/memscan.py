"""Run as a separate process: does another process's memory, or a file, hold given key material?

``python -m tests.custody.memscan CASE.json`` reads the case written by
test_plaintext_never.py: the pid to scan, a file of evidence (logs, database rows,
responses), a control value the scanned process holds, the downloads it released and
the PEM private key they were wrapped for. Only this process unwraps the downloads, so
only this process ever knows the material; it recomputes each KCV (so the material is
the key's own), then searches every readable mapping of the scanned process
(``/proc/PID/mem``) and the evidence for the material in raw, hex and base64 forms. It
prints JSON counts, never the material.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from byok_portal import wrapping
from keys.custody import hmac_kcv, kcv
from keys.specs import spec_of

_CHUNK = 16 * 1024 * 1024
_MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+)")


def forms_of(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def readable_regions(pid: int) -> list[tuple[int, int]]:
    regions = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        match = _MAPPING.match(line)
        if match and match.group(3).startswith("r") and not line.endswith(("[vvar]", "[vsyscall]")):
            regions.append((int(match.group(1), 16), int(match.group(2), 16)))
    return regions


def count_in_memory(pid: int, needles: list[bytes]) -> tuple[list[int], int]:
    """How often each needle occurs in the process's readable memory, and how many bytes were read."""
    counts = [0] * len(needles)
    overlap = max(len(n) for n in needles) - 1
    scanned = 0
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end in readable_regions(pid):
            offset, tail = start, b""
            while offset < end:
                try:
                    mem.seek(offset)
                    chunk = mem.read(min(_CHUNK, end - offset))
                except OSError:
                    break  # a mapping that cannot be read (guard pages, device memory)
                if not chunk:
                    break
                window = tail + chunk
                for i, needle in enumerate(needles):
                    counts[i] += window.count(needle) - tail.count(needle)
                scanned += len(chunk)
                tail = window[-overlap:] if overlap else b""
                offset += len(chunk)
    return counts, scanned


def main(case_path: str) -> None:
    case = json.loads(Path(case_path).read_text())
    private_key = serialization.load_pem_private_key(case["private_key_pem"].encode(), password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    materials: list[bytes] = []
    for download in case["downloads"]:
        material = wrapping.unwrap(download["algorithm"], private_key, base64.b64decode(download["wrapped"]))
        materials.append(material)
    needles = [form for material in materials for form in forms_of(material)]
    control = bytes.fromhex(case["control_hex"])
    counts, scanned = count_in_memory(int(case["pid"]), [*needles, control])
    evidence = Path(case["evidence"]).read_bytes()
    kcvs = [
        kcv(material)
        if download["key_spec"] == "SYMMETRIC_DEFAULT"
        else hmac_kcv(material, spec_of(download["key_spec"]).detail)
        for material, download in zip(materials, case["downloads"], strict=True)
    ]
    print(
        json.dumps(
            {
                "kcvs": kcvs,
                "material_lengths": [len(m) for m in materials],
                "in_memory": sum(counts[:-1]),
                "control_in_memory": counts[-1],
                "in_evidence": sum(evidence.count(needle) for needle in needles),
                "bytes_scanned": scanned,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
