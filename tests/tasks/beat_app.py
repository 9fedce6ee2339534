"""The portal's Celery app as the beat-lock test runs it (``celery -A tests.tasks.beat_app beat``).

Its scheduler is the portal's own (``CELERY_BEAT_SCHEDULER``, the locked one); only the
schedule is the test's: one task every half second, never executed (no worker), so the
messages left in Redis count what the beats sent.
"""

from __future__ import annotations

from byok_portal.celery import app

BEAT_TASK = "tests.beat.tick"

app.conf.beat_schedule = {"tick": {"task": BEAT_TASK, "schedule": 0.5}}
