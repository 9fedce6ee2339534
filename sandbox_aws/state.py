"""The sandbox's state on disk, so that restarting it keeps every KMS key, role and session.

moto keeps AWS state in memory only; a sandbox that forgets its keys on restart leaves
the portal with keys KMS has never heard of. When the sandbox runs with a state file
(``python -m sandbox_aws --state var/sandbox/state.json``, as ``make run`` does), every
AWS call that may have changed something is followed by a snapshot of the state, written
*before* the response goes out: whatever a caller was told has happened survives a
restart, or a crash right after the answer.

What is kept (format ``byok-sandbox-state/1``, JSON):

- KMS keys per account and region: id, ARN, creation date, description, usage, spec,
  origin, policy, key state, deletion date, every key material (id, digest, the material
  while imported, state, expiry, rotation date), open import tokens (with the private
  half of their wrapping key), aliases and tags;
- IAM roles per account: name, path, trust policy, inline policies, description, tags;
- STS sessions that have not expired yet, so credentials handed out before a restart keep
  working after it, as they would on AWS.

Grants, automatic rotations of AWS_KMS keys and the key pairs of asymmetric KMS keys are not kept (the portal
uses none of them): asymmetric keys get a new key pair after a restart.

**The file holds key material in the clear**, as AWS holds it inside its HSMs: this is a
sandbox standing in for AWS, never a place for real keys. It is written with mode 0600 in
a 0700 directory, and nothing here logs it.

Writes are atomic: the snapshot goes to a temporary file in the same directory, is
flushed and fsynced, then renamed over the old file (and the directory fsynced), so a
crash mid-write leaves the previous state whole. Only an explicit reset (``--reset``,
``make sandbox-reset`` or ``POST /_sandbox/reset``) starts from nothing; a state file that
cannot be read stops the sandbox instead of being silently replaced.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto.iam.models import AccessKey, iam_backends
from moto.kms.models import Alias, kms_backends
from moto.moto_api._internal.models import moto_api_backend
from moto.sts.models import AssumedRole, sts_backends

from sandbox_aws import kms_regions
from sandbox_aws.kms import ImportParameters, SandboxKey, SandboxKmsBackend, utc_now
from sandbox_aws.kms_materials import CURRENT, Material, material_id
from sandbox_aws.locking import SANDBOX_LOCK

FORMAT = "byok-sandbox-state/1"
TEMPORARY_KEY_PREFIX = "ASIA"

# Calls that only read: nothing to write after them. (A read may first apply time-driven
# changes, such as expired material; those happen again from the saved state after a
# restart, so they need no write.) Anything else, including a call that failed half-way,
# is followed by a snapshot, written only if it differs from the last one.
READ_ONLY_PREFIXES = ("Describe", "List", "Get")
WRITING_READS = {"GetParametersForImport"}


class StateFileError(Exception):
    """The state file exists but cannot be used; the sandbox refuses to start over it."""


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def _unb64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text is not None else None


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _aware(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def _naive(text: str | None) -> datetime | None:
    """moto keeps some timestamps (deletion date, session expiry) as naive UTC."""
    moment = _aware(text)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment is not None else None


# --- snapshot --------------------------------------------------------------------------


def _key_snapshot(backend: SandboxKmsBackend, key: SandboxKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "arn": key.arn,
        "creation_date": key.creation_date,
        "description": key.description,
        "key_usage": key.key_usage,
        "key_spec": key.key_spec,
        "origin": key.origin,
        "policy": key.policy,
        "multi_region": key.multi_region,
        "key_state": key.key_state,
        "enabled": key.enabled,
        "key_rotation_status": key.key_rotation_status,
        "deletion_date": _iso(key.deletion_date),
        "materials": [
            {
                "id": entry.material_id,
                "digest": _b64(entry.digest),
                "material": _b64(entry.material),
                "state": entry.state,
                "description": entry.description,
                "expiration_model": entry.expiration_model,
                "valid_to": _iso(entry.valid_to),
                "rotation_date": _iso(entry.rotation_date),
                "rotation_type": entry.rotation_type,
            }
            for entry in key.materials
        ],
        "rotation_started": _iso(key.rotation_started),
        "import_tokens": [
            {
                "token": _b64(token),
                "wrapping_algorithm": params.wrapping_algorithm,
                "valid_to": _iso(params.valid_to),
                "private_key": params.private_key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ).decode("ascii"),
            }
            for token, params in key.import_parameters.items()
        ],
        "aliases": sorted(key.aliases),
        "tags": backend.tagger.get_tag_dict_for_resource(key.id),
        "replication": kms_regions.snapshot(key),
    }


def _kms_snapshot() -> list[dict[str, Any]]:
    regions = []
    for account_id, account_backends in list(kms_backends.items()):
        for region, backend in list(account_backends.items()):
            if isinstance(backend, SandboxKmsBackend) and backend.keys:
                keys = [_key_snapshot(backend, key) for key in backend.keys.values()]
                regions.append({"account": account_id, "region": region, "keys": keys})
    return regions


def _iam_snapshot(now: datetime) -> list[dict[str, Any]]:
    sessions = {
        role.access_key_id: role
        for account_backends in list(sts_backends.values())
        for backend in list(account_backends.values())
        for role in backend.assumed_roles
        if role.expiration > now.replace(tzinfo=None)
    }
    accounts = []
    for account_id, account_backends in list(iam_backends.items()):
        for partition, backend in list(account_backends.items()):
            roles = [
                {
                    "id": role.id,
                    "name": role.name,
                    "path": role.path,
                    "trust_policy": role.assume_role_policy_document,
                    "inline_policies": dict(role.policies),
                    "description": role.description,
                    "tags": role.tags,
                    "max_session_duration": role.max_session_duration,
                    "create_date": _iso(role.create_date),
                }
                for role in backend.roles.values()
            ]
            live = [
                {
                    "access_key_id": key.access_key_id,
                    "secret_access_key": key.secret_access_key,
                    "session_token": sessions[key.access_key_id].session_token,
                    "role_arn": key.role_arn,
                    "session_name": sessions[key.access_key_id].session_name,
                    "region": sessions[key.access_key_id].region_name,
                    "external_id": sessions[key.access_key_id].external_id,
                    "expiration": _iso(sessions[key.access_key_id].expiration),
                }
                for key in backend.access_keys.values()
                if key.user_name is None and key.access_key_id in sessions
            ]
            if roles or live:
                accounts.append({"account": account_id, "partition": partition, "roles": roles, "sessions": live})
    return accounts


def snapshot() -> dict[str, Any]:
    """Everything the sandbox keeps across restarts, as JSON-ready data (material included: see above)."""
    with SANDBOX_LOCK:
        return {"format": FORMAT, "kms": _kms_snapshot(), "iam": _iam_snapshot(utc_now())}


# --- restore ---------------------------------------------------------------------------


def _restore_materials(key_id: str, data: dict[str, Any]) -> list[Material]:
    """A key's materials; a file written before keys had several gives its one material (or its digest)."""
    if "materials" in data:
        return [
            Material(
                material_id=item["id"],
                digest=_unb64(item["digest"]) or b"",
                material=_unb64(item["material"]),
                state=item["state"],
                description=item["description"],
                expiration_model=item["expiration_model"],
                valid_to=_aware(item["valid_to"]),
                rotation_date=_aware(item["rotation_date"]),
                rotation_type=item["rotation_type"],
            )
            for item in data["materials"]
        ]
    digest = _unb64(data.get("accepted_material_digest"))
    if digest is None:
        return []
    return [
        Material(
            material_id=material_id(key_id, digest),
            digest=digest,
            material=_unb64(data.get("material")),
            state=CURRENT,
            expiration_model=data.get("expiration_model"),
            valid_to=_aware(data.get("valid_to")),
        )
    ]


