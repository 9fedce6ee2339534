"""Every endpoint × role × own/other keystore, with the exact status code.

Members see their keystore's objects; a role too weak is a 403; outsiders get the
same 404 as for an object that does not exist; anonymous callers a 401. Requests are
chosen so that, past the permission check, nothing needs KMS (no-ops, 409s and
reads), except creating a key, which runs against the sandbox.
"""

from __future__ import annotations

from typing import Any

import pytest

from keys.models import Key
from keystores.models import Keystore
from tests.conftest import REGION
from tests.keys.helpers import public_pem

pytestmark = pytest.mark.django_db

ROLES = ("admin", "custodian", "auditor", "outsider", "anonymous")


def _expect(admin: int, custodian: int, auditor: int, outsider: int = 404) -> dict[str, int]:
    return {"admin": admin, "custodian": custodian, "auditor": auditor, "outsider": outsider, "anonymous": 401}


# name: (method, path, body, key state, expected status in the caller's own keystore)
ENDPOINTS: dict[str, tuple[str, str, Any, str, dict[str, int]]] = {
    "keystore-read": ("GET", "/api/v1/keystores/{ks}/", None, "ACTIVE", _expect(200, 200, 200)),
    "keystore-edit": ("PATCH", "/api/v1/keystores/{ks}/", {"name": "x"}, "ACTIVE", _expect(200, 403, 403)),
    "keystore-delete": ("DELETE", "/api/v1/keystores/{ks}/", None, "ACTIVE", _expect(409, 403, 403)),
    "keystore-test": ("POST", "/api/v1/keystores/{ks}/test-connection/", None, "ACTIVE", _expect(200, 200, 403)),
    "keystore-iam": ("GET", "/api/v1/keystores/{ks}/iam-policy/", None, "ACTIVE", _expect(200, 200, 200)),
    "key-create": ("POST", "/api/v1/keys/", {"keystore": "{ks}", "name": "n"}, "ACTIVE", _expect(201, 201, 403)),
    "key-read": ("GET", "/api/v1/keys/{key}/", None, "ACTIVE", _expect(200, 200, 200)),
    "key-edit": ("PATCH", "/api/v1/keys/{key}/", {"name": "y"}, "PENDING_DELETION", _expect(409, 409, 403)),
    "deactivate": ("POST", "/api/v1/keys/{key}/deactivate/", None, "INACTIVE", _expect(200, 200, 403)),
    "activate": ("POST", "/api/v1/keys/{key}/activate/", None, "ACTIVE", _expect(200, 200, 403)),
    "upload": ("POST", "/api/v1/keys/{key}/upload/", None, "INACTIVE", _expect(409, 409, 403)),
    "renew": ("POST", "/api/v1/keys/{key}/renew/", None, "INACTIVE", _expect(409, 409, 403)),
    "rotate": ("POST", "/api/v1/keys/{key}/rotate/", None, "INACTIVE", _expect(409, 409, 403)),
    "materials": ("GET", "/api/v1/keys/{key}/materials/", None, "ACTIVE", _expect(200, 200, 200)),
    "schedule-deletion": (
        "POST",
        "/api/v1/keys/{key}/schedule-deletion/",
        None,
        "PENDING_DELETION",
        _expect(200, 200, 403),
    ),
    "cancel-deletion": ("POST", "/api/v1/keys/{key}/cancel-deletion/", None, "ACTIVE", _expect(409, 409, 403)),
    "recreate": ("POST", "/api/v1/keys/{key}/recreate/", None, "PENDING_DELETION", _expect(409, 409, 403)),
    # A state that refuses it: 409 past the role check (a single-Region key: tests/api/test_multi_region_keys.py).
    "add-replica": (
        "POST",
        "/api/v1/keys/{key}/add-replica/",
        {"region": "us-east-1"},
        "INACTIVE",
        _expect(409, 409, 403),
    ),
    "prepare-download": (
        "POST",
        "/api/v1/keys/{key}/prepare-download/",
        {"public_key": "{pem}"},
        "ACTIVE",
        _expect(200, 200, 403),
    ),
    "download": ("POST", "/api/v1/keys/{key}/download/", None, "ACTIVE", _expect(409, 409, 403)),
    # Nothing prepared: 409 past the role check (who else may withdraw: tests/api/test_download_preparation.py).
    "withdraw-download": ("POST", "/api/v1/keys/{key}/withdraw-download/", None, "ACTIVE", _expect(409, 409, 403)),
}


def _fill(value: Any, ks: Keystore, key: Key) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, ks, key) for k, v in value.items()}
    if isinstance(value, str):
        return value.format(ks=ks.pk, key=key.pk) if "{pem}" not in value else public_pem()
    return value


@pytest.fixture
def other_keystore(people: Any, aws_sandbox: str) -> Keystore:
    """A keystore none of the personas is a member of."""
    from keystores.services import keystore_create

    account = "210987654321"
    return keystore_create(
        actor=people.actor(people.root),
        name="Elsewhere",
        aws_account_id=account,
        region=REGION,
        role_arn=f"arn:aws:iam::{account}:role/byok-portal",
    )


@pytest.mark.parametrize("whose", ["own", "other"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_permission_matrix(
    endpoint: str, role: str, whose: str, api_as: Any, people: Any, keystore: Any, other_keystore: Keystore
) -> None:
    method, path, body, state, expected = ENDPOINTS[endpoint]
    target = keystore if whose == "own" else other_keystore
    key = Key.objects.create(keystore=target, name="k", state=state, kms_key_arn="arn:aws:kms:x:1:key/none")
    user = {"admin": people.alice, "custodian": people.bob, "auditor": people.dan, "outsider": people.eve}.get(role)
    status = expected[role] if whose == "own" or role == "anonymous" else 404
    api_as(user).call(method, _fill(path, target, key), _fill(body, target, key), expect=status)


@pytest.mark.parametrize(("role", "status"), [("admin", 200), ("auditor", 200), ("outsider", 200), ("anonymous", 401)])
def test_lists_are_open_to_every_authenticated_caller_but_scoped(
    role: str, status: int, api_as: Any, people: Any, keystore: Any, other_keystore: Keystore
) -> None:
    Key.objects.create(keystore=other_keystore, name="hidden")
    user = {"admin": people.alice, "auditor": people.dan, "outsider": people.eve}.get(role)
    for url in ("/api/v1/keystores/", "/api/v1/keys/"):
        response = api_as(user).get(url, expect=status)
        if status == 200:
            visible = {row.get("keystore", row["id"]) for row in response.json()["results"]}
            assert str(other_keystore.pk) not in visible


@pytest.mark.parametrize(("user", "status"), [("alice", 201), ("bob", 403), ("eve", 403), (None, 401)])
def test_creating_keystores_needs_the_creator_permission(
    user: str | None, status: int, api_as: Any, people: Any, aws_sandbox: str
) -> None:
    account = "345678901234"
    body = {"name": "n", "aws_account_id": account, "region": REGION, "role_arn": f"arn:aws:iam::{account}:role/r"}
    api_as(getattr(people, user) if user else None).post("/api/v1/keystores/", body, expect=status)


def test_every_operation_the_registry_offers_in_the_api_has_a_row_in_the_matrix() -> None:
    """A new registry entry cannot reach the API without its permission row here."""
    from keys.operations import API_ACTIONS

    paths = {path for _method, path, *_ in ENDPOINTS.values()}
    for entry in API_ACTIONS:
        assert f"/api/v1/keys/{{key}}/{entry.slug}/" in paths, entry.operation
