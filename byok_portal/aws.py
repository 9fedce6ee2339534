"""The one thin layer in front of boto3: every AWS call the portal makes is here.

Each keystore is reached by assuming its role with its ExternalId; the temporary
credentials are cached per keystore until shortly before they expire. AWS errors
become :class:`AwsError`, which keeps AWS's own code, message and request id so the
user and the audit trail see what AWS said. Key material passes through
:meth:`KmsSession.import_material` only, wrapped before it leaves the process.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import botocore.exceptions
from botocore.config import Config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings

from byok_portal import wrapping
from byok_portal.vocabulary import KmsState

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_sts import STSClient

# Refresh assumed-role credentials this long before AWS says they expire, so a
# multi-step operation never starts with credentials about to lapse.
CREDENTIAL_REFRESH_MARGIN = dt.timedelta(minutes=5)
SESSION_NAME = "byok-portal"

_AWS_STATE_TO_KMS_STATE = {
    "Enabled": KmsState.ENABLED,
    "Disabled": KmsState.DISABLED,
    "PendingImport": KmsState.EMPTY,
    "PendingDeletion": KmsState.PENDING_DELETION,
}


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


class AwsError(Exception):
    """An AWS call failed. ``kind`` is the API error code: ``kms_error`` or ``aws_connection_error``."""

    def __init__(self, *, kind: str, operation: str, code: str, message: str, request_id: str = "") -> None:
        self.kind = kind
        self.operation = operation
        self.code = code
        self.message = message
        self.request_id = request_id
        super().__init__(f"{operation} failed: {code}: {message}")


def _botocore_config() -> Config:
    return Config(
        connect_timeout=settings.BYOK_AWS_CONNECT_TIMEOUT,
        read_timeout=settings.BYOK_AWS_READ_TIMEOUT,
        retries={"mode": "adaptive", "max_attempts": settings.BYOK_AWS_MAX_ATTEMPTS},
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
    """Assumed-role credentials per keystore; a cache, so losing it costs one AssumeRole."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str, str], _CachedCredentials] = {}

    def get(self, keystore: Keystore) -> _CachedCredentials:
        cache_key = (str(keystore.pk), keystore.role_arn, keystore.external_id, keystore.region)
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            cached = self._entries.get(cache_key)
            if cached and cached.expires_at - CREDENTIAL_REFRESH_MARGIN > now:
                return cached
        fresh = self._assume(keystore)
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
    def _assume(keystore: Keystore) -> _CachedCredentials:
        try:
            response = _sts_client(keystore.region).assume_role(
                RoleArn=keystore.role_arn,
                RoleSessionName=SESSION_NAME,
                ExternalId=keystore.external_id,
                DurationSeconds=settings.BYOK_AWS_SESSION_SECONDS,
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


@dataclass(frozen=True)
class KmsKeyInfo:
    """What DescribeKey says of a KMS key, in the portal's terms."""

    arn: str
    aws_state: str
    state: KmsState
    deletion_date: dt.datetime | None
    origin: str


class WrapsForImport(Protocol):
    """Material that wraps itself for ImportKeyMaterial (custody in an HSM, SPEC §13)."""

    def import_wrapping_algorithm(self, requested: str) -> str:
        """The WrappingAlgorithm to ask GetParametersForImport for, given the one the key spec calls for."""

    def wrap_for_import(self, public_key_der: bytes, algorithm: str) -> bytes:
        """The material wrapped under KMS's wrapping public key (DER SubjectPublicKeyInfo) with ``algorithm``."""


@dataclass
class KmsSession:
    """KMS calls for one keystore, collecting AWS request ids for the audit trail."""

    client: KMSClient
    request_ids: list[str] = field(default_factory=list)
    # Operations that succeeded only after botocore retried them: AWS may have executed them more than once.
    retried: list[str] = field(default_factory=list)

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        method = getattr(self.client, _snake(operation))
        try:
            response: dict[str, Any] = method(**kwargs)
        except _CALL_ERRORS as exc:
            error = _translate(exc, operation=operation, kind="kms_error")
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
    ) -> str:
        """CreateKey with Origin=EXTERNAL, tagged at creation so it can always be found again."""
        response = self._call(
            "CreateKey",
            Origin="EXTERNAL",
            KeySpec=key_spec,
            KeyUsage=key_usage,
            Description=description[:8192],
            Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()],
        )
        return str(response["KeyMetadata"]["Arn"])

    def describe(self, key_id: str) -> KmsKeyInfo:
        meta = self._call("DescribeKey", KeyId=key_id)["KeyMetadata"]
        aws_state = str(meta.get("KeyState", ""))
        return KmsKeyInfo(
            arn=str(meta["Arn"]),
            aws_state=aws_state,
            state=_AWS_STATE_TO_KMS_STATE.get(aws_state, KmsState.UNKNOWN),
            deletion_date=meta.get("DeletionDate"),
            origin=str(meta.get("Origin", "")),
        )

    def import_material(
        self,
        key_id: str,
        material: bytes | bytearray | WrapsForImport,
        wrapping_algorithm: str = wrapping.RSAES_OAEP_SHA_256,
    ) -> None:
        """GetParametersForImport (a fresh pair every time: they are single-use, 24 h) + ImportKeyMaterial.

        ``wrapping_algorithm``: RSAES_OAEP_SHA_256 for symmetric and HMAC material,
        RSA_AES_KEY_WRAP_SHA_256 for a PKCS#8 private key (SPEC §9). ``ImportType``,
        ``KeyMaterialId`` and ``KeyMaterialDescription`` are not sent: AWS rejects them
        for HMAC and asymmetric keys, and a symmetric key's first import defaults right.

        ``material`` is plaintext (wrapped here) or a :class:`WrapsForImport` that wraps
        itself (an HSM's material: the plaintext never reaches this process). Its wrap runs
        between the two calls, so an HSM session is never held across a KMS call.
        """
        if not isinstance(material, bytes | bytearray):
            wrapping_algorithm = material.import_wrapping_algorithm(wrapping_algorithm)
        params = self._call(
            "GetParametersForImport",
            KeyId=key_id,
            WrappingAlgorithm=wrapping_algorithm,
            WrappingKeySpec=settings.BYOK_IMPORT_WRAPPING_KEY_SPEC,
        )
        self._call(
            "ImportKeyMaterial",
            KeyId=key_id,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=_wrap_for_import(material, params["PublicKey"], wrapping_algorithm)
            if isinstance(material, bytes | bytearray)
            else material.wrap_for_import(bytes(params["PublicKey"]), wrapping_algorithm),
            # The portal is the system of record and re-imports on demand; an expiring
            # copy in KMS would silently break customers' workloads.
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )

    def public_key(self, key_id: str) -> bytes:
        """GetPublicKey: the DER SubjectPublicKeyInfo of an asymmetric KMS key (it must be enabled)."""
        return bytes(self._call("GetPublicKey", KeyId=key_id)["PublicKey"])

    def delete_material(self, key_id: str) -> None:
        self._call("DeleteImportedKeyMaterial", KeyId=key_id)

    def enable(self, key_id: str) -> None:
        self._call("EnableKey", KeyId=key_id)

    def disable(self, key_id: str) -> None:
        self._call("DisableKey", KeyId=key_id)

    def schedule_deletion(self, key_id: str, days: int) -> dt.datetime:
        response = self._call("ScheduleKeyDeletion", KeyId=key_id, PendingWindowInDays=days)
        deletion_date: dt.datetime = response["DeletionDate"]
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


_clients_lock = threading.Lock()
_clients: dict[tuple[str, str, str], KMSClient] = {}


def kms_for(keystore: Keystore) -> KmsSession:
    """A KMS session in the keystore's account and region, through its assumed role.

    Clients are reused while the credentials last: building a boto3 client costs
    more than most KMS calls, and clients are thread-safe.
    """
    creds = credential_cache.get(keystore)
    kwargs = _endpoint_kwargs()
    cache_key = (creds.access_key_id, keystore.region, str(kwargs.get("endpoint_url", "")))
    with _clients_lock:
        client = _clients.get(cache_key)
    if client is None:
        kwargs.update(
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            aws_session_token=creds.session_token,
        )
        client = boto3.client("kms", region_name=keystore.region, config=_botocore_config(), **kwargs)
        with _clients_lock:
            if len(_clients) > 1000:  # expired credentials' clients: drop them all, rebuilding is cheap enough
                _clients.clear()
            _clients[cache_key] = client
    return KmsSession(client=client)


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