def _restore_key(backend: SandboxKmsBackend, data: dict[str, Any]) -> None:
    # Built through the constructor so moto's own attributes exist, then given back its identity.
    key = SandboxKey(  # type: ignore[abstract]  # see SandboxKmsBackend.create_key
        data["policy"],
        data["key_usage"],
        data["key_spec"],
        data["description"],
        backend.account_id,
        backend.region_name,
        data["multi_region"],
        data["origin"],
    )
    key.id = data["id"]
    key.arn = data["arn"]
    key.creation_date = data["creation_date"]
    key.key_state = data["key_state"]
    key.enabled = data["enabled"]
    key.key_rotation_status = data["key_rotation_status"]
    key.deletion_date = _naive(data["deletion_date"])
    key.materials = _restore_materials(key.id, data)
    key.rotation_started = _aware(data.get("rotation_started"))
    key.settle()  # sets key_material (what moto's cryptography reads) from the current material
    for token in data["import_tokens"]:
        private_key = serialization.load_pem_private_key(token["private_key"].encode("ascii"), password=None)
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise StateFileError(f"import token of key {key.id}: not an RSA wrapping key")
        valid_to = _aware(token["valid_to"])
        assert valid_to is not None
        params = ImportParameters(private_key, token["wrapping_algorithm"], valid_to)
        key.import_parameters[_unb64(token["token"]) or b""] = params
    kms_regions.restore(key, data.get("replication"))
    backend.keys[key.id] = key
    for alias in data["aliases"]:
        # moto's models are instantiable; their CloudFormation hooks are abstract only for type checkers.
        key.aliases[alias] = Alias(  # type: ignore[abstract]
            account_id=backend.account_id, region=backend.region_name, name=alias, key=key
        )
    if data["tags"]:
        backend.tagger.tag_resource(key.id, [{"TagKey": k, "TagValue": v} for k, v in data["tags"].items()])


