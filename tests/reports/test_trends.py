"""The dashboard over time: the numbers behind each chart, and charts that read without colour or script."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.utils import timezone

from byok_portal.errors import PermissionRefused
from keys import services as key_services
from keys.models import Key
from reports import trends
from tests.reports.conftest import aged
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def test_operations_per_day_counts_the_trail_by_day_and_outcome(people: Any, keystore: Any, time_machine: Any) -> None:
    bob = people.actor(people.bob)
    today = timezone.now().astimezone(dt.UTC).date()
    key = key_services.key_create(actor=bob, keystore_id=keystore.pk, name="K").key
    time_machine.move_to(dt.datetime.combine(today + dt.timedelta(days=2), dt.time(9), tzinfo=dt.UTC), tick=False)
    key_services.key_deactivate(actor=bob, key_id=key.pk)
    with pytest.raises(PermissionRefused):  # dan is an auditor: a refusal, audited
        key_services.key_activate(actor=people.actor(people.dan), key_id=key.pk)

    trend = trends.operations_per_day(people.dan, today=today + dt.timedelta(days=2), days=3)

    assert trend.labels == [(today + dt.timedelta(days=n)).isoformat() for n in range(3)]
    done, problems = trend.series
    # Day one: the keystore, its members and the key; day three: a deactivation and one refusal.
    assert done.values[1:] == [0, 1]
    assert problems.values == [0, 0, 1]
    assert done.values[0] >= 5


def test_keys_by_state_per_day_undoes_each_day_s_changes(people: Any, keystore: Any, time_machine: Any) -> None:
    bob = people.actor(people.bob)
    today = timezone.now().astimezone(dt.UTC).date()
    first = key_services.key_create(actor=bob, keystore_id=keystore.pk, name="A").key
    key_services.key_create(actor=bob, keystore_id=keystore.pk, name="B")
    time_machine.move_to(dt.datetime.combine(today + dt.timedelta(days=1), dt.time(9), tzinfo=dt.UTC), tick=False)
    key_services.key_deactivate(actor=bob, key_id=first.pk)
    time_machine.move_to(dt.datetime.combine(today + dt.timedelta(days=2), dt.time(9), tzinfo=dt.UTC), tick=False)
    key_services.key_schedule_deletion(actor=bob, key_id=first.pk, pending_window_days=7)

    trend = trends.keys_by_state_per_day(people.dan, today=today + dt.timedelta(days=2), days=4)

    by_state = {series.name: series.values for series in trend.series}
    assert by_state["Active"] == [0, 2, 1, 1]
    assert by_state["Inactive"] == [0, 0, 1, 0]
    assert by_state["Pending deletion"] == [0, 0, 0, 1]
    assert "Deleted" not in by_state


def test_material_age_buckets_live_keys_only(people: Any, make_key: Any) -> None:
    aged(make_key(), 5)
    aged(make_key(), 100)
    aged(make_key(), 100)
    aged(make_key(state="INACTIVE", kms_state="EMPTY"), 800)
    aged(make_key(state="DELETED", kms_state="UNKNOWN"), 10)

    trend = trends.material_age(people.dan)

    assert trend.series[0].values == [1, 0, 2, 0, 0, 1]
    assert Key.objects.count() == 5


def test_the_page_draws_each_chart_as_svg_with_a_table_of_its_numbers(people: Any, make_key: Any) -> None:
    aged(make_key(), 0)  # material imported now

    html = verified_client(people.dan).get("/reports/").content.decode()

    assert html.count('<svg class="chart"') == 3
    assert html.count('role="img"') >= 3
    for chart in ("chart-operations", "chart-states", "chart-ages"):
        assert f'aria-labelledby="{chart}-title {chart}-desc"' in html
    # Told apart without colour: a hatch pattern for failures, dash patterns for the states.
    assert 'id="chart-operations-hatch"' in html
    assert "stroke-dasharray" in html
    assert "<caption>Age of the current key material (active and inactive keys): the numbers</caption>" in html
    assert re.search(r"<th scope=\"row\">Under 30 days</th><td>1</td>", html)
    assert "<script" not in html.split("<main", 1)[1]
    assert 'href="/reports/inventory/download/"' not in html  # forms, not links: the keystore and format are chosen
    assert 'action="/reports/inventory/download/"' in html
