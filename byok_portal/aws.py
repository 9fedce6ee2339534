"""The one thin layer in front of boto3: every AWS call the portal makes is here.

Each keystore is reached by assuming its role with its ExternalId; the temporary
credentials are cached per keystore, operation and acting identity until shortly
before they expire. Every AssumeRole names the portal operation (``RoleSessionName``)
and the person or job acting (``SourceIdentity``), so the customer's CloudTrail shows
who did what through the portal (SPEC §14, docs/operations.md). AWS errors
become :class:`AwsError`, which keeps AWS's own code, message and request id so the
user and the audit trail see what AWS said. Key material passes through
:meth:`KmsSession.import_material` only, wrapped before it leaves the process.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import botocore.exceptions
from botocore.config import Config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings

from byok_portal import kms_quotas, metrics, wrapping
from byok_portal.vocabulary import KmsState

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_sts import STSClient

# Refresh assumed-role credentials this long before AWS says they expire, so a
# multi-step operation never starts with credentials about to lapse.
CREDENTIAL_REFRESH_MARGIN = dt.timedelta(minutes=5)
SESSION_NAME = "byok-portal"
# AWS's rules for RoleSessionName and SourceIdentity: 2-64 of [\w+=,.@-] (ASCII), and a
# SourceIdentity may not start with "aws:" (moot while ":" is refused, checked anyway).
_AWS_NAME_REFUSED = re.compile(r"[^\w+=,.@-]", re.ASCII)
AWS_NAME_MIN, AWS_NAME_MAX = 2, 64
_NAME_DIGEST_CHARS = 8

_AWS_STATE_TO_KMS_STATE = {
    "Enabled": KmsState.ENABLED,
    "Disabled": KmsState.DISABLED,
    "PendingImport": KmsState.EMPTY,
    "PendingDeletion": KmsState.PENDING_DELETION,
    # A multi-Region primary scheduled for deletion, waiting for its replicas to be deleted first.
    "PendingReplicaDeletion": KmsState.PENDING_DELETION,
}
# A new multi-Region replica is "Creating" for a few seconds; AWS says to wait with DescribeKey.
CREATING = "Creating"


class Keystore(Protocol):
    """What this layer needs of a keystore: an id for caching, and the role to assume where.

    A protocol, not the model: the AWS layer knows no models (``keystores.models.Keystore`` fits it).
    """

    @property
    def pk(self) -> Any: ...
    @property
    def role_arn(self) -> str: ...
    @property
    def external_id(self) -> str: ...
    @property
    def region(self) -> str: ...


class Acting(Protocol):
    """Who acts, as CloudTrail should name them: ``accounts.identity.Actor`` fits it."""

    @property
    def source_identity(self) -> str: ...


def aws_name(text: str) -> str:
    """``text`` as a valid RoleSessionName/SourceIdentity: itself when it already is one.

    Otherwise refused characters become ``_`` and a digest of the original is appended
    (cut to fit 64), so two different identities never end up with the same name.
    """
    clean = _AWS_NAME_REFUSED.sub("_", text)
    if clean == text and AWS_NAME_MIN <= len(clean) <= AWS_NAME_MAX and not clean.lower().startswith("aws:"):
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:_NAME_DIGEST_CHARS]
    return f"{clean[: AWS_NAME_MAX - _NAME_DIGEST_CHARS - 1]}.{digest}"


@dataclass(frozen=True)
class SessionTag:
    """What one AssumeRole tells CloudTrail: the portal operation and the acting identity (already valid)."""

    session_name: str = SESSION_NAME
    source_identity: str = ""

    @classmethod
    def of(cls, operation: str, acting: Acting | None) -> SessionTag:
        return cls(
            session_name=aws_name(f"byok-{operation}") if operation else SESSION_NAME,
            source_identity=aws_name(acting.source_identity) if acting is not None else "",
        )


class AwsError(Exception):
    """An AWS call failed. ``kind`` is the API error code: ``kms_error`` or ``aws_connection_error``."""

    def __init__(
        self, *, kind: str, operation: str, code: str, message: str, request_id: str = "", region: str = ""
    ) -> None:
        self.kind = kind
        self.operation = operation
        self.code = code
        self.message = message
        self.request_id = request_id
        # The region the call went to (a multi-Region key's calls go to several).
        self.region = region
        super().__init__(f"{operation} failed: {code}: {message}")


def _botocore_config() -> Config:
    return Config(
        connect_timeout=settings.BYOK_AWS_CONNECT_TIMEOUT,
        read_timeout=settings.BYOK_AWS_READ_TIMEOUT,
        # Standard mode: jittered exponential backoff on throttling and transient errors. (Adaptive
        # mode's per-client rate guess is replaced by the shared quota schedules, see _pace_kms.)
        retries={"mode": "standard", "max_attempts": settings.BYOK_AWS_MAX_ATTEMPTS},
        user_agent_extra="byok-portal",
    )


def _endpoint_kwargs() -> dict[str, Any]:
    """The sandbox when BYOK_SANDBOX is on; otherwise boto3's own resolution (AWS_ENDPOINT_URL included)."""
    if settings.BYOK_SANDBOX:
        return {
            "endpoint_url": settings.BYOK_SANDBOX_URL,
            "aws_access_key_id": "sandbox",
            "aws_secret_access_key": "sandbox",
        }
    return {}


