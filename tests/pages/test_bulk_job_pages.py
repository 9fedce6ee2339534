"""The key list's bulk form without JavaScript: every key its filters match, refusals as messages, cancel."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.models import Job, JobState
from keys.services import key_create

pytestmark = pytest.mark.django_db


def test_the_filters_of_the_list_choose_the_keys(browser_as: Any, people: Any, keystore: Any) -> None:
    for name in ("orders-1", "orders-2", "payroll"):
        key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name=name)
    client = browser_as(people.bob)
    listed = client.get("/keys/?search=orders")
    assert b'name="filter_search" value="orders"' in listed.content
    started = client.post(
        "/jobs/start/", {"operation": "deactivate", "scope": "filter", "filter_search": "orders", "filter_page": "2"}
    )
    job = Job.objects.get()
    assert started.status_code == 302
    assert started["Location"] == f"/jobs/{job.pk}/"
    assert (job.total, job.selection) == (2, {"filter": {"search": "orders"}})
    page = client.get(started["Location"])
    assert b"0 of 2" in page.content
    assert b"/static/js/job-progress.js" in page.content

    cancelled = client.post(f"/jobs/{job.pk}/cancel/")
    assert cancelled.status_code == 302
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert browser_as(people.carol).get(f"/jobs/{job.pk}/").status_code == 404  # someone else's job


def test_an_empty_selection_is_refused_with_a_message(browser_as: Any, people: Any, keystore: Any) -> None:
    response = browser_as(people.bob).post(
        "/jobs/start/", {"operation": "deactivate", "scope": "selected"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/keys/"
    assert "The bulk action refused" in response.content.decode()
    assert not Job.objects.exists()


def test_a_large_jobs_page_shows_its_keys_a_page_at_a_time(browser_as: Any, people: Any, keystore: Any) -> None:
    from tests.api.test_jobs import _large_job

    job = _large_job(people, keystore, 1_200, settled=600)
    client = browser_as(people.bob)
    first = client.get(f"/jobs/{job.pk}/").content.decode()
    assert (first.count("<tr data-position="), "Keys 1–500 of 1200" in first) == (500, True)
    assert f'data-after="{job.settled}"' in first  # the poll goes on from what the page shows
    last = client.get(f"/jobs/{job.pk}/?from=1000").content.decode()
    assert (last.count("<tr data-position="), "Keys 1001–1200 of 1200" in last) == (200, True)
    assert 'rel="next"' not in last
    assert 'href="?from=500" rel="prev"' in last
    assert client.get(f"/jobs/{job.pk}/?from=junk").status_code == 200
