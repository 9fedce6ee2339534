"""Whatever a caller records, verification hashes the stored row to the same bytes record() hashed."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.identity import Actor
from audit import chain
from audit.models import AuditEvent
from audit.services import record
from byok_portal.vocabulary import Outcome

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**20), max_value=10**20) | st.floats() | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
addresses = st.none() | st.ip_addresses().map(str)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=text, error=text, details=st.dictionaries(text, json_values, max_size=5), ip=addresses, state=text)
def test_any_recorded_event_verifies(db: Any, name: str, error: str, details: dict, ip: str | None, state: str) -> None:
    actor = Actor(iss="https://idp.example.com", sub=name or "s", display_name=name, source_ip=ip)
    record(
        actor=actor,
        operation="update",
        outcome=Outcome.FAILED,
        error=error,
        details=details,
        state_before=state[:20],
        kms_request_ids=[name, str(uuid.uuid4())],
    )

    result = chain.verify()
    assert result.ok, (result.problem, AuditEvent.objects.order_by("-seq").values()[0])


@pytest.mark.parametrize("ip", ["::ffff:192.0.2.1", "::192.0.2.1", "2001:DB8::A", "fe80::1%eth0", "not an ip", ""])
def test_addresses_are_stored_in_one_spelling(db: Any, ip: str) -> None:
    event = record(
        actor=Actor(iss="i", sub="s", display_name="", source_ip=ip), operation="update", outcome=Outcome.SUCCESS
    )

    event.refresh_from_db()
    assert event.source_ip == {
        "::ffff:192.0.2.1": "192.0.2.1",
        "::192.0.2.1": "192.0.2.1",
        "2001:DB8::A": "2001:db8::a",
        "fe80::1%eth0": "fe80::1",
    }.get(ip)
    assert chain.verify().ok
