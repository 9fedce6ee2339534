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


def sandbox_keystore(actor: Any) -> tuple[Any, Any]:
    """A sandbox AWS in this process and a keystore of ``actor``'s in it, its role created and first assumed.

    Returns ``(server, keystore)``; keep the server referenced while measuring. The sandbox's
    STS assumes only roles that exist, as AWS does, and the first AssumeRole is no part of any
    operation a benchmark measures.
    """
    from django.conf import settings

    from byok_portal import aws
    from keystores import sandbox
    from keystores.services import keystore_create
    from sandbox_aws.server import SandboxServer

    server = SandboxServer()
    settings.BYOK_SANDBOX = True
    settings.BYOK_SANDBOX_URL = server.start()
    settings.BYOK_AWS_PRINCIPAL_ARN = "arn:aws:iam::000000000000:role/byok-portal"
    keystore = keystore_create(
        actor=actor,
        name="bench",
        aws_account_id="123456789012",
        region="eu-west-1",
        role_arn="arn:aws:iam::123456789012:role/byok",
    )
    sandbox.create_role(keystore)
    aws.kms_for(keystore).probe()
    return server, keystore


def keystore_with_two_people() -> tuple[Any, Any, Any, Any]:
    """``(server, keystore, alice, bob)``: after migrating, alice creates a sandbox keystore, bob is its custodian."""
    from django.contrib.auth.models import Permission
    from django.core.management import call_command

    from accounts.identity import Actor
    from accounts.models import User
    from keystores.models import Role
    from keystores.services import membership_set

    call_command("migrate", verbosity=0)

    def person(name: str) -> Actor:
        user = User.objects.create_user(name, password=f"{name}-password-123")
        user.user_permissions.add(Permission.objects.get(codename="add_keystore"))
        return Actor.for_user(User.objects.get(pk=user.pk))

    alice, bob = person("alice"), person("bob")
    server, keystore = sandbox_keystore(alice)
    assert bob.user is not None
    membership_set(actor=alice, keystore_id=keystore.pk, user=bob.user, role=Role.CUSTODIAN)
    return server, keystore, alice, bob


def time_kms_calls() -> list[float]:
    """Patch the AWS layer so every KMS call adds its seconds to the one-element list returned (reset it at will)."""
    import time

    from byok_portal import aws

    kms_seconds = [0.0]
    real_call = aws.KmsSession._call

    def timed_call(self: aws.KmsSession, operation: str, **kwargs: Any) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return real_call(self, operation, **kwargs)
        finally:
            kms_seconds[0] += time.perf_counter() - started

    aws.KmsSession._call = timed_call  # type: ignore[method-assign]
    return kms_seconds