def _translate(exc: Exception, *, operation: str, kind: str) -> AwsError:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        return AwsError(
            kind=kind,
            operation=operation,
            code=str(err.get("Code", "Unknown")),
            message=str(err.get("Message", "")),
            request_id=str(meta.get("RequestId", "")),
        )
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError | botocore.exceptions.ReadTimeoutError):
        return AwsError(kind="aws_connection_error", operation=operation, code="Timeout", message=str(exc))
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return AwsError(kind="aws_connection_error", operation=operation, code="NoCredentials", message=str(exc))
    return AwsError(kind="aws_connection_error", operation=operation, code=type(exc).__name__, message=str(exc))


_CALL_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


def _sts_client(region: str) -> STSClient:
    return boto3.client("sts", region_name=region, config=_botocore_config(), **_endpoint_kwargs())


@dataclass
class _CachedCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expires_at: dt.datetime


class _CredentialCache:
    """Assumed-role credentials per keystore, operation and identity; a cache, so losing it costs one AssumeRole.

    The session tag is part of the key: a session carries its SourceIdentity for its
    whole life, so handing it to anyone else would show them in CloudTrail as the
    first identity. The price is one AssumeRole per (keystore, operation, identity)
    per session lifetime instead of one per keystore (bench/correlation_bench.py).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str, str, SessionTag], _CachedCredentials] = {}

    def get(self, keystore: Keystore, tag: SessionTag | None = None) -> _CachedCredentials:
        tag = tag or SessionTag()
        cache_key = (str(keystore.pk), keystore.role_arn, keystore.external_id, keystore.region, tag)
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            cached = self._entries.get(cache_key)
            if cached and cached.expires_at - CREDENTIAL_REFRESH_MARGIN > now:
                return cached
        fresh = self._assume(keystore, tag)
        with self._lock:
            self._entries[cache_key] = fresh
        return fresh

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def clear_for(self, keystore: Keystore) -> None:
        """Forget one keystore's credentials, e.g. so "Test connection" proves the role works right now."""
        with self._lock:
            for cache_key in [k for k in self._entries if k[0] == str(keystore.pk)]:
                del self._entries[cache_key]

    @staticmethod
    def _assume(keystore: Keystore, tag: SessionTag) -> _CachedCredentials:
        extra: dict[str, Any] = {"SourceIdentity": tag.source_identity} if tag.source_identity else {}
        try:
            response = _sts_client(keystore.region).assume_role(
                RoleArn=keystore.role_arn,
                RoleSessionName=tag.session_name,
                ExternalId=keystore.external_id,
                DurationSeconds=settings.BYOK_AWS_SESSION_SECONDS,
                **extra,
            )
        except _CALL_ERRORS as exc:
            raise _translate(exc, operation="AssumeRole", kind="aws_connection_error") from exc
        creds = response["Credentials"]
        return _CachedCredentials(
            access_key_id=creds["AccessKeyId"],
            secret_access_key=creds["SecretAccessKey"],
            session_token=creds["SessionToken"],
            expires_at=creds["Expiration"],
        )


credential_cache = _CredentialCache()


