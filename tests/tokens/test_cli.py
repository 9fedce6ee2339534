"""The ``byok`` command end to end: installed with pip, run in a subprocess against a live portal (SPEC §13).

Every call goes over HTTP to ``live_server`` with an API token, as a CI job's would; the
portal talks to the sandbox AWS. Output is parsed as JSON, exit codes are checked per kind.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from accounts.identity import Actor
from byok_portal.vocabulary import KeyState
from keys.custody import kcv
from keys.models import Key
from tests.keys.helpers import public_pem, rsa_private_key
from tokens.services import token_create

pytestmark = pytest.mark.django_db(transaction=True)

AUTH, NOT_FOUND, CONFLICT, AWS, VALIDATION = 3, 4, 5, 6, 7


def secret_for(user: Any, scope: str = "write", **extra: Any) -> str:
    return token_create(actor=Actor.for_user(user), name="cli", scope=scope, expires_in_days=7, **extra).secret


@pytest.fixture
def key_files(tmp_path: Path) -> tuple[Path, Path]:
    private = tmp_path / "private.pem"
    private.write_bytes(
        rsa_private_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = tmp_path / "public.pem"
    public.write_text(public_pem())
    return private, public


def test_a_full_lifecycle_through_the_cli(
    live_server: Any, people: Any, keystore: Any, byok: Any, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    bob, carol = secret_for(people.bob), secret_for(people.carol)
    url = live_server.url

    listed = byok("keystore", "list", "--output", "json", url=url, token=bob)
    assert listed.code == 0, listed.stderr
    assert [k["id"] for k in listed.json()] == [str(keystore.pk)]

    created = byok(
        "--json",
        "key",
        "create",
        "--keystore",
        str(keystore.pk),
        "--name",
        "payments",
        "--alias",
        "alias/cli-payments",
        "--tag",
        "team=cards",
        "--expires",
        (dt.date.today() + dt.timedelta(days=200)).isoformat(),
        "--key-spec",
        "SYMMETRIC_DEFAULT",
        "--key-usage",
        "ENCRYPT_DECRYPT",
        url=url,
        token=bob,
    )
    assert created.code == 0, created.stderr
    key = created.json()
    assert key["state"] == KeyState.ACTIVE
    assert key["tags"] == {"team": "cards"}
    key_id = key["id"]

    def op(*args: str, token: str = bob) -> dict[str, Any]:
        done = byok("--json", "key", *args, url=url, token=token)
        assert done.code == 0, (args, done.stderr)
        result: dict[str, Any] = done.json()
        return result

    assert op("deactivate", key_id)["state"] == KeyState.INACTIVE
    assert op("activate", key_id)["state"] == KeyState.ACTIVE
    assert op("upload", key_id)["state"] == KeyState.ACTIVE
    assert op("update", key_id, "--name", "payments-2026")["name"] == "payments-2026"
    assert op("show", key_id)["kcv"] == key["kcv"]
    table = byok("key", "list", "--keystore", str(keystore.pk), url=url, token=bob)
    assert table.code == 0
    assert "payments-2026" in table.stdout.splitlines()[1]
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "ALIAS"]

    # Download: carol prepares with her public key... and carol cannot download it herself.
    _, public = key_files
    assert op("prepare-download", key_id, "--public-key", str(public), token=carol)["download_prepared"] is True
    private, _ = key_files
    own = byok("key", "download", key_id, "--private-key", str(private), url=url, token=carol)
    assert own.code == AUTH, own.stderr
    assert "two_person_rule" in own.stderr
    # Bob downloads, unwraps locally and verifies the KCV; the material goes only to the file he named.
    material_file = tmp_path / "material.bin"
    got = byok(
        "--json", "key", "download", key_id, "--private-key", str(private), "--material-out", str(material_file),
        url=url, token=bob,
    )  # fmt: skip
    assert got.code == 0, got.stderr
    result = got.json()
    assert result["verified"] is True
    assert result["check_value"] == result["expected_check_value"] == key["kcv"]
    assert stat.S_IMODE(os.stat(material_file).st_mode) == 0o600
    material = material_file.read_bytes()
    assert kcv(material) == key["kcv"]
    assert material.hex() not in got.stdout + got.stderr
    assert Key.objects.get(pk=key_id).kcv == key["kcv"]
    # The preparation was single-use: a second download is a conflict.
    again = byok("key", "download", key_id, "--private-key", str(private), url=url, token=bob)
    assert again.code == CONFLICT, again.stderr

    renewed = op("renew", key_id, "--name", "payments-next")
    assert renewed["replaces"] == key_id
    assert op("show", key_id)["state"] == KeyState.REPLACED
    assert op("schedule-deletion", key_id, "--pending-window-days", "7")["state"] == KeyState.PENDING_DELETION
    assert op("cancel-deletion", key_id)["state"] != KeyState.PENDING_DELETION

    events = byok("--json", "audit", "list", "--key", key_id, "--limit", "50", url=url, token=bob)
    assert events.code == 0, events.stderr
    operations = [e["operation"] for e in events.json()]
    assert {"create", "deactivate", "activate", "upload", "prepare_download", "download", "renew"} <= set(operations)
    assert all(e["details"].get("api_client", {}).get("kind") == "api_token" for e in events.json())
    verify = byok("--json", "audit", "verify", url=url, token=secret_for(people.root))
    assert verify.code == 0, verify.stderr
    assert verify.json()["ok"] is True
    export = tmp_path / "events.jsonl"
    exported = byok("audit", "export", "--format", "jsonl", "--key", key_id, "--out", str(export), url=url, token=bob)
    assert exported.code == 0, exported.stderr
    assert {json.loads(line)["operation"] for line in export.read_text().splitlines()} >= {"create", "download"}


def test_exit_codes_say_what_kind_of_error(live_server: Any, people: Any, keystore: Any, byok: Any) -> None:
    url = live_server.url
    bob = secret_for(people.bob)
    missing = byok("key", "show", "00000000-0000-0000-0000-000000000000", url=url, token=bob)
    assert missing.code == NOT_FOUND
    assert "not_found" in missing.stderr
    assert missing.stdout == ""

    bad = byok("key", "show", "00000000-0000-0000-0000-000000000000", url=url, token="byok_nope_nope")
    assert bad.code == AUTH
    assert "Invalid API token" in bad.stderr

    reader = secret_for(people.bob, scope="read")
    refused = byok("key", "create", "--keystore", str(keystore.pk), "--name", "x", url=url, token=reader)
    assert refused.code == AUTH
    assert "insufficient_scope" in refused.stderr

    invalid = byok(
        "key", "create", "--keystore", str(keystore.pk), "--name", "x", "--key-spec", "AES_1", url=url, token=bob
    )
    assert invalid.code == VALIDATION
    assert "key_spec" in invalid.stderr

    key = byok("--json", "key", "create", "--keystore", str(keystore.pk), "--name", "k", url=url, token=bob).json()
    nothing = byok("key", "download", key["id"], "--private-key", "/dev/null", url=url, token=bob)
    assert nothing.code == 2, "an unreadable private key is a usage error, before anything is asked of the portal"

    # A keystore whose IAM role does not exist: AWS (the sandbox's STS) refuses, exit 6.
    from keystores.services import keystore_create
    from tests.conftest import new_account_id

    account = new_account_id()
    broken = keystore_create(
        actor=people.actor(people.alice),
        name="No role",
        aws_account_id=account,
        region="eu-west-1",
        role_arn=f"arn:aws:iam::{account}:role/byok-portal",
    )
    alice = secret_for(people.alice)
    aws = byok("key", "create", "--keystore", str(broken.pk), "--name", "x", url=url, token=alice)
    assert aws.code == AWS, aws.stderr
    assert "AccessDenied" in aws.stderr
    test = byok("--json", "keystore", "test", str(broken.pk), url=url, token=alice)
    assert test.code == AWS
    assert test.json()["ok"] is False

    conflict = byok("key", "cancel-deletion", key["id"], url=url, token=bob)
    assert conflict.code == CONFLICT, conflict.stderr
    assert "allowed in" in conflict.stderr

    unreachable = byok("key", "list", url="http://127.0.0.1:9", token=bob)
    assert unreachable.code == 9


def test_tokens_through_the_cli_and_a_config_file(
    live_server: Any, people: Any, keystore: Any, byok: Any, tmp_path: Path
) -> None:
    url = live_server.url
    bob = secret_for(people.bob)
    made = byok(
        "--json", "token", "create", "--name", "nightly", "--scope", "read", "--keystore", str(keystore.pk),
        "--expires-in-days", "5",
        url=url, token=bob,
    )  # fmt: skip
    assert made.code == 0, made.stderr
    new = made.json()
    assert new["token"].startswith("byok_")
    assert "shown this once" in made.stderr
    # The config file instead of the environment.
    config = tmp_path / "byok.toml"
    config.write_text(f'url = "{url}"\ntoken = "{new["token"]}"\n')
    listed = byok("--config", str(config), "--json", "keystore", "list", url="", token="")
    assert listed.code == 0, listed.stderr
    assert [k["name"] for k in listed.json()] == ["Payments"]
    names = [t["name"] for t in byok("--json", "token", "list", url=url, token=bob).json()]
    assert names == ["nightly", "cli"]
    revoked = byok("token", "revoke", new["id"], url=url, token=bob)
    assert revoked.code == 0, revoked.stderr
    after = byok("--config", str(config), "keystore", "list", url="", token="")
    assert after.code == AUTH
    assert "revoked" in after.stderr


def test_shell_completion_and_help(byok: Any) -> None:
    script = byok("completion", "bash", url="", token="")
    assert script.code == 0
    assert "_BYOK_COMPLETE" in script.stdout
    helped = byok("--help", url="", token="")
    assert "Exit codes" in helped.stdout
    missing = byok("key", "list", url="", token="")
    assert missing.code == 2
    assert "BYOK_URL" in missing.stderr
