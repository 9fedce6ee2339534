"""KMS with imported key material, as AWS documents it, on top of moto's KMS.

moto 5.2.x lacks ``GetParametersForImport``, ``ImportKeyMaterial`` and
``DeleteImportedKeyMaterial``, creates ``EXTERNAL`` keys as ``Enabled`` and does not
enforce key states. Keys of every spec can be EXTERNAL; what depends on the spec
(wrapping, material checks, MAC/sign/RSA cryptography with the imported material) is
in :mod:`sandbox_aws.kms_specs`. This module swaps moto's KMS backend class for
:class:`SandboxKmsBackend` (keys become :class:`SandboxKey`) and adds the missing
actions to moto's ``KmsResponse`` so the moto server dispatches them.

Behaviour follows the AWS KMS Developer Guide (key-state.html, importing-keys-*.html)
and the API reference. Where the documentation leaves a choice, the decision is noted
next to the code. Key material is never logged and never leaves this module except
as a digest or a KCV (see :func:`material_fingerprint`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto.core.exceptions import JsonRESTError
from moto.core.responses import BaseResponse
from moto.core.utils import unix_time
from moto.kms import models as kms_models
from moto.kms import urls as moto_kms_urls
from moto.kms import utils as moto_kms_utils
from moto.kms.exceptions import AccessDeniedException, ValidationException
from moto.kms.models import Key, KmsBackend, kms_backends
from moto.kms.responses import KmsResponse
from moto.kms.utils import AbstractPrivateKey, KeySpec, _deserialize_ciphertext_blob

from sandbox_aws import kms_materials, kms_regions, kms_specs
from sandbox_aws.kms_materials import ConflictException
from sandbox_aws.kms_specs import (
    InvalidCiphertextException,
    InvalidKeyUsageException,
    UnsupportedOperationException,
)
from sandbox_aws.locking import SANDBOX_LOCK

# Key states, spelled as the KMS API spells them.
ENABLED = "Enabled"
DISABLED = "Disabled"
PENDING_IMPORT = "PendingImport"
PENDING_DELETION = "PendingDeletion"
# A multi-Region primary scheduled for deletion waits here for its replicas (see kms_regions);
# every rule for a key pending deletion holds for it too.
DELETION_STATES = frozenset({PENDING_DELETION, kms_regions.PENDING_REPLICA_DELETION})

EXTERNAL = "EXTERNAL"
SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"

KEY_MATERIAL_EXPIRES = "KEY_MATERIAL_EXPIRES"
KEY_MATERIAL_DOES_NOT_EXPIRE = "KEY_MATERIAL_DOES_NOT_EXPIRE"
MAX_MATERIAL_VALIDITY = timedelta(days=365)

IMPORT_PARAMETERS_VALIDITY = timedelta(hours=24)
# Expired import tokens are kept a while longer so a late caller gets
# ExpiredImportTokenException (as on AWS) rather than InvalidImportTokenException.
IMPORT_TOKEN_RETENTION = timedelta(hours=48)

WRAPPING_KEY_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
WRAPPING_ALGORITHMS = kms_specs.WRAPPING_HASHES
# Valid on AWS but not implemented here: refused as unsupported rather than as invalid,
# so a caller can tell "the sandbox cannot do this" from "AWS would reject this".
UNSUPPORTED_WRAPPING_ALGORITHMS = {"SM2PKE"}
# Still in the API's enum, but AWS stopped accepting it for imports in 2023.
RETIRED_WRAPPING_ALGORITHMS = {"RSAES_PKCS1_V1_5"}

ALL_KEY_MATERIAL = "ALL_KEY_MATERIAL"
ROTATIONS_ONLY = "ROTATIONS_ONLY"
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 100, 1000
# How long an on-demand rotation takes. AWS rotates in the background ("a slight delay");
# the sandbox rotates at once unless the control API sets a delay (to test callers that
# must cope with a rotation still in progress).
ROTATION_DELAY = timedelta(0)


def set_rotation_delay(seconds: float) -> None:
    """Set how long the sandbox's on-demand rotations take (0: done before RotateKeyOnDemand answers)."""
    global ROTATION_DELAY  # one setting for the whole sandbox, changed only through the control API
    ROTATION_DELAY = timedelta(seconds=max(0.0, seconds))


class KMSInvalidStateException(JsonRESTError):
    """The key's state does not allow the operation (HTTP 400, like AWS)."""

    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("KMSInvalidStateException", message)


class DisabledException(JsonRESTError):
    """The key is disabled."""

    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("DisabledException", message)


class InvalidImportTokenException(JsonRESTError):
    """The import token is unknown or was issued for another key."""

    code = 400

    def __init__(self) -> None:
        super().__init__(
            "InvalidImportTokenException",
            "The request was rejected because the provided import token is invalid "
            "or is associated with a different KMS key.",
        )


class ExpiredImportTokenException(JsonRESTError):
    """The import token is older than 24 hours."""

    code = 400

    def __init__(self) -> None:
        super().__init__(
            "ExpiredImportTokenException",
            "The request was rejected because the specified import token is expired. "
            "Use GetParametersForImport to get a new import token and public key.",
        )


def utc_now() -> datetime:
    """Timezone-aware now; moto's own timestamps are naive UTC."""
    return datetime.now(UTC)


