"""The audit layer's own guard: material, tokens and keys that a careless caller passes never get stored."""

from __future__ import annotations

import base64
import json
import logging
import secrets

import pytest
from django.db import connection

from audit import chain
from audit.models import AuditEvent
from tests.audit.conftest import World, record_event

CANARY = secrets.token_bytes(32)
CANARY_HEX = CANARY.hex()
CANARY_B64 = base64.b64encode(CANARY).decode()
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImF1ZCI6ImJ5b2sifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
PEM = "\n".join(
    [
        "-----BEGIN PUBLIC KEY-----",
        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo",
        "-----END PUBLIC KEY-----",
    ]
)


def _stored_text() -> str:
    """Every audit row as PostgreSQL or SQLite stores it, as one string to grep."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM audit_auditevent")
        return json.dumps(cursor.fetchall(), default=str)


def test_secret_named_details_are_redacted(world: World) -> None:
    event = record_event(
        world.bob,
        key=world.key_b,
        details={
            "material": CANARY_HEX,
            "Plaintext": "x",
            "import_token": "abc",
            "public_key": "whatever",
            "nested": {"wrapped_key_material": "y", "kek": "z", "fine": "kept"},
            "public_key_fingerprint": "SHA256:" + "ab" * 32,
        },
    )

    assert event.details == {
        "material": "[redacted]",
        "Plaintext": "[redacted]",
        "import_token": "[redacted]",
        "public_key": "[redacted]",
        "nested": {"wrapped_key_material": "[redacted]", "kek": "[redacted]", "fine": "kept"},
        "public_key_fingerprint": "SHA256:" + "ab" * 32,
    }


@pytest.mark.parametrize(
    "secret",
    [CANARY_HEX, CANARY_HEX.upper(), CANARY_B64, JWT, PEM, base64.b64encode(secrets.token_bytes(256)).decode()],
    ids=["hex", "HEX", "base64", "jwt", "pem", "wrapped-blob"],
)
def test_secret_looking_values_are_redacted_wherever_they_appear(world: World, secret: str) -> None:
    record_event(
        world.bob,
        key=world.key_b,
        error=f"ImportKeyMaterial failed for {secret} (oops)",
        reason=secret,
        kms_request_ids=[secret],
        details={"note": f"value={secret}", "list": [secret]},
    )

    stored = _stored_text()
    assert secret not in stored
    assert secret.replace("\n", "\\n") not in stored
    assert "[redacted]" in AuditEvent.objects.get().error
    assert chain.verify().ok


def test_the_canary_never_reaches_the_database_or_the_log(world: World, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        record_event(world.bob, key=world.key_b, error=CANARY_HEX, details={"material": CANARY_HEX, "x": CANARY_B64})

    assert CANARY_HEX not in _stored_text()
    assert CANARY_B64 not in _stored_text()
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert CANARY_HEX not in logged
    assert CANARY_B64 not in logged
    assert "redacted" in logged


def test_ordinary_values_are_kept(world: World) -> None:
    arn = world.key_b.kms_key_arn
    event = record_event(
        world.bob,
        key=world.key_b,
        error=f"KMSInvalidStateException: {arn} is pending import",
        kms_request_ids=["4c1a8a3e-1f0e-4d7b-9a55-0f5cbe1e2a11"],
        details={"alias": "alias/payments-2024", "role_arn": "arn:aws:iam::222222222222:role/byok/portal"},
    )

    assert event.error == f"KMSInvalidStateException: {arn} is pending import"
    assert event.kms_request_ids == ["4c1a8a3e-1f0e-4d7b-9a55-0f5cbe1e2a11"]
    assert event.details["role_arn"] == "arn:aws:iam::222222222222:role/byok/portal"


def test_details_become_json_that_survives_the_database(world: World) -> None:
    import datetime as dt
    import uuid

    key_id = uuid.uuid4()
    record_event(
        world.bob,
        key=world.key_b,
        details={"when": dt.date(2030, 1, 2), "id": key_id, "ratio": 1e100, "neg": -0.0, "set": {"b", "a"}, 3: "x"},
    )

    event = AuditEvent.objects.get()
    assert event.details == {
        "when": "2030-01-02",
        "id": str(key_id),
        "ratio": "1e+100",
        "neg": "-0.0",
        "set": ["a", "b"],
        "3": "x",
    }
    assert chain.verify().ok
