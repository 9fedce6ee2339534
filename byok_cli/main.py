"""The ``byok`` command: keystores, keys and every lifecycle operation, approvals, audit, tokens."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.shell_completion import get_completion_class

from byok_cli import __version__, config, errors, unwrap
from byok_cli.client import Portal
from byok_cli.output import emit

KEY_COLUMNS = ("id", "name", "alias", "state", "kms_state", "key_spec", "expires")
KEYSTORE_COLUMNS = ("id", "name", "aws_account_id", "region", "state")
TOKEN_COLUMNS = ("id", "name", "owner", "scope", "keystores", "expires_at", "last_used_at", "active")
APPROVAL_COLUMNS = ("id", "operation", "state", "key", "keystore", "requested_by", "created_at")
OUTPUTS = click.Choice(["table", "json"])


class State:
    """What every command shares: the output format and, made on first use, the API client."""

    def __init__(self, url: str | None, token: str | None, config_path: str | None, profile: str | None, output: str):
        self._options = (url, token, config_path, profile)
        self.output = output
        self._portal: Portal | None = None

    @property
    def portal(self) -> Portal:
        if self._portal is None:
            self._portal = Portal(config.load(*self._options))
        return self._portal

    def emit(self, data: Any, columns: tuple[str, ...] | None = None) -> None:
        emit(data, self.output, columns)


pass_state = click.make_pass_decorator(State)


class ByokCommand(click.Command):
    """A command that also takes ``-o/--output`` and ``--json`` after its name, as the AWS CLI does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params += [
            click.Option(["-o", "--output", "leaf_output"], type=OUTPUTS, default=None, help="Output format."),
            click.Option(["--json", "leaf_json"], is_flag=True, default=False, help="Same as --output json."),
        ]

    def invoke(self, ctx: click.Context) -> Any:
        output, as_json = ctx.params.pop("leaf_output", None), ctx.params.pop("leaf_json", False)
        state = ctx.find_object(State)
        if state is not None and (output or as_json):
            state.output = "json" if as_json else str(output)
        return super().invoke(ctx)