def _naive_utc(moment: datetime) -> datetime:
    """moto stores ``deletion_date`` as naive UTC; compare like with like."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class ImportParameters:
    """One ``GetParametersForImport`` result: the private half stays here, bound to its key."""

    private_key: rsa.RSAPrivateKey
    wrapping_algorithm: str
    valid_to: datetime


@dataclass(frozen=True)
class MaterialFingerprint:
    """What may be revealed about key material: a digest and its check value.

    ``kcv`` for symmetric (AES-CMAC) and HMAC keys; ``public_key_sha256`` (SHA-256 of
    the DER public key) for RSA and EC keys.
    """

    sha256_hex: str
    kcv: str | None
    public_key_sha256: str | None = None


def material_fingerprint(material: bytes, key_spec: str = SYMMETRIC_DEFAULT) -> MaterialFingerprint:
    """SHA-256 of the material and its check value for a key of ``key_spec``."""
    kcv, public_key_sha256 = kms_specs.check_value(key_spec, material)
    return MaterialFingerprint(hashlib.sha256(material).hexdigest(), kcv, public_key_sha256)


class SandboxKey(Key):
    """A moto KMS key that also tracks imported material, its expiry and import tokens.

    For ``EXTERNAL`` keys ``key_material`` (which moto's encrypt/decrypt and MACs use) holds
    the imported material, or ``None`` while there is none: random bytes, or for RSA and
    EC keys the PKCS#8 DER private key, from which ``private_key`` (what moto's
    Sign/Verify/GetPublicKey use) is loaded when needed. Other keys get moto's generated
    private key, made on first use rather than at CreateKey (RSA-4096 takes a while).
    """

    key_material: bytes | None  # type: ignore[assignment]  # None = no imported material yet/anymore
    _generated_private_key: AbstractPrivateKey | None = None

    @property  # type: ignore[override]
    def private_key(self) -> AbstractPrivateKey | None:
        if self.origin == EXTERNAL:
            if self.key_material is None or not kms_specs.is_asymmetric(self.key_spec):
                return None
            return kms_specs.imported_private_key(self.key_spec, self.key_material)
        if self._generated_private_key is None:
            self._generated_private_key = _MOTO_GENERATE_PRIVATE_KEY(self.key_spec)
        return self._generated_private_key

    @private_key.setter
    def private_key(self, value: AbstractPrivateKey | None) -> None:
        # moto's Key.__init__ assigns here; install() makes it assign None (generated on first use).
        self._generated_private_key = value

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Every material the key ever had (kms_materials): AWS binds a key to them for
        # life, and remembers each one's id even after the material itself is deleted.
        self.materials: list[kms_materials.Material] = []
        self.import_parameters: dict[bytes, ImportParameters] = {}
        # Set for the regional keys of a multi-Region key (kms_regions); None for single-Region keys.
        self.replication: kms_regions.Replication | None = None
        # When a delayed on-demand rotation began (see ``ROTATION_DELAY``); None when none runs.
        self.rotation_started: datetime | None = None
        if self.origin == EXTERNAL:
            self.key_material = None
            self.key_state = PENDING_IMPORT
            self.enabled = False

    @property
    def symmetric(self) -> bool:
        return bool(self.key_spec == SYMMETRIC_DEFAULT)

    @property
    def has_material(self) -> bool:
        """Whether the key can currently be used for cryptography: every permanent material is imported."""
        return kms_materials.complete(self.materials)

    @property
    def current_material(self) -> kms_materials.Material | None:
        return kms_materials.current(self.materials)

    @property
    def expiration_model(self) -> str | None:
        entry = self.current_material
        return entry.expiration_model if entry is not None and entry.imported else None

    @property
    def valid_to(self) -> datetime | None:
        """The earliest expiry among the permanently associated materials (DescribeKey's ValidTo)."""
        expiries = [m.valid_to for m in self.materials if m.permanent and m.imported and m.valid_to is not None]
        return min(expiries) if expiries else None

    def settle(self) -> None:
        """Apply the all-materials-present rule after any change to the materials.

        A key missing any permanently associated material is PendingImport; one that has
        them all again leaves PendingImport for Enabled (AWS documents only that
        transition). A key pending deletion keeps its state. ``key_material`` (what
        moto's cryptography reads) is the current material while the key is complete.
        """
        if self.origin != EXTERNAL:
            return
        whole = self.has_material
        entry = self.current_material
        self.key_material = entry.material if whole and entry is not None else None
        if self.key_state in DELETION_STATES or self.key_state == kms_regions.CREATING:
            return
        if not whole:
            self.key_state = PENDING_IMPORT
            self.enabled = False
        elif self.key_state == PENDING_IMPORT:
            self.key_state = ENABLED
            self.enabled = True

    def to_dict(self) -> dict[str, Any]:
        """DescribeKey metadata, plus the expiration fields and current material id AWS reports for EXTERNAL keys."""
        result = super().to_dict()
        metadata = result["KeyMetadata"]
        metadata["Enabled"] = self.key_state == ENABLED
        if self.origin == EXTERNAL and self.has_material and self.expiration_model:
            metadata["ExpirationModel"] = self.expiration_model
            if self.valid_to is not None:
                metadata["ValidTo"] = self.valid_to.timestamp()
        entry = self.current_material
        if self.origin == EXTERNAL and self.symmetric and entry is not None:
            metadata["CurrentKeyMaterialId"] = entry.material_id
        # moto lists RSA encryption algorithms for HMAC keys; AWS lists their MAC algorithm instead.
        mac_algorithm = kms_specs.HMAC_ALGORITHMS.get(self.key_spec)
        if mac_algorithm is not None:
            metadata.pop("EncryptionAlgorithms", None)
            metadata["MacAlgorithms"] = [mac_algorithm]
        kms_regions.describe(self, metadata)
        return result


_MATERIAL_ID_BYTES = 32  # a KeyMaterialId is 64 hex characters


@dataclass(frozen=True)
class _MaterialView:
    """What moto's encrypt/decrypt helpers read of a key: its material (here one chosen material)."""

    key_material: bytes


class SandboxKmsBackend(KmsBackend):
    """moto's KMS backend with AWS key-state rules and imported key material."""

    keys: dict[str, SandboxKey]  # type: ignore[assignment]  # every key here is a SandboxKey

    @property
    def _url_module(self) -> Any:
        """moto finds a backend's URL routes next to its class; ours live in moto.kms."""
        return moto_kms_urls

    # -- lookup and housekeeping -------------------------------------------------------

    def sweep(self) -> None:
        """Apply what AWS does on its own as time passes.

        Expired imported material is deleted (key → PendingImport) and keys whose
        deletion window is over disappear. Done lazily, at the start of each request.
        """
        now = utc_now()
        kms_regions.sweep(self, now)
        for key in list(self.keys.values()):
            deletion_due = key.deletion_date is not None and _naive_utc(now) >= _naive_utc(key.deletion_date)
            if key.key_state == PENDING_DELETION and deletion_due:
                kms_regions.forget(key)
                self.delete_key(key.id)
                continue
            if key.rotation_started is not None:
                self.finish_rotation(key, now)
            expired = [m for m in key.materials if m.imported and m.valid_to is not None and now >= m.valid_to]
            for entry in expired:
                entry.drop()
            if expired:
                key.settle()

    def key_for(self, key_id: str) -> SandboxKey:
        """Resolve a key id, key ARN, alias name or alias ARN, or raise NotFoundException."""
        raw_id = self.any_id_to_key_id(key_id) if self._resolvable(key_id) else None
        if raw_id is None or raw_id not in self.keys:
            raise JsonRESTError("NotFoundException", f"Key '{key_id}' does not exist")
        return self.keys[raw_id]

    def _resolvable(self, key_id: str) -> bool:
        alias = self.get_alias_name(key_id)
        return not alias.startswith("alias/") or self.get_key_id_from_alias(alias) is not None

    @staticmethod
    def _require_not_pending_deletion(key: SandboxKey) -> None:
        if key.key_state in DELETION_STATES:
            raise KMSInvalidStateException(f"{key.arn} is pending deletion.")

    @staticmethod
    def _require_usable(key: SandboxKey) -> None:
        """Cryptographic operations need an Enabled key (key-state table, notes 1/3/5)."""
        if key.key_state == DISABLED:
            raise DisabledException(f"{key.arn} is disabled.")
        if key.key_state != ENABLED:
            raise KMSInvalidStateException(f"{key.arn} is {key.key_state}.")

    @staticmethod
    def _require_external(key: SandboxKey) -> None:
        if key.origin != EXTERNAL:
            raise UnsupportedOperationException(
                f"{key.arn} origin is {key.origin} which is not valid for this operation."
            )

    # -- key creation and lifecycle ----------------------------------------------------

    def create_key(
        self,
        policy: str | None,
        key_usage: str,
        key_spec: str,
        description: str,
        tags: list[dict[str, str]] | None,
        multi_region: bool = False,
        origin: str = "AWS_KMS",
    ) -> SandboxKey:
        """Create a key; ``Origin=EXTERNAL`` keys start in PendingImport without material."""
        if key_spec and key_spec not in KeySpec.key_specs():
            raise ValidationException(
                f"1 validation error detected: Value '{key_spec}' at 'KeySpec' failed to satisfy "
                f"constraint: Member must satisfy enum value set: {KeySpec.key_specs()}"
            )
        # moto's Key is instantiable at runtime; its optional CloudFormation hooks are
        # declared abstract only for type checkers.
        key = SandboxKey(  # type: ignore[abstract]
            policy,
            key_usage or "ENCRYPT_DECRYPT",
            key_spec,
            description,
            self.account_id,
            self.region_name,
            multi_region,
            origin,
        )
        if multi_region:
            kms_regions.start(key)
        self.keys[key.id] = key
        if tags:
            self.tagger.tag_resource(key.id, tags)
        return key

    def describe_key(self, key_id: str) -> SandboxKey:
        """DescribeKey works in every state."""
        return self.key_for(key_id)

    def enable_key(self, key_id: str) -> None:
        """EnableKey: refused in PendingImport, Creating and PendingDeletion; idempotent otherwise."""
        key = self.key_for(key_id)
        if key.key_state in (PENDING_IMPORT, kms_regions.CREATING):
            raise KMSInvalidStateException(f"{key.arn} is {key.key_state}.")
        self._require_not_pending_deletion(key)
        key.key_state = ENABLED
        key.enabled = True

    def disable_key(self, key_id: str) -> None:
        """DisableKey: refused in PendingImport, Creating and PendingDeletion; idempotent otherwise."""
        key = self.key_for(key_id)
        if key.key_state in (PENDING_IMPORT, kms_regions.CREATING):
            raise KMSInvalidStateException(f"{key.arn} is {key.key_state}.")
        self._require_not_pending_deletion(key)
        key.key_state = DISABLED
        key.enabled = False

    def schedule_key_deletion(self, key_id: str, pending_window_in_days: int) -> float:
        """ScheduleKeyDeletion: 7–30 days; refused when already pending deletion.

        A multi-Region primary with replicas waits for them instead (kms_regions): it gets no
        deletion date yet, and the window's end is returned only as a lower bound.
        """
        key = self.key_for(key_id)
        if not isinstance(pending_window_in_days, int) or not 7 <= pending_window_in_days <= 30:
            raise ValidationException(
                f"1 validation error detected: Value '{pending_window_in_days}' at 'pendingWindowInDays' "
                "failed to satisfy constraint: Member must have value between 7 and 30"
            )
        self._require_not_pending_deletion(key)
        key.key_state = PENDING_DELETION
        key.enabled = False
        key.deletion_date = _naive_utc(utc_now()) + timedelta(days=pending_window_in_days)
        deletion_date = float(unix_time(key.deletion_date))
        kms_regions.schedule_deletion(key, pending_window_in_days)
        return deletion_date

    def cancel_key_deletion(self, key_id: str) -> None:
        """CancelKeyDeletion → Disabled; a key without imported material → PendingImport.

        AWS documents "Disabled"; but a key without material can never be Disabled
        (key-state.html: PendingImport "applies only to keys with imported material" and
        is the state of every such key without material), so it returns to PendingImport.
        """
        key = self.key_for(key_id)
        if key.key_state not in DELETION_STATES:
            raise KMSInvalidStateException(f"{key.arn} is not pending deletion.")
        key.deletion_date = None
        key.enabled = False
        key.key_state = DISABLED if key.origin != EXTERNAL or key.has_material else PENDING_IMPORT
        key.settle()

    def update_key_description(self, key_id: str, description: str) -> None:
        """UpdateKeyDescription is refused while pending deletion."""
        self._require_not_pending_deletion(self.key_for(key_id))
        super().update_key_description(key_id, description)

    # -- aliases and tags ---------------------------------------------------------------

    def create_alias(self, target_key_id: str, alias_name: str) -> kms_models.Alias:
        """CreateAlias is refused for a target pending deletion."""
        self._require_not_pending_deletion(self.key_for(target_key_id))
        return super().create_alias(self.get_key_id(target_key_id), alias_name)

    def update_alias(self, target_key_id: str, alias_name: str) -> kms_models.Alias:
        """UpdateAlias is refused when the *new target* is pending deletion (the old one may be).

        The old and new targets must be the same type (symmetric, HMAC or asymmetric) with the
        same usage (API reference, UpdateAlias). The API model lists no error for this;
        the sandbox answers ValidationException, as for other invalid input.
        """
        target = self.key_for(target_key_id)
        self._require_not_pending_deletion(target)
        current_id = self.get_key_id_from_alias(alias_name)
        current = self.keys.get(current_id) if current_id else None
        if current is not None and kms_specs.key_type(current.key_spec, current.key_usage) != kms_specs.key_type(
            target.key_spec, target.key_usage
        ):
            raise ValidationException(
                f"{alias_name} names a {current.key_spec} {current.key_usage} key; UpdateAlias cannot point it at "
                f"a {target.key_spec} {target.key_usage} key (the type and usage must be the same)."
            )
        return super().update_alias(self.get_key_id(target_key_id), alias_name)

    def tag_resource(self, arn: str, tags: dict[str, str]) -> None:
        """TagResource is refused while pending deletion."""
        self._require_not_pending_deletion(self.key_for(arn))
        super().tag_resource(arn, tags)

    def untag_resource(self, arn: str, tag_keys: list[str]) -> None:
        """UntagResource is refused while pending deletion."""
        self._require_not_pending_deletion(self.key_for(arn))
        super().untag_resource(arn, tag_keys)

    # -- cryptography ------------------------------------------------------------------

    def encrypt(self, key_id: str, plaintext: bytes, encryption_context: dict[str, str]) -> tuple[bytes, str]:
        """Encrypt (and GenerateDataKey*, ReEncrypt, which call it) needs an Enabled key.

        A symmetric EXTERNAL key encrypts under its current material, and the ciphertext
        names that material (as AWS's do), so it decrypts after later rotations for as
        long as that material is there.
        """
        key = self.key_for(key_id)
        self._require_usable(key)
        entry = key.current_material
        if key.origin != EXTERNAL or not key.symmetric or entry is None or entry.material is None:
            return super().encrypt(key_id, plaintext, encryption_context)
        blob = moto_kms_utils.encrypt({key.id: _MaterialView(entry.material)}, key.id, plaintext, encryption_context)
        sealed = _deserialize_ciphertext_blob(blob)
        named = moto_kms_utils.Ciphertext(
            key_id=sealed.key_id,
            iv=sealed.iv,
            ciphertext=bytes.fromhex(entry.material_id) + sealed.ciphertext,
            tag=sealed.tag,
        )
        return moto_kms_utils._serialize_ciphertext_blob(named), key.arn

    def decrypt(
        self,
        ciphertext_blob: bytes,
        encryption_context: dict[str, str],
        key_id: str | None = None,
    ) -> tuple[bytes, str]:
        """Decrypt needs the key named inside the ciphertext to be Enabled, and the material it names."""
        try:
            parsed = _deserialize_ciphertext_blob(ciphertext_blob)
        except Exception:
            raise InvalidCiphertextException() from None
        key = self.keys.get(parsed.key_id)
        if key is not None:
            self._require_usable(key)
        if key is None or key.origin != EXTERNAL or not key.symmetric:
            return super().decrypt(ciphertext_blob, encryption_context, key_id)
        if key_id is not None and self.any_id_to_key_id(key_id) != key.id:
            raise AccessDeniedException(
                "The ciphertext refers to a customer master key that does not exist, "
                "does not exist in this region, or you are not allowed to access."
            )
        entry = kms_materials.find(key.materials, parsed.ciphertext[:_MATERIAL_ID_BYTES].hex())
        if entry is None or entry.material is None or not entry.permanent:
            raise InvalidCiphertextException()
        inner = moto_kms_utils.Ciphertext(
            key_id=parsed.key_id, iv=parsed.iv, ciphertext=parsed.ciphertext[_MATERIAL_ID_BYTES:], tag=parsed.tag
        )
        plaintext, _ = moto_kms_utils.decrypt(
            {key.id: _MaterialView(entry.material)},
            moto_kms_utils._serialize_ciphertext_blob(inner),
            encryption_context,
        )
        return plaintext, key.arn

    # -- cryptography with the imported material of HMAC and asymmetric keys ------------
    # moto's own implementations run once the key is known to be usable: they read
    # ``key_material`` (MACs) and ``private_key`` (signatures, public key), which for an
    # EXTERNAL key are the imported material.

    def sign(self, key_id: str, message: bytes, signing_algorithm: str) -> tuple[str, bytes, str]:
        """Sign needs an Enabled SIGN_VERIFY key."""
        self._require_usable(self.key_for(key_id))
        return super().sign(key_id, message, signing_algorithm)

    def verify(self, key_id: str, message: bytes, signature: bytes, signing_algorithm: str) -> tuple[str, bool, str]:
        """Verify needs an Enabled SIGN_VERIFY key."""
        self._require_usable(self.key_for(key_id))
        return super().verify(key_id, message, signature, signing_algorithm)

    def get_public_key(self, key_id: str) -> tuple[Key, bytes]:
        """GetPublicKey: asymmetric keys only, Enabled (it fails on Disabled and PendingImport keys)."""
        key = self.key_for(key_id)
        if not kms_specs.is_asymmetric(key.key_spec):
            raise UnsupportedOperationException(f"{key.arn} is not an asymmetric KMS key; it has no public key.")
        self._require_usable(key)
        return super().get_public_key(key_id)

    def generate_mac(
        self, message: bytes, key_id: str, mac_algorithm: str, grant_tokens: list[str], dry_run: bool
    ) -> tuple[str, str, str]:
        """GenerateMac (and VerifyMac): an Enabled HMAC key, with the MAC algorithm of its spec."""
        key = self.key_for(key_id)
        self._require_usable(key)
        expected = kms_specs.HMAC_ALGORITHMS.get(key.key_spec)
        if expected is not None and mac_algorithm != expected:
            raise InvalidKeyUsageException(f"{key.arn} is an {key.key_spec} key: its MAC algorithm is {expected}.")
        return super().generate_mac(message, key_id, mac_algorithm, grant_tokens, dry_run)

    # -- imported key material ---------------------------------------------------------

    def get_parameters_for_import(
        self, key_id: str, wrapping_algorithm: str, wrapping_key_spec: str
    ) -> tuple[SandboxKey, bytes, bytes, datetime]:
        """Issue a fresh RSA wrapping key pair and an import token bound to this key.

        Returns (key, DER SubjectPublicKeyInfo, import token, valid-to).
        """
        if wrapping_key_spec not in WRAPPING_KEY_BITS:
            raise ValidationException(
                f"1 validation error detected: Value '{wrapping_key_spec}' at 'wrappingKeySpec' failed to "
                f"satisfy constraint: Member must satisfy enum value set: {sorted(WRAPPING_KEY_BITS)}"
            )
        if wrapping_algorithm in UNSUPPORTED_WRAPPING_ALGORITHMS:
            raise UnsupportedOperationException(
                f"Wrapping algorithm {wrapping_algorithm} is not supported by the sandbox; "
                f"use one of {sorted(WRAPPING_ALGORITHMS)}."
            )
        if wrapping_algorithm in RETIRED_WRAPPING_ALGORITHMS or wrapping_algorithm not in WRAPPING_ALGORITHMS:
            raise ValidationException(
                f"1 validation error detected: Value '{wrapping_algorithm}' at 'wrappingAlgorithm' failed to "
                f"satisfy constraint: Member must satisfy enum value set: {sorted(WRAPPING_ALGORITHMS)}"
            )
        key = self.key_for(key_id)
        self._require_external(key)
        kms_specs.check_wrapping_for_spec(
            key.key_spec, key.arn, wrapping_algorithm, WRAPPING_KEY_BITS[wrapping_key_spec]
        )
        # key-state.html note 8: keys with imported material that are pending deletion
        # refuse GetParametersForImport/ImportKeyMaterial with KMSInvalidStateException.
        self._require_not_pending_deletion(key)
        kms_regions.require_created(key)

        now = utc_now()
        key.import_parameters = {
            token: params
            for token, params in key.import_parameters.items()
            if now < params.valid_to - IMPORT_PARAMETERS_VALIDITY + IMPORT_TOKEN_RETENTION
        }
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=WRAPPING_KEY_BITS[wrapping_key_spec])
        public_der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # Opaque to the caller; looked up only among this key's tokens, which is what
        # binds a token to the key it was issued for.
        token = b"sandbox-import-token:v1:" + os.urandom(32)
        valid_to = now + IMPORT_PARAMETERS_VALIDITY
        key.import_parameters[token] = ImportParameters(private_key, wrapping_algorithm, valid_to)
        return key, public_der, token, valid_to

    def import_key_material(
        self,
        key_id: str,
        import_token: bytes,
        encrypted_key_material: bytes,
        expiration_model: str | None,
        valid_to: datetime | None,
        import_type: str | None = None,
        key_material_id: str | None = None,
        description: str | None = None,
    ) -> tuple[SandboxKey, kms_materials.Material]:
        """Unwrap and import material (see :func:`kms_materials.place_import` for where it goes).

        Re-importing material the key still has keeps the key's state and only updates
        its expiration. Once every permanently associated material is back, a key leaves
        PendingImport for Enabled: AWS documents the transition as "from PendingImport to
        Enabled" and nothing else, so a key whose material was deleted comes back Enabled
        even if it was disabled before — callers that want it disabled disable it again.
        New material for a rotation (``NEW_KEY_MATERIAL`` on a key that has material)
        waits as PENDING_ROTATION and changes nothing else; it needs a complete key.
        """
        key = self.key_for(key_id)
        self._require_external(key)
        self._require_not_pending_deletion(key)
        kms_regions.require_created(key)
        model = expiration_model or KEY_MATERIAL_EXPIRES
        checked_valid_to = _check_expiration(model, valid_to)

        params = key.import_parameters.get(import_token)
        if params is None:
            raise InvalidImportTokenException()
        if utc_now() >= params.valid_to:
            raise ExpiredImportTokenException()
        material = kms_specs.unwrap(params.private_key, params.wrapping_algorithm, encrypted_key_material)
        kms_specs.check_material(key.key_spec, material)
        # A multi-Region key's replica knows its set's materials: only those fit it.
        kms_regions.share_materials(key)
        if import_type == kms_materials.NEW_KEY_MATERIAL and key.materials and not key.has_material:
            raise KMSInvalidStateException(
                f"{key.arn} is missing key material; re-import every key material before importing new key material."
            )
        entry = kms_materials.place_import(
            key.materials,
            key_id=key.id,
            material=material,
            import_type=import_type,
            wanted_id=key_material_id,
            symmetric=key.symmetric,
        )
        entry.material = material
        entry.expiration_model = model
        entry.valid_to = checked_valid_to
        if description is not None:
            entry.description = description
        key.settle()
        return key, entry

    def delete_imported_key_material(
        self, key_id: str, key_material_id: str | None = None
    ) -> tuple[SandboxKey, kms_materials.Material | None]:
        """Delete material now: the current one, or the one named by ``key_material_id``.

        A permanently associated material keeps its id (only the same material fits
        again) and the key goes to PendingImport, or keeps its state while pending
        deletion. Material pending rotation is withdrawn altogether. Deleting material
        that is already gone changes nothing (key-state table: no effect in
        PendingImport). An id the key does not know: the API reference names no error
        for it; the sandbox answers ValidationException.
        """
        key = self.key_for(key_id)
        self._require_external(key)
        if key_material_id is None:
            entry = key.current_material
        else:
            entry = kms_materials.find(key.materials, key_material_id)
            if entry is None or not key.symmetric:
                raise ValidationException(f"Key material {key_material_id} is not associated with {key.arn}.")
        if entry is not None:
            if entry.permanent:
                entry.drop()
            else:
                key.materials.remove(entry)
        key.settle()
        return key, entry

    def rotate_key_on_demand(self, key_id: str) -> str:
        """RotateKeyOnDemand: the PENDING_ROTATION material becomes CURRENT, at once.

        Symmetric keys only, Enabled (DisabledException / KMSInvalidStateException
        otherwise), at most 25 times (LimitExceededException). AWS rotates in the
        background; the sandbox finishes before it answers, unless a rotation delay was
        set through the control API: then the rotation completes on the first call after
        the delay, and another RotateKeyOnDemand meanwhile is refused with ConflictException.
        """
        key = self.key_for(key_id)
        if not key.symmetric:
            raise UnsupportedOperationException(f"{key.arn} is not a symmetric encryption KMS key.")
        self._require_usable(key)
        kms_regions.require_rotatable(key)
        if key.rotation_started is not None:
            raise ConflictException(f"An on-demand rotation of {key.arn} is in progress.")
        if key.origin == EXTERNAL:
            waiting = kms_materials.pending(key.materials)
            if waiting is None or not waiting.imported:
                kms_materials.rotate(key.materials, utc_now())  # raises the refusal
            if kms_materials.on_demand_rotations(key.materials) >= kms_materials.MAX_ON_DEMAND_ROTATIONS:
                kms_materials.rotate(key.materials, utc_now())  # raises LimitExceededException
            if ROTATION_DELAY.total_seconds() > 0:
                key.rotation_started = utc_now()
            else:
                kms_materials.rotate(key.materials, utc_now())
                key.settle()
                kms_regions.after_rotation(key)
            return str(key.id)
        return str(super().rotate_key_on_demand(key.id))

    def finish_rotation(self, key: SandboxKey, now: datetime) -> None:
        """Complete a delayed on-demand rotation whose time has come (called by :meth:`sweep`)."""
        if key.rotation_started is None or now < key.rotation_started + ROTATION_DELAY:
            return
        key.rotation_started = None
        if kms_materials.pending(key.materials) is not None:
            kms_materials.rotate(key.materials, now)
            key.settle()
            kms_regions.after_rotation(key)

    def list_key_rotations_page(
        self, key_id: str, include: str, limit: int, marker: str | None
    ) -> tuple[list[dict[str, object]], str | None]:
        """ListKeyRotations of an EXTERNAL key: its materials, oldest first, paged.

        ROTATIONS_ONLY (the default) leaves out the first material and material pending
        rotation; ALL_KEY_MATERIAL includes them.
        """
        key = self.key_for(key_id)
        if not key.symmetric:
            raise UnsupportedOperationException(f"{key.arn} does not support key rotation.")
        entries = [m for m in key.materials if include == ALL_KEY_MATERIAL or m.rotation_date is not None]
        start = _decode_marker(marker, len(entries))
        page = entries[start : start + limit]
        following = start + limit
        rows = [kms_materials.rotation_entry(key.id, m, key.symmetric) for m in page]
        return rows, (_encode_marker(following) if following < len(entries) else None)


