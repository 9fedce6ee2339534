"""Let Django's test flush empty the append-only audit tables on PostgreSQL.

``TransactionTestCase`` (``django_db(transaction=True)``) empties every table after
each test with one ``TRUNCATE``, which the audit triggers reject. This plugin runs
that flush, and only that flush, with ``SET LOCAL session_replication_role =
replica`` (ordinary triggers do not fire; superuser only, as the test database
user is), scoped to the flush's own transaction. Production code is untouched.

Register it suite-wide with ``pytest_plugins = ["tests.audit.flush"]`` in
``tests/conftest.py``; It is registered suite-wide in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from django.db.backends.postgresql.operations import DatabaseOperations

_original_sql_flush = DatabaseOperations.sql_flush


def _sql_flush_past_audit_triggers(
    self: DatabaseOperations,
    style: Any,
    tables: Sequence[str],
    *,
    reset_sequences: bool = False,
    allow_cascade: bool = False,
) -> list[str]:
    statements = _original_sql_flush(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
    # execute_sql_flush runs every statement in one transaction, so SET LOCAL ends with it.
    return ["SET LOCAL session_replication_role = replica", *statements] if statements else statements


@pytest.fixture(autouse=True, scope="session")
def _audit_tables_flushable() -> Iterator[None]:
    DatabaseOperations.sql_flush = _sql_flush_past_audit_triggers  # type: ignore[method-assign,assignment]
    yield
    DatabaseOperations.sql_flush = _original_sql_flush  # type: ignore[method-assign]