class ByokGroup(click.Group):
    """Turns every :class:`~byok_cli.errors.CliError` into a message on stderr and its exit code."""

    command_class = ByokCommand
    group_class = type

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.CliError as exc:
            state = ctx.find_object(State)
            if state is not None and state.output == "json" and exc.body is not None:
                click.echo(json.dumps(exc.body, indent=2, sort_keys=True), err=True)
            click.echo(f"byok: {exc.message}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=ByokGroup, epilog=errors.EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="BYOK_URL", help="The portal, e.g. https://byok.example.com (env BYOK_URL).")
@click.option("--token", envvar="BYOK_TOKEN", help="An API token, byok_… (env BYOK_TOKEN).")
@click.option("--config", "config_path", help="Config file (default ~/.config/byok/config.toml, env BYOK_CONFIG).")
@click.option("--profile", help="A [profiles.NAME] table of the config file (env BYOK_PROFILE).")
@click.option(
    "-o", "--output", type=OUTPUTS, default="table", envvar="BYOK_OUTPUT", show_default=True, help="Output format."
)
@click.option("--json", "as_json", is_flag=True, help="Same as --output json.")
@click.version_option(__version__, prog_name="byok")
@click.pass_context
def cli(
    ctx: click.Context,
    url: str | None,
    token: str | None,
    config_path: str | None,
    profile: str | None,
    output: str,
    as_json: bool,
) -> None:
    """The BYOK Portal from the command line, through its REST API only.

    \b
    Authenticate with an API token (made on the portal's API tokens page):
      export BYOK_URL=https://byok.example.com BYOK_TOKEN=byok_…
    or a config file ~/.config/byok/config.toml with url = "…" and token = "…".
    """
    ctx.obj = State(url, token, config_path, profile, "json" if as_json else output)


# --- keystores ------------------------------------------------------------------------------


@cli.group()
def keystore() -> None:
    """Keystores: one AWS account and region each."""


@keystore.command("list")
@click.option("--region")
@click.option("--state")
@click.option("--aws-account-id")
@click.option("--search")
@click.option("--limit", type=int, help="At most this many.")
@pass_state
def keystore_list(app: State, limit: int | None, **filters: Any) -> None:
    """Keystores you hold a role in."""
    app.emit(list(app.portal.pages("/keystores/", limit=limit, **filters)), KEYSTORE_COLUMNS)


@keystore.command("create")
@click.option("--name", required=True)
@click.option("--aws-account-id", required=True)
@click.option("--region", required=True)
@click.option("--role-arn", required=True)
@pass_state
def keystore_create(app: State, **body: Any) -> None:
    """Create a keystore (needs the keystore creator permission); then set up its IAM role."""
    app.emit(app.portal.post("/keystores/", body))


@keystore.command("show")
@click.argument("keystore_id")
@pass_state
def keystore_show(app: State, keystore_id: str) -> None:
    app.emit(app.portal.get(f"/keystores/{keystore_id}/"))


@keystore.command("test")
@click.argument("keystore_id")
@pass_state
def keystore_test(app: State, keystore_id: str) -> None:
    """Assume the keystore's role and make a harmless KMS call; exit 6 when AWS refuses."""
    result = app.portal.post(f"/keystores/{keystore_id}/test-connection/")
    app.emit(result)
    if not result.get("ok"):
        raise errors.CliError(f"connection test failed: {result.get('error')}", errors.AWS)


@keystore.command("iam-policy")
@click.argument("keystore_id")
@pass_state
def keystore_iam_policy(app: State, keystore_id: str) -> None:
    """The trust and permissions policies for the keystore's role (JSON, whatever the output format)."""
    click.echo(json.dumps(app.portal.get(f"/keystores/{keystore_id}/iam-policy/"), indent=2))


@keystore.command("approval-policy")
@click.argument("keystore_id")
@click.option("--destroy", type=click.IntRange(0, 5), help="Approvals for schedule deletion and keystore deletion.")
@click.option("--disable", type=click.IntRange(0, 5), help="Approvals for deactivate.")
@click.option("--change-material", type=click.IntRange(0, 5), help="Approvals for renew, rotate, add-replica.")
@click.option("--export", type=click.IntRange(0, 5), help="Approvals for prepare-download.")
@click.option("--membership", type=click.IntRange(0, 5), help="Approvals for grants, revokes and policy changes.")
@click.option("--approver-role", "approver_roles", multiple=True, help="Roles that may approve (repeat).")
@click.option("--expires-hours", type=int, help="How long a request waits for approvals.")
@pass_state
def keystore_approval_policy(app: State, keystore_id: str, approver_roles: tuple[str, ...], **counts: Any) -> None:
    """Show the keystore's approval policy (SPEC §12), or change the values given.

    A change is itself covered by the ``membership`` group of the policy in force: it may
    answer "waits for approval" (exit code 11) instead of taking effect.
    """
    path = f"/keystores/{keystore_id}/approval-policy/"
    policy = app.portal.get(path)
    changes: dict[str, Any] = {name: value for name, value in counts.items() if value is not None}
    if approver_roles:
        changes["approver_roles"] = list(approver_roles)
    if changes:
        policy = app.portal.put(path, {**policy, **changes})
    app.emit(policy)


# --- keys -----------------------------------------------------------------------------------


@cli.group()
def key() -> None:
    """Keys and every lifecycle operation."""


@key.command("list")
@click.option("--keystore")
@click.option("--state")
@click.option("--alias")
@click.option("--search")
@click.option("--key-spec")
@click.option("--key-usage")
@click.option("--limit", type=int, help="At most this many.")
@pass_state
def key_list(app: State, limit: int | None, **filters: Any) -> None:
    """Keys you can see, newest first (filters as the API's)."""
    app.emit(list(app.portal.pages("/keys/", limit=limit, **filters)), KEY_COLUMNS)


def _tags(values: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE", param_hint="--tag")
        tags[name] = text
    return tags


@key.command("create")
@click.option("--keystore", required=True, help="Keystore id.")
@click.option("--name", required=True)
@click.option("--alias", help="KMS alias, e.g. alias/payments (the prefix is optional).")
@click.option("--tag", "tags", multiple=True, help="KEY=VALUE, repeatable.")
@click.option("--expires", help="Expiry date, YYYY-MM-DD.")
@click.option("--key-spec", help="SYMMETRIC_DEFAULT (default), HMAC_256, RSA_3072, ECC_NIST_P256, …")
@click.option("--key-usage", help="ENCRYPT_DECRYPT, SIGN_VERIFY, GENERATE_VERIFY_MAC.")
@click.option("--multi-region/--single-region", default=None, help="A multi-region key (SPEC §11).")
@click.option("--replica-region", "replica_regions", multiple=True, help="Repeatable (multi-region keys).")
@click.option("--rotation-period-days", type=int, help="Rotate the material every N days (SPEC §10).")
@click.option(
    "--material-valid-days", type=int, help="The material expires in KMS N days after each import (1-365, SPEC §10)."
)
@pass_state
def key_create(app: State, tags: tuple[str, ...], replica_regions: tuple[str, ...], **fields: Any) -> None:
    """Create a key: the portal generates its material and imports it into KMS."""
    body = {name: value for name, value in fields.items() if value is not None}
    if tags:
        body["tags"] = _tags(tags)
    if replica_regions:
        body["replica_regions"] = list(replica_regions)
    app.emit(app.portal.post("/keys/", body))


@key.command("show")
@click.argument("key_id")
@pass_state
def key_show(app: State, key_id: str) -> None:
    app.emit(app.portal.get(f"/keys/{key_id}/"))


@key.command("update")
@click.argument("key_id")
@click.option("--name")
@click.option("--alias")
@click.option("--tag", "tags", multiple=True, help="KEY=VALUE, repeatable: replaces the key's tags.")
@click.option("--expires", help="YYYY-MM-DD.")
@pass_state
def key_update(app: State, key_id: str, tags: tuple[str, ...], **fields: Any) -> None:
    """Change a key's name, alias, tags or expiry."""
    body = {name: value for name, value in fields.items() if value is not None}
    if tags:
        body["tags"] = _tags(tags)
    app.emit(app.portal.request("PATCH", f"/keys/{key_id}/", json=body))


# The lifecycle operations without input: command name -> the API action's path segment.
SIMPLE_OPERATIONS = {
    "deactivate": "Disable the KMS key: nothing can use it until activated.",
    "activate": "Enable the KMS key (re-importing its material if KMS lost it).",
    "upload": "Import the key's material into KMS again.",
    "recreate": "Make a new KMS key with the key's own material (after the KMS key vanished).",
    "cancel-deletion": "Cancel a scheduled deletion.",
    "withdraw-download": "Withdraw a prepared download.",
    "rotate": "Rotate the key's material: a new version in the same KMS key (SPEC §10).",
}


def _simple_operation(action: str, help_text: str) -> click.Command:
    @click.argument("key_id")
    @pass_state
    def run(app: State, key_id: str) -> None:
        app.emit(app.portal.post(f"/keys/{key_id}/{action}/"))

    return click.command(action, cls=ByokCommand, help=help_text)(run)


for _action, _help in SIMPLE_OPERATIONS.items():
    key.add_command(_simple_operation(_action, _help))


@key.command("renew")
@click.argument("key_id")
@click.option("--name", help="The new key's name (default: the old one's).")
@click.option("--expires", help="The new key's expiry, YYYY-MM-DD.")
@pass_state
def key_renew(app: State, key_id: str, **fields: Any) -> None:
    """Replace the key with a new one (new material); the old one becomes REPLACED."""
    app.emit(app.portal.post(f"/keys/{key_id}/renew/", {k: v for k, v in fields.items() if v is not None}))


@key.command("schedule-deletion")
@click.argument("key_id")
@click.option("--pending-window-days", type=click.IntRange(7, 30))
@pass_state
def key_schedule_deletion(app: State, key_id: str, pending_window_days: int | None) -> None:
    body = {} if pending_window_days is None else {"pending_window_days": pending_window_days}
    app.emit(app.portal.post(f"/keys/{key_id}/schedule-deletion/", body))


@key.command("add-replica")
@click.argument("key_id")
@click.option("--region", required=True)
@pass_state
def key_add_replica(app: State, key_id: str, region: str) -> None:
    """Replicate a multi-region key into another region (SPEC §11)."""
    app.emit(app.portal.post(f"/keys/{key_id}/add-replica/", {"region": region}))


@key.command("materials")
@click.argument("key_id")
@pass_state
def key_materials(app: State, key_id: str) -> None:
    """The key's material versions (SPEC §10)."""
    app.emit(list(app.portal.pages(f"/keys/{key_id}/materials/", limit=None)), None)


@key.command("prepare-download")
@click.argument("key_id")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False), required=True, help="RSA public key, PEM.")
@pass_state
def key_prepare_download(app: State, key_id: str, public_key: str) -> None:
    """Register the RSA public key a second custodian's download will be wrapped for."""
    pem = Path(public_key).read_text(encoding="ascii")
    app.emit(app.portal.post(f"/keys/{key_id}/prepare-download/", {"public_key": pem}))


