"""Expiry warnings: once a day per key whose cryptoperiod ends within the window."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import pytest
import time_machine

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal.vocabulary import KeyState, Operation
from keys.jobs.expiry import warn_expiring_keys
from keys.models import Key

pytestmark = pytest.mark.django_db

EXPIRY = Actor.system("expiry")
MONDAY = dt.datetime(2031, 3, 3, 6, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _thirty_day_window(settings: Any) -> None:
    settings.BYOK_EXPIRY_WARNING_DAYS = 30


def warnings_for(key: Key) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(operation=Operation.EXPIRY_WARNING, key_id=key.pk).order_by("seq"))


def test_a_key_expiring_within_the_window_is_warned_once_a_day(make_key: Any) -> None:
    with time_machine.travel(MONDAY, tick=False) as traveller:
        key = make_key(expires=dt.date(2031, 3, 20))

        assert warn_expiring_keys(actor=EXPIRY) == 1
        assert warn_expiring_keys(actor=EXPIRY) == 0  # same day, e.g. a redelivered task
        traveller.shift(dt.timedelta(hours=17))  # still Monday
        assert warn_expiring_keys(actor=EXPIRY) == 0
        traveller.shift(dt.timedelta(hours=2))  # Tuesday
        assert warn_expiring_keys(actor=EXPIRY) == 1

    key.refresh_from_db()
    assert key.expiry_warned_on == dt.date(2031, 3, 4)
    events = warnings_for(key)
    assert [(e.reason, e.details["days_left"]) for e in events] == [("expires_soon", 17), ("expires_soon", 16)]
    assert (events[0].actor_iss, events[0].actor_sub) == ("system", "expiry")


def test_keys_outside_the_window_or_no_longer_in_use_are_not_warned(make_key: Any) -> None:
    with time_machine.travel(MONDAY, tick=False):
        later = make_key(expires=dt.date(2031, 4, 3))  # 31 days
        no_expiry = make_key()
        renewed = make_key(state=KeyState.REPLACED, expires=dt.date(2031, 3, 5))
        leaving = make_key(state=KeyState.PENDING_DELETION, expires=dt.date(2031, 3, 5))
        inactive = make_key(state=KeyState.INACTIVE, expires=dt.date(2031, 4, 2))

        assert warn_expiring_keys(actor=EXPIRY) == 1

    assert [k for k in (later, no_expiry, renewed, leaving) if warnings_for(k)] == []
    assert len(warnings_for(inactive)) == 1


def test_an_expired_key_keeps_being_warned_daily_as_expired(make_key: Any) -> None:
    with time_machine.travel(MONDAY, tick=False):
        key = make_key(expires=dt.date(2031, 3, 1))
        warn_expiring_keys(actor=EXPIRY)

    [event] = warnings_for(key)
    assert (event.reason, event.details) == ("expired", {"expires": "2031-03-01", "days_left": -2})


class Collect(logging.Handler):
    """Keeps the records of one logger (the suite may run with pytest's logging plugin off)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_each_warning_is_a_structured_log_line_for_alerting(make_key: Any) -> None:
    from byok_portal.logging import JSONFormatter

    collect = Collect()
    logging.getLogger("byok.jobs").addHandler(collect)
    try:
        with time_machine.travel(MONDAY, tick=False):
            key = make_key(expires=dt.date(2031, 3, 10), alias="alias/payroll")
            warn_expiring_keys(actor=EXPIRY)
    finally:
        logging.getLogger("byok.jobs").removeHandler(collect)

    [line] = [json.loads(JSONFormatter().format(r)) for r in collect.records]
    assert line["event"] == "key_expiry_warning"
    assert (line["key_id"], line["alias"], line["expires"], line["days_left"]) == (
        str(key.pk),
        "alias/payroll",
        "2031-03-10",
        7,
    )
    assert line["level"] == "WARNING"


def test_changing_the_expiry_date_of_a_key_allows_a_new_warning_the_same_day(make_key: Any) -> None:
    with time_machine.travel(MONDAY, tick=False):
        key = make_key(expires=dt.date(2031, 3, 20))
        warn_expiring_keys(actor=EXPIRY)
        Key.objects.filter(pk=key.pk).update(expires=dt.date(2031, 3, 10), expiry_warned_on=None)  # as key_update does
        assert warn_expiring_keys(actor=EXPIRY) == 1


def test_the_celery_task_is_a_thin_caller(make_key: Any) -> None:
    from keys.tasks import warn_expiring_keys as task

    with time_machine.travel(MONDAY, tick=False):
        make_key(expires=dt.date(2031, 3, 20))
        assert task.apply().get() == {"warned": 1}