def role_admits_without_external_id(keystore: Keystore) -> bool:
    """Whether the keystore's role can be assumed *without* its ExternalId: a trust policy open to confused deputies.

    AWS answers AccessDenied when the trust policy requires the ExternalId, which is
    what we hope for; the session a success would return is dropped unused.
    """
    try:
        _sts_client(keystore.region).assume_role(
            RoleArn=keystore.role_arn, RoleSessionName=f"{SESSION_NAME}-external-id-check", DurationSeconds=900
        )
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "AccessDenied":
            return False
        raise _translate(exc, operation="AssumeRole", kind="aws_connection_error") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise _translate(exc, operation="AssumeRole", kind="aws_connection_error") from exc
    return True


def role_refuses_source_identity(keystore: Keystore) -> bool:
    """Whether the role admits the portal only *without* a SourceIdentity: a trust policy from before SPEC §14.

    Asked after an AccessDenied, to tell the customer the one thing to change (allow
    ``sts:SetSourceIdentity``) rather than "access denied"; the session is dropped unused.
    """
    try:
        _sts_client(keystore.region).assume_role(
            RoleArn=keystore.role_arn,
            RoleSessionName=f"{SESSION_NAME}-source-identity-check",
            ExternalId=keystore.external_id,
            DurationSeconds=900,
        )
    except _CALL_ERRORS:
        return False
    return True


@dataclass(frozen=True)
class KmsKeyInfo:
    """What DescribeKey says of a KMS key, in the portal's terms.

    For a multi-Region key, ``primary_region`` and ``replicas`` (region → ARN) say where its
    other regional keys are; both are empty for a single-Region key.
    """

    arn: str
    aws_state: str
    state: KmsState
    deletion_date: dt.datetime | None
    origin: str
    primary_region: str = ""
    replicas: Mapping[str, str] = field(default_factory=dict)
    # The material new ciphertexts use (symmetric keys; empty for HMAC and asymmetric keys).
    current_key_material_id: str = ""


@dataclass(frozen=True)
class KmsMaterialInfo:
    """One key material of a KMS key, as ``ListKeyRotations(IncludeKeyMaterial=ALL_KEY_MATERIAL)`` lists it."""

    key_material_id: str
    state: str  # CURRENT, NON_CURRENT, PENDING_ROTATION, PENDING_MULTI_REGION_IMPORT_AND_ROTATION
    imported: bool  # ImportState IMPORTED (False: PENDING_IMPORT, i.e. deleted or expired)
    description: str = ""
    rotation_date: dt.datetime | None = None
    valid_to: dt.datetime | None = None


class WrapsForImport(Protocol):
    """Material that wraps itself for ImportKeyMaterial (custody in an HSM, SPEC §13)."""

    def import_wrapping_algorithm(self, requested: str) -> str:
        """The WrappingAlgorithm to ask GetParametersForImport for, given the one the key spec calls for."""

    def wrap_for_import(self, public_key_der: bytes, algorithm: str) -> bytes:
        """The material wrapped under KMS's wrapping public key (DER SubjectPublicKeyInfo) with ``algorithm``."""


