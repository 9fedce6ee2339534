"""Key material is sacred: a canary material value must appear nowhere it could leak.

One key's material is replaced by a recognisable canary (for an EC key: a fixed
private key, searched for whole and as its bare private scalar), then the key goes
through its whole life by every door — services, the REST API, the pages, the
Celery tasks — including a failed AWS call and a refused download. Afterwards
the canary (raw, hex in either case, base64) is searched for in every table of
the database, every log record, every task payload, every HTTP response body
and every exception message. Only the download, wrapped with the requester's
RSA key, may carry it, and there only encrypted.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.apps import apps
from django.db import connection
from rest_framework.test import APIClient

from byok_portal.aws import AwsError, KmsSession
from keys import custody, services, tasks
from keys.jobs import reconcile
from keys.models import Key
from tests.custody.memscan import forms_of
from tests.keys.helpers import current_sealed, public_pem
from tests.web import verified_client

pytestmark = pytest.mark.django_db

CANARY = bytes.fromhex("c0ffee00" * 8)
# An EC private key as the canary of an asymmetric key: its PKCS#8 DER, and its private scalar alone.
_EC_CANARY = ec.derive_private_key(int.from_bytes(bytes.fromhex("c0ffee01" * 8)), ec.SECP256R1())
EC_CANARY = _EC_CANARY.private_bytes(
    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
CANARIES = {"SYMMETRIC_DEFAULT": (CANARY,), "ECC_NIST_P256": (EC_CANARY, bytes.fromhex("c0ffee01" * 8))}


SECRETS: list[bytes] = [CANARY]  # the canaries of the test running now


def assert_clean(haystack: bytes | str, where: str) -> None:
    data = haystack.encode() if isinstance(haystack, str) else haystack
    for secret in SECRETS:
        for form in forms_of(secret):
            if form in data:  # not a bare assert: pytest would print the haystack, material and all
                pytest.fail(f"key material found in {where}", pytrace=False)


def database_dump() -> bytes:
    """Every row of every table, as PostgreSQL or SQLite renders it."""
    chunks: list[bytes] = []
    with connection.cursor() as cursor:
        for model in apps.get_models(include_auto_created=True):
            table = model._meta.db_table
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names come from the models
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        chunks.append(bytes(value))
                    else:
                        chunks.append(str(value).encode())
    return b"\n".join(chunks)


@pytest.mark.parametrize("key_spec", sorted(CANARIES))
def test_the_canary_material_is_nowhere_but_inside_the_wrapped_download(
    people: Any,
    keystore: Any,
    aws_sandbox: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    key_spec: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    material = CANARIES[key_spec][0]
    monkeypatch.setattr("tests.test_canary.SECRETS", list(CANARIES[key_spec]))
    monkeypatch.setattr(custody, "generate_material", lambda *spec: bytearray(material))
    bob, carol = people.actor(people.bob), people.actor(people.carol)
    responses: list[bytes] = []
    payloads: list[str] = []
    errors: list[str] = []

    def record_task(self: Any, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        payloads.append(json.dumps([args, kwargs], default=str))

    monkeypatch.setattr("celery.app.task.Task.apply_async", record_task)

    key = services.key_create(
        actor=bob, keystore_id=keystore.pk, name="canary", alias="alias/canary", key_spec=key_spec
    ).key
    # The canary really is this key's material.
    checks = custody.check_values(key_spec, material)
    assert (checks.kcv, checks.public_key_sha256) == (key.kcv, key.public_key_sha256)

    api = APIClient()
    api.force_authenticate(people.bob)
    web = verified_client(people.bob)
    for path in (f"/api/v1/keys/{key.pk}/", "/api/v1/keys/", f"/api/v1/keys/{key.pk}/upload/"):
        method = api.post if path.endswith("upload/") else api.get
        responses.append(method(path).content)
    for page in (f"/keys/{key.pk}/", "/keys/", "/", f"/audit/?key={key.pk}"):
        response = web.get(page)
        assert response.status_code == 200, page
        responses.append(response.content)

    # A failed KMS call: its error message and audit event must not carry the material either.
    real_call = KmsSession._call

    def failing_import(self: KmsSession, operation: str, **kwargs: Any) -> Any:
        if operation == "ImportKeyMaterial":
            raise AwsError(kind="kms_error", operation=operation, code="KMSInternalException", message="injected")
        return real_call(self, operation, **kwargs)

    services.key_deactivate(actor=bob, key_id=key.pk)
    monkeypatch.setattr(KmsSession, "_call", failing_import)
    with pytest.raises(AwsError) as failure:
        services.key_activate(actor=bob, key_id=key.pk)
    errors.append(str(failure.value))
    monkeypatch.setattr(KmsSession, "_call", real_call)
    services.key_activate(actor=bob, key_id=key.pk)
    # Material expiry (SPEC §10): the hourly re-import task, as beat starts it, imports every version again.
    Key.objects.filter(pk=key.pk).update(material_valid_days=30)
    assert tasks.reimport_expiring_materials.run()["reimported"] == 1
    responses.append(web.get(f"/keys/{key.pk}/").content)

    # The two-person download: refused for the preparer, then done by someone else.
    services.key_prepare_download(actor=bob, key_id=key.pk, public_key_pem=public_pem())
    refused = api.post(f"/api/v1/keys/{key.pk}/download/")
    assert refused.status_code == 403
    responses.append(refused.content)
    carol_api = APIClient()
    carol_api.force_authenticate(people.carol)
    download = carol_api.post(f"/api/v1/keys/{key.pk}/download/")
    assert download.status_code == 200
    assert_clean(json.dumps({k: v for k, v in download.json().items() if k != "wrapped_key_material"}), "download")
    assert_clean(base64.b64decode(download.json()["wrapped_key_material"]), "the wrapped material")

    # Background work, as Celery beat would start it; the audit export.
    services.key_renew(actor=carol, key_id=key.pk)
    reconcile.reconcile_keystore(keystore.pk, actor=services.Actor.system("test"))
    tasks.reconcile_all.run()
    services.key_schedule_deletion(actor=bob, key_id=key.pk)
    export = web.get("/api/v1/audit/events/export/?format=jsonl")
    responses.append(b"".join(export.streaming_content))  # type: ignore[attr-defined]

    assert current_sealed(key)  # still held (sealed) until cleanup
    assert_clean(database_dump(), "the database")
    for record in caplog.records:
        assert_clean(record.getMessage() + json.dumps(record.__dict__, default=str), f"log record {record.name}")
    for payload in payloads:
        assert_clean(payload, "a Celery task payload")
    assert payloads, "the reconciliation fan-out sent no task: the payload check checked nothing"
    for body in responses:
        assert_clean(body, "an HTTP response")
    for error in errors:
        assert_clean(error, "an exception message")
