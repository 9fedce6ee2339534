"""Suite-wide test setup.

Under CI (``CI=true``) a skipped test is a failure: every dependency a test waits
for is installed by ``.ci/run``, so a skip there means something is missing.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"

# Transactional tests end with a TRUNCATE of every table, which the append-only audit
# triggers refuse: tests.audit.flush lets exactly that flush past them. The OpenID provider's
# fixtures are defined once here, so one provider process serves the session.
pytest_plugins = ["tests.audit.flush", "tests.custody.softhsm", "tests.oidc_provider.fixtures"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if IN_CI and skipped:
        terminalreporter.write_line(f"CI=true: {len(skipped)} skipped test(s) count as failures.", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if IN_CI and reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- the sandbox AWS and the people who use the portal ---------------------------

import secrets  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from sandbox_aws.server import SandboxServer  # noqa: E402

REGION = "eu-west-1"


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    """A sandbox AWS (STS + KMS over HTTP) for the whole session."""
    server = SandboxServer(host="127.0.0.1", port=0)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def aws_sandbox(sandbox_url: str, settings: Any) -> Iterator[str]:
    """Point the portal's AWS layer at the sandbox, with no cached credentials from earlier tests."""
    from byok_portal import aws

    settings.BYOK_SANDBOX = True
    settings.BYOK_SANDBOX_URL = sandbox_url
    settings.BYOK_AWS_PRINCIPAL_ARN = "arn:aws:iam::000000000000:role/byok-portal"
    aws.credential_cache.clear()
    yield sandbox_url
    aws.credential_cache.clear()


@dataclass
class People:
    """The personas of the suite: who holds which role in ``keystore``."""

    alice: Any  # keystore admin (and keystore creator)
    bob: Any  # custodian
    carol: Any  # custodian
    dan: Any  # auditor
    eve: Any  # outsider: no role anywhere
    root: Any  # superuser

    def actor(self, user: Any) -> Any:
        from accounts.identity import Actor

        return Actor.for_user(user, source_ip="127.0.0.1")


@pytest.fixture
def people(db: Any) -> People:
    from django.contrib.auth.models import Permission

    from accounts.models import User

    def make(username: str, **extra: Any) -> Any:
        return User.objects.create_user(username=username, password=f"{username}-password-123", **extra)

    alice = make("alice", email="alice@example.com")
    alice.user_permissions.add(Permission.objects.get(codename="add_keystore"))
    return People(
        alice=User.objects.get(pk=alice.pk),
        bob=make("bob"),
        carol=make("carol"),
        dan=make("dan"),
        eve=make("eve"),
        root=make("root", is_superuser=True, is_staff=True),
    )


def new_account_id() -> str:
    return str(secrets.randbelow(9 * 10**11) + 10**11)


def create_sandbox_role(keystore: Any) -> Any:
    """Create the keystore's role in the sandbox, as its IAM setup guide says: the sandbox's STS only
    lets the portal assume a role that exists, with the keystore's ExternalId in its trust policy."""
    from keystores import sandbox

    sandbox.create_role(keystore)
    return keystore


@pytest.fixture
def keystore(people: People, aws_sandbox: str) -> Any:
    """A keystore in a fresh sandbox account: alice admin, bob and carol custodians, dan auditor."""
    from keystores.models import Role
    from keystores.services import keystore_create, membership_set

    account = new_account_id()
    store = keystore_create(
        actor=people.actor(people.alice),
        name="Payments",
        aws_account_id=account,
        region=REGION,
        role_arn=f"arn:aws:iam::{account}:role/byok-portal",
    )
    for user, role in ((people.bob, Role.CUSTODIAN), (people.carol, Role.CUSTODIAN), (people.dan, Role.AUDITOR)):
        membership_set(actor=people.actor(people.alice), keystore_id=store.pk, user=user, role=role)
    return create_sandbox_role(store)


@pytest.fixture
def proxy(aws_sandbox: str, settings: Any) -> Iterator[Any]:
    """The portal's AWS endpoint is a fault proxy (tests/faultproxy.py) in front of the sandbox."""
    from byok_portal import aws
    from tests.faultproxy import fault_proxy

    with fault_proxy(aws_sandbox) as running:
        settings.BYOK_SANDBOX_URL = running.url
        aws.credential_cache.clear()
        yield running
    aws.credential_cache.clear()