@dataclass
class KmsSession:
    """KMS calls for one keystore, collecting AWS request ids for the audit trail.

    :meth:`in_region` gives the session of the same keystore in another region (a
    multi-Region key's replicas), with the same assumed role and the same lists of request
    ids, so one operation's audit event names every call it made, in every region.
    """

    client: KMSClient
    request_ids: list[str] = field(default_factory=list)
    # Operations that succeeded only after botocore retried them: AWS may have executed them more than once.
    retried: list[str] = field(default_factory=list)
    region: str = ""
    # Builds this keystore's KMS client for another region (set by kms_for).
    client_for: Callable[[str], KMSClient] | None = None

    def in_region(self, region: str) -> KmsSession:
        """This keystore's KMS session in ``region``, sharing this one's request ids."""
        if region == self.region or not region:
            return self
        if self.client_for is None:
            raise RuntimeError("this KMS session cannot reach other regions")
        return KmsSession(
            client=self.client_for(region),
            request_ids=self.request_ids,
            retried=self.retried,
            region=region,
            client_for=self.client_for,
        )

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        method = getattr(self.client, _snake(operation))
        try:
            response: dict[str, Any] = method(**kwargs)
        except _CALL_ERRORS as exc:
            error = _translate(exc, operation=operation, kind="kms_error")
            error.region = self.region
            metrics.count_kms_error(operation, error.code)
            if error.request_id:
                self.request_ids.append(error.request_id)
            raise error from exc
        if response.get("ResponseMetadata", {}).get("RetryAttempts"):
            self.retried.append(operation)
        request_id = response.get("ResponseMetadata", {}).get("RequestId", "")
        if request_id:
            self.request_ids.append(request_id)
        return response

    # --- keys ---------------------------------------------------------------
    def create_external_key(
        self,
        *,
        description: str,
        tags: Mapping[str, str],
        key_spec: str = "SYMMETRIC_DEFAULT",
        key_usage: str = "ENCRYPT_DECRYPT",
        multi_region: bool = False,
    ) -> str:
        """CreateKey with Origin=EXTERNAL, tagged at creation so it can always be found again.

        ``multi_region``: a multi-Region primary key (``mrk-…``) that :meth:`replicate` copies to other regions.
        """
        response = self._call(
            "CreateKey",
            Origin="EXTERNAL",
            KeySpec=key_spec,
            KeyUsage=key_usage,
            Description=description[:8192],
            Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()],
            **({"MultiRegion": True} if multi_region else {}),
        )
        return str(response["KeyMetadata"]["Arn"])

    def replicate(self, key_id: str, region: str, *, description: str, tags: Mapping[str, str]) -> str:
        """ReplicateKey: the multi-Region primary ``key_id``'s replica in ``region``, tagged; its ARN.

        The replica has no material (import it into the replica, in its region) and is
        ``Creating`` for a moment (:meth:`wait_created`). If it exists already (a retry, or a
        lost answer that botocore retried), AWS answers AlreadyExistsException: that replica is
        the one asked for, as long as it is not on its way out.
        """
        try:
            response = self._call(
                "ReplicateKey",
                KeyId=key_id,
                ReplicaRegion=region,
                Description=description[:8192],
                Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()],
            )
        except AwsError as exc:
            if exc.code != "AlreadyExistsException":
                raise
            existing = self.in_region(region).describe(key_id.rsplit("/", 1)[-1])
            if existing.state == KmsState.PENDING_DELETION:
                raise
            return existing.arn
        return str(response["ReplicaKeyMetadata"]["Arn"])

    def wait_created(self, key_id: str, *, timeout: float = 60.0) -> KmsKeyInfo:
        """DescribeKey until a new replica is no longer ``Creating`` (AWS: "a few seconds")."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            info = self.describe(key_id)
            if info.aws_state != CREATING or time.monotonic() >= deadline:
                return info
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def describe(self, key_id: str) -> KmsKeyInfo:
        meta = self._call("DescribeKey", KeyId=key_id)["KeyMetadata"]
        aws_state = str(meta.get("KeyState", ""))
        regions = meta.get("MultiRegionConfiguration") or {}
        return KmsKeyInfo(
            arn=str(meta["Arn"]),
            aws_state=aws_state,
            state=_AWS_STATE_TO_KMS_STATE.get(aws_state, KmsState.UNKNOWN),
            deletion_date=meta.get("DeletionDate"),
            origin=str(meta.get("Origin", "")),
            primary_region=str((regions.get("PrimaryKey") or {}).get("Region", "")),
            replicas={str(r["Region"]): str(r["Arn"]) for r in regions.get("ReplicaKeys", [])},
            current_key_material_id=str(meta.get("CurrentKeyMaterialId", "")),
        )

    def import_material(
        self,
        key_id: str,
        material: bytes | bytearray | WrapsForImport,
        wrapping_algorithm: str = wrapping.RSAES_OAEP_SHA_256,
        *,
        import_type: str | None = None,
        key_material_id: str = "",
        description: str = "",
        valid_to: dt.datetime | None = None,
    ) -> str:
        """GetParametersForImport (a fresh pair every time: they are single-use, 24 h) + ImportKeyMaterial.

        ``wrapping_algorithm``: RSAES_OAEP_SHA_256 for symmetric and HMAC material,
        RSA_AES_KEY_WRAP_SHA_256 for a PKCS#8 private key (SPEC §9). ``import_type``
        (``NEW_KEY_MATERIAL`` / ``EXISTING_KEY_MATERIAL``), ``key_material_id`` and
        ``description`` are for symmetric keys only: AWS rejects them for HMAC and
        asymmetric keys, so they are sent only when given. Returns the KeyMaterialId
        AWS answers with (empty for HMAC and asymmetric keys).

        ``material`` is plaintext (wrapped here) or a :class:`WrapsForImport` that wraps
        itself (an HSM's material: the plaintext never reaches this process). Its wrap runs
        between the two calls, so an HSM session is never held across a KMS call.

        ``valid_to``: AWS deletes this material at that moment (``KEY_MATERIAL_EXPIRES``; a key's
        ``material_valid_days``, SPEC §10); None: it never expires (``KEY_MATERIAL_DOES_NOT_EXPIRE``).
        """
        if not isinstance(material, bytes | bytearray):
            wrapping_algorithm = material.import_wrapping_algorithm(wrapping_algorithm)
        params = self._call(
            "GetParametersForImport",
            KeyId=key_id,
            WrappingAlgorithm=wrapping_algorithm,
            WrappingKeySpec=settings.BYOK_IMPORT_WRAPPING_KEY_SPEC,
        )
        options: dict[str, Any] = {}
        if import_type:
            options["ImportType"] = import_type
        if key_material_id:
            options["KeyMaterialId"] = key_material_id
        if description:
            options["KeyMaterialDescription"] = description
        if valid_to is not None:
            options["ExpirationModel"] = "KEY_MATERIAL_EXPIRES"
            options["ValidTo"] = valid_to
        else:
            # The portal is the system of record and re-imports on demand; an expiring
            # copy in KMS is only made when a key's policy asks for one (and then re-imported in time).
            options["ExpirationModel"] = "KEY_MATERIAL_DOES_NOT_EXPIRE"
        response = self._call(
            "ImportKeyMaterial",
            KeyId=key_id,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=_wrap_for_import(material, params["PublicKey"], wrapping_algorithm)
            if isinstance(material, bytes | bytearray)
            else material.wrap_for_import(bytes(params["PublicKey"]), wrapping_algorithm),
            **options,
        )
        return str(response.get("KeyMaterialId", ""))

    def key_materials(self, key_id: str) -> list[KmsMaterialInfo]:
        """Every material of a symmetric KMS key, oldest first: ListKeyRotations(ALL_KEY_MATERIAL), all pages.

        Without ``ALL_KEY_MATERIAL`` AWS leaves out the first material and any pending one.
        """
        found: list[KmsMaterialInfo] = []
        marker: str | None = None
        while True:
            kwargs: dict[str, Any] = {"KeyId": key_id, "IncludeKeyMaterial": "ALL_KEY_MATERIAL", "Limit": 1000}
            if marker:
                kwargs["Marker"] = marker
            page = self._call("ListKeyRotations", **kwargs)
            found += [
                KmsMaterialInfo(
                    key_material_id=str(entry["KeyMaterialId"]),
                    state=str(entry.get("KeyMaterialState", "")),
                    imported=entry.get("ImportState", "IMPORTED") == "IMPORTED",
                    description=str(entry.get("KeyMaterialDescription", "")),
                    rotation_date=entry.get("RotationDate"),
                    valid_to=entry.get("ValidTo"),
                )
                for entry in page.get("Rotations", [])
            ]
            if not page.get("Truncated"):
                return found
            marker = page.get("NextMarker")

    def rotate_on_demand(self, key_id: str) -> None:
        """RotateKeyOnDemand: the key's PENDING_ROTATION material becomes current (AWS finishes in the background)."""
        self._call("RotateKeyOnDemand", KeyId=key_id)

    def public_key(self, key_id: str) -> bytes:
        """GetPublicKey: the DER SubjectPublicKeyInfo of an asymmetric KMS key (it must be enabled)."""
        return bytes(self._call("GetPublicKey", KeyId=key_id)["PublicKey"])

    def delete_material(self, key_id: str, key_material_id: str = "") -> None:
        """DeleteImportedKeyMaterial: the material named by ``key_material_id``, or else the current one."""
        if key_material_id:
            self._call("DeleteImportedKeyMaterial", KeyId=key_id, KeyMaterialId=key_material_id)
        else:
            self._call("DeleteImportedKeyMaterial", KeyId=key_id)

    def enable(self, key_id: str) -> None:
        self._call("EnableKey", KeyId=key_id)

    def disable(self, key_id: str) -> None:
        self._call("DisableKey", KeyId=key_id)

    def schedule_deletion(self, key_id: str, days: int) -> dt.datetime | None:
        """ScheduleKeyDeletion; the deletion date, or None for a multi-Region primary that waits for its replicas.

        (Such a primary is ``PendingReplicaDeletion``: its window starts when its last replica is deleted.)
        """
        response = self._call("ScheduleKeyDeletion", KeyId=key_id, PendingWindowInDays=days)
        deletion_date: dt.datetime | None = response.get("DeletionDate")
        return deletion_date

    def cancel_deletion(self, key_id: str) -> None:
        self._call("CancelKeyDeletion", KeyId=key_id)

    # --- aliases and tags ---------------------------------------------------
    def point_alias(self, alias: str, key_id: str) -> None:
        """Make ``alias`` name ``key_id``: UpdateAlias if it exists in the account, else CreateAlias."""
        try:
            self._call("UpdateAlias", AliasName=alias, TargetKeyId=key_id)
        except AwsError as exc:
            if exc.code != "NotFoundException":
                raise
            self._call("CreateAlias", AliasName=alias, TargetKeyId=key_id)

    def create_alias(self, alias: str, key_id: str) -> None:
        """CreateAlias; AlreadyExistsException if the account already uses the name (never stolen silently)."""
        self._call("CreateAlias", AliasName=alias, TargetKeyId=key_id)

    def delete_alias(self, alias: str) -> None:
        try:
            self._call("DeleteAlias", AliasName=alias)
        except AwsError as exc:
            if exc.code != "NotFoundException":
                raise

    def aliases_of(self, key_id: str) -> list[str]:
        response = self._call("ListAliases", KeyId=key_id)
        return [str(a["AliasName"]) for a in response.get("Aliases", [])]

    def tags_of(self, key_id: str) -> dict[str, str]:
        response = self._call("ListResourceTags", KeyId=key_id)
        return {str(t["TagKey"]): str(t["TagValue"]) for t in response.get("Tags", [])}

    def set_tags(self, key_id: str, tags: Mapping[str, str]) -> None:
        if tags:
            self._call("TagResource", KeyId=key_id, Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()])

    def remove_tags(self, key_id: str, tag_keys: list[str]) -> None:
        if tag_keys:
            self._call("UntagResource", KeyId=key_id, TagKeys=tag_keys)

    def find_keys_tagged(self, tag_key: str, tag_value: str) -> Iterator[str]:
        """ARNs of keys carrying ``tag_key=tag_value`` (ListKeys + ListResourceTags: slow, for recovery only)."""
        marker: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Limit": 1000}
            if marker:
                kwargs["Marker"] = marker
            page = self._call("ListKeys", **kwargs)
            for entry in page.get("Keys", []):
                try:
                    tags = self.tags_of(entry["KeyId"])
                except AwsError:
                    continue  # AWS-managed or foreign keys we may not read
                if tags.get(tag_key) == tag_value:
                    yield str(entry["KeyArn"])
            if not page.get("Truncated"):
                return
            marker = page.get("NextMarker")

    def key_arns_page(self, marker: str | None = None) -> tuple[list[str], str | None]:
        """One ListKeys page of the account and region: its key ARNs, and the marker of the next page (or None)."""
        kwargs: dict[str, Any] = {"Limit": 1000}
        if marker:
            kwargs["Marker"] = marker
        page = self._call("ListKeys", **kwargs)
        arns = [str(entry["KeyArn"]) for entry in page.get("Keys", [])]
        return arns, (str(page["NextMarker"]) if page.get("Truncated") and page.get("NextMarker") else None)

    def alias_targets(self) -> Iterator[tuple[str, str]]:
        """``(alias name, target key id)`` of every customer alias in the account and region (ListAliases, paged)."""
        marker: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Limit": 100}
            if marker:
                kwargs["Marker"] = marker
            page = self._call("ListAliases", **kwargs)
            for entry in page.get("Aliases", []):
                if entry.get("TargetKeyId"):  # AWS-managed aliases without a key yet have none
                    yield str(entry["AliasName"]), str(entry["TargetKeyId"])
            if not page.get("Truncated"):
                return
            marker = page.get("NextMarker")

    def probe(self) -> None:
        """A harmless call proving the role works for KMS (used by "Test connection")."""
        self._call("ListAliases", Limit=1)


