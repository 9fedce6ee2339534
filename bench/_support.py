"""What every benchmark module needs: a PostgreSQL database of its own, and phases in fresh processes.

A phase runs as ``python -m bench.<module> <phase> [args]`` with Django set up on
that database, and prints its figures as one JSON line last; a fresh process per
phase keeps one phase's memory and caches out of another's figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/byok"


def database_url(database: str) -> str:
    """``DATABASE_URL`` pointed at ``database`` (benchmarks measure PostgreSQL, as production runs)."""
    parts = urlsplit(os.environ.get("DATABASE_URL") or DEFAULT_URL)
    if not parts.scheme.startswith("postgres"):
        raise RuntimeError("the benchmarks need PostgreSQL: set DATABASE_URL=postgres://...")
    return urlunsplit(parts._replace(path="/" + database))


def recreate_database(database: str) -> None:
    import psycopg

    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')


def run_phase(module: str, database: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one phase of ``bench.<module>`` on ``database`` and return the JSON it printed last."""
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url(database),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args], env=full_env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} on {database} failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