def _write_private(path: str, data: bytes) -> None:
    """A file only its owner can read, never over an existing one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise errors.CliError(f"{path} exists: choose a new file name", errors.USAGE) from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@key.command("download")
@click.argument("key_id")
@click.option(
    "--private-key", type=click.Path(exists=True, dir_okay=False), required=True, help="Your RSA private key, PEM."
)
@click.option("--private-key-password-env", metavar="VAR", help="Environment variable holding its passphrase.")
@click.option("--material-out", metavar="FILE", help="Write the unwrapped material here (mode 0600; never printed).")
@click.option("--save-wrapped", metavar="FILE", help="Also keep the portal's answer (the wrapped material) here.")
@pass_state
def key_download(
    app: State,
    key_id: str,
    private_key: str,
    private_key_password_env: str | None,
    material_out: str | None,
    save_wrapped: str | None,
) -> None:
    """Download a prepared key, unwrap it here with your private key and verify its check value.

    It prepares nothing: another custodian ran `byok key prepare-download` with your public key
    (two-person rule). The KCV (symmetric, HMAC) or public-key SHA-256 (RSA, EC) computed here
    must equal the portal's, else exit 8. The material is written only to --material-out.
    """
    password = os.environ[private_key_password_env].encode() if private_key_password_env else None
    try:
        rsa_key = unwrap.load_private_key(Path(private_key).read_bytes(), password)
    except unwrap.UnwrapError as exc:
        raise errors.CliError(str(exc), errors.USAGE) from exc
    download = app.portal.post(f"/keys/{key_id}/download/")
    if save_wrapped:
        _write_private(save_wrapped, json.dumps(download, indent=2).encode())
    mine = unwrap.fingerprint(rsa_key)
    if download.get("public_key_fingerprint") and download["public_key_fingerprint"] != mine:
        raise errors.CliError(
            f"the download is wrapped for {download['public_key_fingerprint']}, not for this private key ({mine})",
            errors.CHECK_FAILED,
        )
    try:
        opened = unwrap.open_download(download, rsa_key)
    except unwrap.UnwrapError as exc:
        raise errors.CliError(str(exc), errors.CHECK_FAILED) from exc
    if material_out and opened.ok:
        _write_private(material_out, opened.current.material)
    result = {
        "key_id": download.get("key_id"),
        "key_spec": download.get("key_spec"),
        "wrapping_algorithm": download.get("wrapping_algorithm"),
        "public_key_fingerprint": mine,
        "check_value": opened.current.check_value,
        "expected_check_value": opened.current.expected,
        "verified": opened.ok,
        "versions": [
            {"version": version, "check_value": c.check_value, "verified": c.ok} for version, c in opened.versions
        ],
        "material_file": material_out if material_out and opened.ok else None,
        "wrapped_file": save_wrapped,
    }
    app.emit(result)
    if not opened.ok:
        raise errors.CliError("check value mismatch: the material is not what the portal holds", errors.CHECK_FAILED)


# --- approvals (SPEC §12, §16) --------------------------------------------------------------


@cli.group()
def approval() -> None:
    """Approval requests of operations under a keystore's approval policy."""