def _snake(operation: str) -> str:
    out = []
    for i, ch in enumerate(operation):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _wrap_for_import(material: bytes | bytearray, wrapping_public_key_der: bytes, algorithm: str) -> bytes:
    """Wrap material with the public key from GetParametersForImport, with the algorithm asked for."""
    public_key = serialization.load_der_public_key(wrapping_public_key_der)
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise AwsError(
            kind="kms_error",
            operation="GetParametersForImport",
            code="UnexpectedWrappingKey",
            message="KMS returned a wrapping key that is not RSA.",
        )
    return wrapping.wrap(algorithm, public_key, material)


_pacers_lock = threading.Lock()
_pacers: dict[str, kms_quotas.Pacer] = {}


def kms_pacer() -> kms_quotas.Pacer:
    """The quota schedules of this process (one per ``BYOK_KMS_QUOTA_REDIS_URL``)."""
    url = str(settings.BYOK_KMS_QUOTA_REDIS_URL)
    with _pacers_lock:
        pacer = _pacers.get(url)
        if pacer is None:
            pacer = _pacers[url] = kms_quotas.Pacer(url)
        return pacer


def _pace_kms(account: str, region: str, event_name: str, **kwargs: Any) -> None:
    """botocore ``before-send``: wait for this call's slot in its (account, region, operation) schedule.

    Every HTTP attempt passes here, botocore's own retries included, so every KMS call the
    portal makes — whichever method of :class:`KmsSession` or other branch adds it — is paced.
    """
    operation = event_name.rsplit(".", 1)[-1]
    rate = kms_quotas.portal_rate(operation, settings.BYOK_KMS_QUOTA_SHARE, settings.BYOK_KMS_QUOTA_OVERRIDES)
    kms_pacer().acquire(f"{account}:{region}:{operation}", rate)


