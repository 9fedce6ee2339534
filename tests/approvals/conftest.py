"""Fixtures of the dual-control tests: a keystore's policy, real keys in the sandbox, clients per person."""

from __future__ import annotations

from typing import Any

import pytest

from approvals.models import ApprovalPolicy
from byok_portal.vocabulary import Operation
from keys.models import Key
from keys.operations import REGISTRY
from tests.api.conftest import Api, _fresh_throttles, api_as  # noqa: F401 - fixtures shared with the API tests
from tests.keys.helpers import public_pem
from tests.tasks.conftest import make_key  # noqa: F401 - a key row without a KMS key, for work that never calls KMS

# The covered key operations (SPEC §12): the API path slug, its body, its group, and what it leaves.
KEY_OPERATIONS: dict[str, dict[str, Any]] = {
    "deactivate": {"body": None, "group": "disable", "after": {"state": "INACTIVE"}},
    "renew": {"body": {"name": "renewed"}, "group": "change_material", "after": {"state": "REPLACED"}},
    "schedule-deletion": {
        "body": {"pending_window_days": 7},
        "group": "destroy",
        "after": {"state": "PENDING_DELETION"},
    },
    "prepare-download": {"body": {"public_key": public_pem()}, "group": "export", "after": {"download_prepared": True}},
}


def set_policy(keystore: Any, **required: Any) -> ApprovalPolicy:
    """The keystore's policy, written directly: the policy change itself is tested through its own door."""
    policy, _ = ApprovalPolicy.objects.update_or_create(keystore=keystore, defaults=required)
    return policy


@pytest.fixture
def new_key(people: Any, keystore: Any) -> Any:
    """``new_key()`` → an ACTIVE key with its KMS key in the sandbox, created by bob."""

    def make(name: str = "orders") -> Key:
        return REGISTRY[Operation.CREATE].run(people.actor(people.bob), keystore.pk, {"name": name}).key

    return make


def approve(api: Api, request_id: str, *, expect: int = 200) -> dict[str, Any]:
    body: dict[str, Any] = api.post(f"/api/v1/approvals/{request_id}/approve/", expect=expect).json()
    return body
