"""``manage.py audit_verify`` and ``audit_head``."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from audit import chain
from tests.audit.conftest import Tamper, World, bulk_events, require_postgresql


def run(name: str, *args: str) -> dict:
    out = io.StringIO()
    call_command(name, *args, stdout=out)
    return json.loads(out.getvalue())


def test_audit_head_prints_the_newest_link(world: World) -> None:
    assert run("audit_head") == {"seq": 0, "hash": chain.GENESIS}
    bulk_events(3, keystore=world.keystore_a)

    assert run("audit_head") == {"seq": 3, "hash": chain.current_head()[1]}


def test_audit_verify_reports_a_sound_chain(world: World) -> None:
    bulk_events(4, keystore=world.keystore_a)
    head = run("audit_head")

    report = run("audit_verify", "--expect-seq", str(head["seq"]), "--expect-hash", head["hash"])

    assert report == {"ok": True, "events": 4, "first_bad": None, "problem": "", "head": head}


@pytest.mark.postgres
def test_audit_verify_fails_and_names_the_first_bad_event(world: World) -> None:
    require_postgresql()
    bulk_events(4, keystore=world.keystore_a)
    with Tamper() as cursor:
        cursor.execute("UPDATE audit_auditevent SET actor_sub = 'someone else' WHERE seq = 3")
    out = io.StringIO()

    with pytest.raises(CommandError, match="broken at event #3") as caught:
        call_command("audit_verify", stdout=out)

    assert caught.value.returncode == 1
    assert json.loads(out.getvalue())["first_bad"] == 3


def test_audit_verify_detects_a_chain_shorter_than_the_published_head(world: World) -> None:
    bulk_events(2, keystore=world.keystore_a)

    with pytest.raises(CommandError, match="broken at event #3"):
        call_command("audit_verify", "--expect-seq", "5", "--expect-hash", "b" * 64, stdout=io.StringIO())


@pytest.mark.parametrize("args", [["--expect-seq", "3"], ["--expect-seq", "3", "--expect-hash", "xyz"]])
def test_audit_verify_wants_a_whole_head(db: None, args: list[str]) -> None:
    with pytest.raises(CommandError):
        call_command("audit_verify", *args, stdout=io.StringIO())