@approval.command("list")
@click.option("--state", help="e.g. PENDING, APPROVED, REJECTED.")
@click.option("--keystore")
@click.option("--key")
@click.option("--limit", type=int)
@pass_state
def approval_list(app: State, limit: int | None, **filters: Any) -> None:
    app.emit(list(app.portal.pages("/approvals/", limit=limit, **filters)), APPROVAL_COLUMNS)


@approval.command("show")
@click.argument("request_id")
@pass_state
def approval_show(app: State, request_id: str) -> None:
    app.emit(app.portal.get(f"/approvals/{request_id}/"))


def _decision(action: str) -> click.Command:
    @click.argument("request_id")
    @pass_state
    def run(app: State, request_id: str) -> None:
        app.emit(app.portal.post(f"/approvals/{request_id}/{action}/"))

    return click.command(action, cls=ByokCommand, help=f"{action.capitalize()} an approval request.")(run)


for _decision_name in ("approve", "reject", "cancel"):
    approval.add_command(_decision(_decision_name))


# --- audit ----------------------------------------------------------------------------------


def _audit_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    for name in ("until", "since", "outcome", "operation", "actor", "key", "keystore"):
        command = click.option(f"--{name}")(command)
    return command


@cli.group()
def audit() -> None:
    """The audit trail: events, export, chain verification."""