def _restore_account(data: dict[str, Any]) -> None:
    backend = iam_backends[data["account"]][data["partition"]]
    for role_data in data["roles"]:
        role = backend.create_role(
            role_name=role_data["name"],
            assume_role_policy_document=role_data["trust_policy"],
            path=role_data["path"],
            permissions_boundary=None,
            description=role_data["description"],
            tags=role_data["tags"],
            max_session_duration=role_data["max_session_duration"],
        )
        # Keep the role's id (it is part of assumed-role user ids) and its creation date.
        del backend.roles[role.id]
        role.id = role_data["id"]
        role.create_date = _naive(role_data["create_date"]) or role.create_date
        role.policies.update(role_data["inline_policies"])
        backend.roles[role.id] = role
    for session in data["sessions"]:
        access_key = AccessKey(  # type: ignore[abstract]  # as Alias above
            user_name=None, prefix=TEMPORARY_KEY_PREFIX, account_id=data["account"]
        )
        access_key.access_key_id = session["access_key_id"]
        access_key.secret_access_key = session["secret_access_key"]
        access_key.role_arn = session["role_arn"]
        backend.access_keys[access_key.access_key_id] = access_key
        assumed = AssumedRole(
            account_id=data["account"],
            region_name=session["region"],
            access_key=access_key,
            role_session_name=session["session_name"],
            role_arn=session["role_arn"],
            policy="",
            duration=0,
            external_id=session["external_id"],
        )
        assumed.expiration = _naive(session["expiration"]) or assumed.expiration
        assumed.session_token = session["session_token"]
        sts_backends[data["account"]][data["partition"]].assumed_roles.append(assumed)


def restore(document: dict[str, Any]) -> None:
    """Replace whatever the sandbox holds in memory with ``document`` (a :func:`snapshot`)."""
    if document.get("format") != FORMAT:
        raise StateFileError(f"unknown state format {document.get('format')!r}; expected {FORMAT!r}")
    with SANDBOX_LOCK:
        moto_api_backend.reset()
        for region_data in document["kms"]:
            backend = kms_backends[region_data["account"]][region_data["region"]]
            if not isinstance(backend, SandboxKmsBackend):
                raise StateFileError("sandbox KMS patches are not installed")
            for key_data in region_data["keys"]:
                _restore_key(backend, key_data)
        for account_data in document["iam"]:
            _restore_account(account_data)


# --- the file ------------------------------------------------------------------------


def is_read_only(action: str) -> bool:
    """Whether an AWS action leaves the sandbox's state as it found it."""
    return action.startswith(READ_ONLY_PREFIXES) and action not in WRITING_READS


@dataclass
class StateFile:
    """The JSON file the sandbox's state lives in, written atomically after every change."""

    path: Path
    _last_written: bytes | None = None

    def load(self) -> bool:
        """Restore the state from the file; False (and nothing restored) if there is no file yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return False
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise StateFileError(
                f"{self.path} is not a sandbox state file ({exc}); move it away, or reset the sandbox"
            ) from None
        try:
            restore(document)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"{self.path} could not be restored ({type(exc).__name__}: {exc})") from None
        self._last_written = raw
        return True

    def save(self) -> None:
        """Write the current state if it changed since the last write: temp file, fsync, rename, fsync dir."""
        with SANDBOX_LOCK:
            payload = json.dumps(snapshot(), sort_keys=True, separators=(",", ":")).encode()
            if payload == self._last_written:
                return
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
            _fsync_directory(self.path.parent)
            self._last_written = payload

    def remove(self) -> None:
        """Forget the saved state (an explicit reset)."""
        with SANDBOX_LOCK:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            _fsync_directory(self.path.parent)
            self._last_written = None


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable: the directory entry is data too."""
    with contextlib.suppress(FileNotFoundError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# The state file of the running sandbox, if it has one. One per process: moto's state is
# process-wide, so two servers with two files would write each other's keys.
_active: StateFile | None = None


def activate(state_file: StateFile | None) -> None:
    """Make ``state_file`` the one written after every change (None: keep state in memory only)."""
    global _active
    with SANDBOX_LOCK:
        if state_file is not None and _active is not None and _active.path != state_file.path:
            raise StateFileError(f"this process already keeps its sandbox state in {_active.path}")
        _active = state_file


def active() -> StateFile | None:
    return _active


def after_call(action: str) -> None:
    """Called after every AWS call, under the sandbox lock: persist what it changed."""
    if _active is not None and not is_read_only(action):
        _active.save()


def after_change() -> None:
    """Called after a ``/_sandbox/`` request changed state (purge)."""
    if _active is not None:
        _active.save()