def _check_expiration(model: str, valid_to: datetime | None) -> datetime | None:
    """Validate ExpirationModel/ValidTo as ImportKeyMaterial does; return the ValidTo to keep."""
    if model == KEY_MATERIAL_DOES_NOT_EXPIRE:
        if valid_to is not None:
            raise ValidationException("ValidTo must not be set when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE.")
        return None
    if model != KEY_MATERIAL_EXPIRES:
        raise ValidationException(
            f"1 validation error detected: Value '{model}' at 'expirationModel' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{KEY_MATERIAL_EXPIRES}, {KEY_MATERIAL_DOES_NOT_EXPIRE}]"
        )
    if valid_to is None:
        raise ValidationException("ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES.")
    now = utc_now()
    if valid_to <= now:
        raise ValidationException("ValidTo must be in the future.")
    if valid_to > now + MAX_MATERIAL_VALIDITY:
        raise ValidationException("ValidTo must be at most 365 days in the future.")
    return valid_to


# -- HTTP actions added to moto's KmsResponse ------------------------------------------


def _json_params(response: KmsResponse) -> dict[str, Any]:
    params = json.loads(response.body or "{}")
    if not isinstance(params, dict):
        raise ValidationException("The request body must be a JSON object.")
    return params


def _blob_param(params: dict[str, Any], name: str) -> bytes:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise ValidationException(
            f"1 validation error detected: Value at '{name}' failed to satisfy constraint: Member must not be null"
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationException(f"{name} is not valid base64.") from None


def _timestamp_param(params: dict[str, Any], name: str) -> datetime | None:
    """botocore sends JSON-protocol timestamps as epoch seconds; accept ISO 8601 as well."""
    value = params.get(name)
    if value is None:
        return None
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise ValidationException(f"{name} is not a valid timestamp.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _backend(response: KmsResponse) -> SandboxKmsBackend:
    backend = response.kms_backend
    assert isinstance(backend, SandboxKmsBackend), "sandbox KMS patches not installed"
    return backend


def get_parameters_for_import(self: KmsResponse) -> str:
    """https://docs.aws.amazon.com/kms/latest/APIReference/API_GetParametersForImport.html"""
    params = _json_params(self)
    key, public_der, token, valid_to = _backend(self).get_parameters_for_import(
        key_id=str(params.get("KeyId", "")),
        wrapping_algorithm=str(params.get("WrappingAlgorithm", "")),
        wrapping_key_spec=str(params.get("WrappingKeySpec", "")),
    )
    return json.dumps(
        {
            "KeyId": key.arn,
            "ImportToken": base64.b64encode(token).decode("ascii"),
            "PublicKey": base64.b64encode(public_der).decode("ascii"),
            "ParametersValidTo": valid_to.timestamp(),
        }
    )


def import_key_material(self: KmsResponse) -> str:
    """https://docs.aws.amazon.com/kms/latest/APIReference/API_ImportKeyMaterial.html"""
    params = _json_params(self)
    backend = _backend(self)
    kms_specs.check_import_options(backend.key_for(str(params.get("KeyId", ""))).key_spec, params)
    wanted_id = params.get("KeyMaterialId")
    description = params.get("KeyMaterialDescription")
    key, entry = backend.import_key_material(
        key_id=str(params.get("KeyId", "")),
        import_token=_blob_param(params, "ImportToken"),
        encrypted_key_material=_blob_param(params, "EncryptedKeyMaterial"),
        expiration_model=params.get("ExpirationModel"),
        valid_to=_timestamp_param(params, "ValidTo"),
        import_type=kms_materials.check_import_type(params.get("ImportType")),
        key_material_id=None if wanted_id is None else kms_materials.check_material_id(wanted_id),
        description=None if description is None else kms_materials.check_description(description),
    )
    answer = {"KeyId": key.arn}
    if key.symmetric:  # AWS names material by id for symmetric keys only
        answer["KeyMaterialId"] = entry.material_id
    return json.dumps(answer)


def delete_imported_key_material(self: KmsResponse) -> str:
    """https://docs.aws.amazon.com/kms/latest/APIReference/API_DeleteImportedKeyMaterial.html"""
    params = _json_params(self)
    wanted_id = params.get("KeyMaterialId")
    key, entry = _backend(self).delete_imported_key_material(
        str(params.get("KeyId", "")), None if wanted_id is None else kms_materials.check_material_id(wanted_id)
    )
    answer = {"KeyId": key.arn}
    if key.symmetric and entry is not None:
        answer["KeyMaterialId"] = entry.material_id
    return json.dumps(answer)


def rotate_key_on_demand(self: KmsResponse) -> str:
    """https://docs.aws.amazon.com/kms/latest/APIReference/API_RotateKeyOnDemand.html"""
    params = _json_params(self)
    backend = _backend(self)
    key = backend.key_for(str(params.get("KeyId", "")))
    backend.rotate_key_on_demand(key.id)
    return json.dumps({"KeyId": key.arn})


def list_key_rotations(self: KmsResponse) -> str:
    """https://docs.aws.amazon.com/kms/latest/APIReference/API_ListKeyRotations.html"""
    params = _json_params(self)
    include = params.get("IncludeKeyMaterial", ROTATIONS_ONLY)
    if include not in (ALL_KEY_MATERIAL, ROTATIONS_ONLY):
        raise ValidationException(
            f"1 validation error detected: Value '{include}' at 'includeKeyMaterial' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{ALL_KEY_MATERIAL}, {ROTATIONS_ONLY}]"
        )
    limit = params.get("Limit", LIST_LIMIT_DEFAULT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValidationException(
            f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: "
            f"Member must have value between 1 and {LIST_LIMIT_MAX}"
        )
    marker = params.get("Marker")
    rows, following = _backend(self).list_key_rotations_page(
        str(params.get("KeyId", "")), str(include), limit, None if marker is None else str(marker)
    )
    answer: dict[str, Any] = {"Rotations": rows, "Truncated": following is not None}
    if following is not None:
        answer["NextMarker"] = following
    return json.dumps(answer)


def get_key_rotation_status(self: KmsResponse) -> str:
    """GetKeyRotationStatus, with ``OnDemandRotationStartDate`` while an on-demand rotation runs."""
    params = _json_params(self)
    key = _backend(self).key_for(str(params.get("KeyId", "")))
    answer: dict[str, Any] = {"KeyId": key.arn, "KeyRotationEnabled": bool(key.key_rotation_status)}
    if key.rotation_started is not None:
        answer["OnDemandRotationStartDate"] = key.rotation_started.timestamp()
    return json.dumps(answer)


def _encode_marker(position: int) -> str:
    return base64.urlsafe_b64encode(f"sandbox-rotations:{position}".encode()).decode("ascii")


def _decode_marker(marker: str | None, total: int) -> int:
    """The position a NextMarker stands for; InvalidMarkerException for anything else."""
    if marker is None:
        return 0
    try:
        prefix, _, number = base64.urlsafe_b64decode(marker.encode("ascii")).decode().partition(":")
        position = int(number)
    except (ValueError, UnicodeError, binascii.Error):
        position = -1
        prefix = ""
    if prefix != "sandbox-rotations" or not 0 <= position <= total:
        raise JsonRESTError("InvalidMarkerException", "The request was rejected because the marker is not valid.")
    return position


def schedule_key_deletion(self: KmsResponse) -> str:
    """ScheduleKeyDeletion answering like AWS: key ARN, DeletionDate, KeyState, window."""
    params = _json_params(self)
    window = params.get("PendingWindowInDays", 30)
    backend = _backend(self)
    key = backend.key_for(str(params.get("KeyId", "")))
    deletion_date = backend.schedule_key_deletion(key.id, window)
    answer = {"KeyId": key.arn, "DeletionDate": deletion_date, "KeyState": key.key_state, "PendingWindowInDays": window}
    if key.key_state == kms_regions.PENDING_REPLICA_DELETION:  # a primary waiting for its replicas: no date yet
        del answer["DeletionDate"]
    return json.dumps(answer)


def cancel_key_deletion(self: KmsResponse) -> str:
    """CancelKeyDeletion answering with the key ARN, as AWS does."""
    params = _json_params(self)
    backend = _backend(self)
    key = backend.key_for(str(params.get("KeyId", "")))
    backend.cancel_key_deletion(key.id)
    return json.dumps({"KeyId": key.arn})


_MOTO_ENCRYPT = KmsResponse.encrypt
_MOTO_DECRYPT = KmsResponse.decrypt
_MOTO_GENERATE_PRIVATE_KEY = kms_models.generate_private_key


def _rsa_key(response: KmsResponse, key_id: object) -> SandboxKey | None:
    """The named key if it is an RSA key (whose Encrypt/Decrypt use RSA-OAEP); None otherwise."""
    if not key_id:
        return None
    key = _backend(response).key_for(str(key_id))
    return key if key.key_spec in kms_specs.RSA_BITS else None


def _usable_rsa_encryption_key(response: KmsResponse, key: SandboxKey) -> bytes:
    if key.key_usage != "ENCRYPT_DECRYPT":
        raise InvalidKeyUsageException(f"{key.arn} key usage is {key.key_usage}, not ENCRYPT_DECRYPT.")
    _backend(response)._require_usable(key)
    assert key.key_material is not None  # an Enabled EXTERNAL key holds its material
    return key.key_material


def encrypt(self: KmsResponse) -> str:
    """Encrypt: RSA keys encrypt with RSA-OAEP under their (imported) public key; others as moto does."""
    params = _json_params(self)
    key = _rsa_key(self, params.get("KeyId"))
    if key is None:
        return str(_MOTO_ENCRYPT(self))
    material = _usable_rsa_encryption_key(self, key)
    algorithm = str(params.get("EncryptionAlgorithm", "SYMMETRIC_DEFAULT"))
    ciphertext = kms_specs.rsa_encrypt(material, algorithm, _blob_param(params, "Plaintext"), key.arn)
    return json.dumps(
        {"CiphertextBlob": base64.b64encode(ciphertext).decode(), "KeyId": key.arn, "EncryptionAlgorithm": algorithm}
    )


def decrypt(self: KmsResponse) -> str:
    """Decrypt: with an RSA key (KeyId required, as on AWS), RSA-OAEP with the imported private key."""
    params = _json_params(self)
    key = _rsa_key(self, params.get("KeyId"))
    if key is None:
        return str(_MOTO_DECRYPT(self))
    material = _usable_rsa_encryption_key(self, key)
    algorithm = str(params.get("EncryptionAlgorithm", "SYMMETRIC_DEFAULT"))
    plaintext = kms_specs.rsa_decrypt(material, algorithm, _blob_param(params, "CiphertextBlob"), key.arn)
    return json.dumps(
        {"Plaintext": base64.b64encode(plaintext).decode(), "KeyId": key.arn, "EncryptionAlgorithm": algorithm}
    )


def call_action(self: KmsResponse) -> Any:
    """Apply time-driven changes (material expiry, end of deletion window) before each call.

    Holds the sandbox lock so the sweep and the call are one atomic step; moto's
    backends have no locking of their own and the server is threaded.
    """
    with SANDBOX_LOCK:
        backend = self.kms_backend
        if isinstance(backend, SandboxKmsBackend):
            backend.sweep()
        # Looked up at call time: the call counter wraps BaseResponse.call_action.
        return BaseResponse.call_action(self)


_ADDED_ACTIONS = {
    "get_parameters_for_import": get_parameters_for_import,
    "import_key_material": import_key_material,
    "delete_imported_key_material": delete_imported_key_material,
    "rotate_key_on_demand": rotate_key_on_demand,
    "list_key_rotations": list_key_rotations,
    "get_key_rotation_status": get_key_rotation_status,
    "schedule_key_deletion": schedule_key_deletion,
    "cancel_key_deletion": cancel_key_deletion,
    "encrypt": encrypt,
    "decrypt": decrypt,
    "call_action": call_action,
    **kms_regions.ACTIONS,
}


def _no_private_key_yet(key_spec: str) -> None:
    """What moto's Key.__init__ gets instead of a freshly generated private key (see SandboxKey.private_key)."""
    return None


def install() -> None:
    """Make moto's KMS the sandbox's KMS. Idempotent; call before serving requests.

    Existing moto KMS state is dropped, because keys created by the unpatched backend
    would not follow the rules above.
    """
    for name, function in _ADDED_ACTIONS.items():
        setattr(KmsResponse, name, function)
    # moto's Key.__init__ generates a private key for every key; SandboxKey makes it on first use instead.
    kms_models.generate_private_key = _no_private_key_yet  # type: ignore[assignment]
    if kms_backends.backend is SandboxKmsBackend:
        return
    kms_backends.backend = SandboxKmsBackend
    for account_backends in kms_backends.values():
        account_backends.backend = SandboxKmsBackend
        account_backends.clear()
