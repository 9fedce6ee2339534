"""What the gate costs a covered operation that needs no approval: a constant number of queries."""

from __future__ import annotations

from typing import Any

import pytest

from approvals import services
from byok_portal.dual_control import ApprovalGroup, Covered
from tests.approvals.conftest import set_policy

pytestmark = pytest.mark.django_db


def test_the_gate_costs_three_queries_under_a_policy_of_zero(
    people: Any, keystore: Any, make_key: Any, django_assert_num_queries: Any
) -> None:
    """The key with its keystore, the caller's role, the keystore's policy; then the operation runs."""
    set_policy(keystore, disable=0, destroy=2)
    key = make_key()
    attempt = Covered(ApprovalGroup.DISABLE, "deactivate", key_id=key.pk)
    with django_assert_num_queries(3):
        services.gate(people.actor(people.bob), attempt)
