"""Celery beat that runs exactly once, however many beat processes are started (SPEC §14).

Two beats would send every periodic task twice (two reconciliations at once, two
cleanups). The schedulers here send only while they hold a lock in Redis (the broker,
or ``BYOK_BEAT_LOCK_URL``): the first beat takes it and renews it on every tick; any
other beat stays up as a standby that sends nothing and takes over within
``BYOK_BEAT_LOCK_SECONDS`` of the holder's death. A holder that loses its lock (Redis
restarted, the process frozen past the lock's life) stops sending until it wins it back.

``CELERY_BEAT_SCHEDULER`` names :class:`LockedPersistentScheduler` (schedule state in a
file, the default) or :class:`LockedDatabaseScheduler` (django-celery-beat's, editable
in the admin). With a broker that is not Redis (``make run``'s filesystem broker) there
is nothing to lock with: beat runs unlocked and says so in its log.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import redis
from celery.beat import PersistentScheduler
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

LOCK_NAME = "byok-portal:celery-beat"


class _Locked:
    """Mixin for a Celery scheduler: ``tick()`` sends due tasks only while this process holds the beat lock."""

    _lock: Any = None
    _token = b""
    _holding = False
    _lock_seconds: float = 30.0

    def _beat_lock(self) -> Any:
        if self._lock is None:
            url = settings.BYOK_BEAT_LOCK_URL or str(settings.CELERY_BROKER_URL)
            if not url.startswith(("redis://", "rediss://", "unix://")):
                logger.warning("celery beat runs without a lock: %s is not Redis; start only one beat", url)
                self._lock = False
                return self._lock
            self._lock_seconds = float(settings.BYOK_BEAT_LOCK_SECONDS)
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            self._lock = client.lock(LOCK_NAME, timeout=self._lock_seconds, blocking=False)
            # The value names the holder, for whoever looks in Redis to see which beat is live.
            self._token = f"{socket.gethostname()}:{os.getpid()}".encode()
        return self._lock

    def _hold(self) -> bool:
        """Take or renew the lock; whether this beat may send now."""
        lock = self._beat_lock()
        if lock is False:
            return True
        try:
            if self._holding:
                lock.reacquire()  # renews the lock's life; raises if another beat holds it now
            else:
                self._holding = bool(lock.acquire(blocking=False, token=self._token))
                if self._holding:
                    logger.info("celery beat: holding the beat lock; sending periodic tasks")
                else:
                    logger.info("celery beat: standby, another beat holds the lock")
        except redis.exceptions.LockError:
            logger.warning("celery beat: lost the beat lock; standby until it is free again")
            self._holding = False
        except redis.RedisError:
            logger.warning("celery beat: Redis unreachable; sending nothing until the lock can be renewed")
            self._holding = False
        return self._holding

    def tick(self, *args: Any, **kwargs: Any) -> float:
        holding = self._hold()  # first: it reads the lock's life from the settings
        # Wake often enough to renew the lock well before it expires, whatever the schedule says.
        renew_every = self._lock_seconds / 3
        if not holding:
            return renew_every
        interval: float = super().tick(*args, **kwargs)  # type: ignore[misc]
        return min(interval, renew_every) if self._lock else interval

    def close(self) -> None:
        super().close()  # type: ignore[misc]
        if self._lock and self._holding:
            try:
                self._lock.release()  # a clean stop hands over at once, not after the lock's life
            except redis.RedisError:
                logger.warning("celery beat: could not release the beat lock; it expires by itself")
            self._holding = False


class LockedPersistentScheduler(_Locked, PersistentScheduler):
    """Celery's default scheduler (state in ``--schedule`` file), sending only while holding the beat lock."""


class LockedDatabaseScheduler(_Locked, DatabaseScheduler):
    """django-celery-beat's scheduler (schedules in the database), sending only while holding the beat lock."""