def _never_retry_hard_limits(response: Any = None, **kwargs: Any) -> bool | None:
    """botocore ``needs-retry``: ``LimitExceededException`` is a hard KMS limit (e.g. 25 rotations), not a throttle.

    botocore's retry modes count it as throttling and would retry it; ``False`` from the
    first handler stops that (any other answer leaves the decision to the retry mode).
    """
    if response is not None and response[1].get("Error", {}).get("Code") == "LimitExceededException":
        return False
    return None


def _paced_kms_client(account: str, region: str, **kwargs: Any) -> KMSClient:
    """A boto3 KMS client whose every call waits for its quota slot and never retries hard limits."""
    client = boto3.client("kms", region_name=region, config=_botocore_config(), **kwargs)
    client.meta.events.register("before-send.kms", functools.partial(_pace_kms, account, region))
    client.meta.events.register_first("needs-retry.kms", _never_retry_hard_limits)  # type: ignore[arg-type]
    return client


def account_of(role_arn: str) -> str:
    """The account id in an IAM role ARN (``arn:aws:iam::<account>:role/...``)."""
    parts = role_arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def _count_kms_attempt(response: Any = None, operation: Any = None, **kwargs: Any) -> None:
    """botocore's ``needs-retry`` event, after every attempt: counts calls and ThrottlingExceptions.

    Per attempt, not per call: botocore retries throttles itself, and each throttle
    is AWS saying the account+region's quota is spent (what quota pacing needs to know).
    """
    if response is None or operation is None:
        return  # no answer (connection error): not a KMS call AWS counted
    code = response[1].get("Error", {}).get("Code") if isinstance(response[1], dict) else None
    metrics.count_kms_attempt(str(operation.name), code)


