"""Probes for load balancers and orchestrators (SPEC §14).

``/healthz`` (liveness) says only that the process answers: restarting web processes
does not bring a database back, so it touches nothing else. ``/readyz`` (readiness)
says whether this process can do its work now: the database answers, the broker
accepts a connection, and every migration is applied. Neither needs a login, so they
say which check failed but never why (hosts and errors go to the log).
"""

from __future__ import annotations

import logging

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

# Bounds the broker probe: a readiness check that hangs is worse than one that says no.
BROKER_TIMEOUT_SECONDS = 3

# Once every migration is applied, it stays so for the life of the process (new
# migrations arrive with new code, hence a new process): check until then only.
_migrations_applied = False


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process is up and answering."""
    return JsonResponse({"ok": True})


def _database() -> str:
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        logger.warning("readyz: database unreachable", exc_info=True)
        return "unavailable"
    return "ok"


def _migrations(database: str) -> str:
    global _migrations_applied
    if _migrations_applied:
        return "ok"
    if database != "ok":
        return "unknown"
    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError:
        logger.warning("readyz: cannot read the applied migrations", exc_info=True)
        return "unknown"
    if pending:
        return f"{len(pending)} unapplied"
    _migrations_applied = True
    return "ok"


def _broker() -> str:
    from byok_portal.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception:  # every transport raises its own errors; any of them means "not ready"
        logger.warning("readyz: broker unreachable", exc_info=True)
        return "unavailable"
    return "ok"


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when the database, the broker and the schema are all ready, else 503 naming what is not."""
    database = _database()
    checks = {"database": database, "migrations": _migrations(database), "broker": _broker()}
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"ready": ready, "checks": checks}, status=200 if ready else 503)