@audit.command("list")
@_audit_filters
@click.option("--limit", type=int, default=100, show_default=True)
@pass_state
def audit_list(app: State, limit: int, **filters: Any) -> None:
    events = list(app.portal.pages("/audit/events/", limit=limit, **filters))
    if app.output == "table":
        rows = [
            {
                "seq": e["seq"],
                "time": e["time"],
                "actor": (e.get("actor") or {}).get("name"),
                "operation": e["operation"],
                "outcome": e["outcome"],
                "key": (e.get("key") or {}).get("alias") or (e.get("key") or {}).get("id"),
                "reason": e.get("reason"),
            }
            for e in events
        ]
        app.emit(rows, ("seq", "time", "actor", "operation", "outcome", "key", "reason"))
    else:
        app.emit(events)


@audit.command("export")
@_audit_filters
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="File to write (default: standard output).")
@pass_state
def audit_export(app: State, fmt: str, out: str | None, **filters: Any) -> None:
    """Stream the events as JSON Lines or CSV."""
    chunks = app.portal.stream("/audit/events/export/", {"format": fmt, **filters})
    if out:
        with open(out, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
    else:
        stream = sys.stdout.buffer
        for chunk in chunks:
            stream.write(chunk)
        stream.flush()


@audit.command("verify")
@click.option("--expect-seq", type=int, help="A published head's sequence number.")
@click.option("--expect-hash", help="A published head's hash.")
@pass_state
def audit_verify(app: State, expect_seq: int | None, expect_hash: str | None) -> None:
    """Verify the hash chain; exit 8 when an event was changed, removed or inserted."""
    result = app.portal.get("/audit/verify/", expect_seq=expect_seq, expect_hash=expect_hash)
    app.emit(result)
    if not result.get("ok"):
        raise errors.CliError(
            f"the audit chain does not verify at event {result.get('first_bad')}", errors.CHECK_FAILED
        )


# --- tokens ---------------------------------------------------------------------------------


@cli.group()
def token() -> None:
    """Your API tokens (superusers: a service account's, with --owner)."""


@token.command("list")
@click.option("--owner", type=int, help="A service account's id (superusers).")
@pass_state
def token_list(app: State, owner: int | None) -> None:
    app.emit(list(app.portal.pages("/tokens/", limit=None, owner=owner)), TOKEN_COLUMNS)


@token.command("create")
@click.option("--name", required=True)
@click.option("--scope", type=click.Choice(["read", "write"]), default="read", show_default=True)
@click.option("--expires-in-days", type=click.IntRange(1, 365), default=90, show_default=True)
@click.option("--keystore", "keystores", multiple=True, help="Limit to this keystore id (repeatable).")
@click.option("--owner", type=int, help="A service account's id (superusers).")
@pass_state
def token_create(app: State, keystores: tuple[str, ...], owner: int | None, **fields: Any) -> None:
    """Make a token; its secret is printed this once."""
    body: dict[str, Any] = {**fields, "keystores": list(keystores)}
    if owner is not None:
        body["owner"] = owner
    made = app.portal.post("/tokens/", body)
    app.emit(made)
    click.echo("byok: the token is shown this once: store it now.", err=True)


@token.command("revoke")
@click.argument("token_id")
@pass_state
def token_revoke(app: State, token_id: str) -> None:
    """Revoke a token: refused from the next request on."""
    app.portal.request("DELETE", f"/tokens/{token_id}/")
    app.emit({"id": token_id, "revoked": True})


# --- shell completion -----------------------------------------------------------------------


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script: e.g. `eval "$(byok completion bash)"` in ~/.bashrc."""
    completion_class = get_completion_class(shell)
    assert completion_class is not None  # click ships all three
    click.echo(completion_class(cli, {}, "byok", "_BYOK_COMPLETE").source())


def main() -> None:
    cli(prog_name="byok")


if __name__ == "__main__":
    main()