_clients_lock = threading.Lock()
_clients: dict[tuple[str, str, str], KMSClient] = {}


def kms_for(keystore: Keystore, region: str = "", *, operation: str = "", acting: Acting | None = None) -> KmsSession:
    """A KMS session in the keystore's account and region (or ``region``), through its assumed role.

    ``operation`` and ``acting`` name the AssumeRole session for CloudTrail (SPEC §14);
    without them the session is the anonymous ``byok-portal``. Clients are reused while
    the credentials last: building a boto3 client costs more than most KMS calls, and
    clients are thread-safe. The assumed role's credentials are global; only the client
    is per region.
    """
    tag = SessionTag.of(operation, acting)
    home = KmsSession(
        client=_kms_client(keystore, keystore.region, tag),
        region=keystore.region,
        client_for=lambda other: _kms_client(keystore, other, tag),
    )
    return home.in_region(region or keystore.region)


def _kms_client(keystore: Keystore, region: str, tag: SessionTag) -> KMSClient:
    creds = credential_cache.get(keystore, tag)
    kwargs = _endpoint_kwargs()
    cache_key = (creds.access_key_id, region, str(kwargs.get("endpoint_url", "")))
    with _clients_lock:
        client = _clients.get(cache_key)
    if client is None:
        kwargs.update(
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            aws_session_token=creds.session_token,
        )
        client = _paced_kms_client(account_of(keystore.role_arn), region, **kwargs)
        client.meta.events.register("needs-retry.kms", _count_kms_attempt)
        with _clients_lock:
            if len(_clients) > 1000:  # expired credentials' clients: drop them all, rebuilding is cheap enough
                _clients.clear()
            _clients[cache_key] = client
    return client


_principal_lock = threading.Lock()
_principal_arn: str | None = None


def portal_principal_arn() -> str:
    """The ARN customers must trust: BYOK_AWS_PRINCIPAL_ARN, else what STS says we are."""
    global _principal_arn
    if settings.BYOK_AWS_PRINCIPAL_ARN:
        return str(settings.BYOK_AWS_PRINCIPAL_ARN)
    with _principal_lock:
        if _principal_arn is None:
            try:
                arn = _sts_client("us-east-1").get_caller_identity()["Arn"]
            except _CALL_ERRORS as exc:
                raise _translate(exc, operation="GetCallerIdentity", kind="aws_connection_error") from exc
            _principal_arn = _principal_from_caller_arn(str(arn))
        return _principal_arn


def _principal_from_caller_arn(arn: str) -> str:
    """An assumed-role session ARN is not a valid principal; trust the role behind it."""
    # arn:aws:sts::123456789012:assumed-role/RoleName/session -> arn:aws:iam::123456789012:role/RoleName
    if ":assumed-role/" in arn:
        prefix, rest = arn.split(":assumed-role/", 1)
        partition_account = prefix.replace(":sts:", ":iam:")
        return f"{partition_account}:role/{rest.split('/')[0]}"
    return arn


# --- sandbox only -------------------------------------------------------------------

# In every sandbox account, the role that stands in for the account's administrator
# (sandbox_aws.sts.ACCOUNT_ADMIN_ROLE; on AWS, the role AWS Organizations creates).
SANDBOX_ACCOUNT_ADMIN_ROLE = "OrganizationAccountAccessRole"
SANDBOX_ROLE_POLICY_NAME = "byok-portal-permissions"


def sandbox_create_role(*, role_arn: str, region: str, trust_policy: str, permissions_policy: str) -> None:
    """Create (or bring up to date) a keystore's role in the sandbox, as its account administrator would.

    The same IAM calls as on AWS: CreateRole with the trust policy (UpdateAssumeRolePolicy
    if the role exists), then PutRolePolicy with the permissions policy. Refused outside
    sandbox mode: in a real account, people create roles with their own credentials.
    """
    if not settings.BYOK_SANDBOX:
        raise RuntimeError("roles are created by the portal only in the sandbox")
    prefix, path_and_name = role_arn.split(":role/", 1)
    path, _, name = path_and_name.rpartition("/")
    admin_arn = f"{prefix}:role/{SANDBOX_ACCOUNT_ADMIN_ROLE}"
    try:
        creds = _sts_client(region).assume_role(RoleArn=admin_arn, RoleSessionName="byok-portal-sandbox-setup")
    except _CALL_ERRORS as exc:
        raise _translate(exc, operation="AssumeRole", kind="aws_connection_error") from exc
    iam = boto3.client(
        "iam",
        region_name=region,
        config=_botocore_config(),
        endpoint_url=settings.BYOK_SANDBOX_URL,
        aws_access_key_id=creds["Credentials"]["AccessKeyId"],
        aws_secret_access_key=creds["Credentials"]["SecretAccessKey"],
        aws_session_token=creds["Credentials"]["SessionToken"],
    )
    operation = "CreateRole"
    try:
        try:
            iam.create_role(RoleName=name, Path=f"/{path}/" if path else "/", AssumeRolePolicyDocument=trust_policy)
        except iam.exceptions.EntityAlreadyExistsException:
            operation = "UpdateAssumeRolePolicy"
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust_policy)
        operation = "PutRolePolicy"
        iam.put_role_policy(RoleName=name, PolicyName=SANDBOX_ROLE_POLICY_NAME, PolicyDocument=permissions_policy)
    except _CALL_ERRORS as exc:
        raise _translate(exc, operation=operation, kind="aws_connection_error") from exc
