"""Custody in an HSM through PKCS#11 (SPEC §13): the ``pkcs11`` backend of :mod:`keys.custody`.

The KEK is a non-extractable, sensitive AES-256 key stored in the token. Material is
generated in the token as a *session* object (sensitive, extractable only by wrapping),
wrapped under the KEK with ``CKM_AES_KEY_WRAP_PAD`` and destroyed; the portal keeps only
that wrapped blob (:class:`HsmMaterial`). Every later use unwraps it into a session
object again and works on it there: the check value (``CKM_AES_CMAC`` / ``CKM_SHA*_HMAC``),
the wrapping for a KMS import and for a download (``CKM_RSA_PKCS_OAEP`` under an RSA
public key imported as a session object). So the plaintext never enters this process.

A second token key of the same ``CKA_ID`` (the *binding key*, AES-256, sign only) MACs
each stored blob together with the key's id and material version (``CKM_AES_CMAC``), as the software
backend's AES-GCM associated data does: a blob copied to another row fails to open.

Sessions come from a small pool (:class:`SessionPool`): bounded waits, a fresh login
after a token error, and no session is ever held across a KMS call (the AWS layer calls
:meth:`HsmMaterial.wrap_for_import` between GetParametersForImport and ImportKeyMaterial).

Where the token lacks a mechanism this module raises :class:`MissingMechanism` naming
it; there is no fallback to software.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import queue
import secrets
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from pkcs11 import MGF, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

from byok_portal import wrapping
from byok_portal.errors import ServiceError
from keys.specs import Family, spec_of

logger = logging.getLogger(__name__)

T = TypeVar("T")
# python-pkcs11 gives key objects their wrap/sign/unwrap methods at run time, by capability; its
# static types do not show them, so key handles are typed loosely here.
P11Key = Any

FORMAT_HSM = b"\x03"  # the software backend's blobs start with b"\x01" (before versions) or b"\x02"
_KEK_ID_BYTES = 8
_TAG_BYTES = 16
_AES_256_BITS = 256
_BINDING_SUFFIX = "/binding"
# Errors after which a session (or the login) can no longer be trusted: close it, log in again, retry once.
_SESSION_ERRORS: tuple[type[Exception], ...] = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.UserNotLoggedIn,
    p11.DeviceError,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.GeneralError,
)
_HMAC_MECHANISMS = {
    "SHA224": Mechanism.SHA224_HMAC,
    "SHA256": Mechanism.SHA256_HMAC,
    "SHA384": Mechanism.SHA384_HMAC,
    "SHA512": Mechanism.SHA512_HMAC,
}
_OAEP = {"SHA256": (Mechanism.SHA256, MGF.SHA256), "SHA1": (Mechanism.SHA_1, MGF.SHA1)}
# KMS's name for each wrapping algorithm the HSM produces, by the configured OAEP hash (SPEC §9, NOTES.md).
_OAEP_ALGORITHM = {"SHA256": wrapping.RSAES_OAEP_SHA_256, "SHA1": wrapping.RSAES_OAEP_SHA_1}
_OAEP_HASH_OF_ALGORITHM = {wrapping.RSAES_OAEP_SHA_256: "SHA256", wrapping.RSAES_OAEP_SHA_1: "SHA1"}
# Every mechanism this backend uses, for `byok_custody status` and for clear refusals.
REQUIRED_MECHANISMS = {
    "CKM_AES_KEY_GEN": Mechanism.AES_KEY_GEN,
    "CKM_GENERIC_SECRET_KEY_GEN": Mechanism.GENERIC_SECRET_KEY_GEN,
    "CKM_AES_KEY_WRAP_PAD": Mechanism.AES_KEY_WRAP_PAD,
    "CKM_AES_CMAC": Mechanism.AES_CMAC,
    "CKM_RSA_PKCS_OAEP": Mechanism.RSA_PKCS_OAEP,
    **{f"CKM_{name}_HMAC": mechanism for name, mechanism in _HMAC_MECHANISMS.items()},
}


class HsmError(ServiceError):
    """The HSM refused an operation or could not be reached. The message names the token and the cause."""

    status = 503
    code = "hsm_error"


class HsmUnavailable(HsmError):
    """No session could be had within the configured wait, or the token kept failing after a fresh login."""


class MissingMechanism(HsmError):
    """The token lacks a mechanism the pkcs11 backend needs; there is no software fallback."""

    code = "hsm_mechanism_missing"

    def __init__(self, mechanism: str, purpose: str) -> None:
        super().__init__(
            f"The HSM token does not offer {mechanism}, needed to {purpose}; "
            "BYOK_CUSTODY=pkcs11 does not fall back to software."
        )
        self.mechanism = mechanism


class UnsupportedSpec(HsmError):
    """A key spec whose material this backend cannot keep (asymmetric material, see :func:`check_spec`)."""

    status = 400
    code = "unsupported_by_custody"


# --- configuration and sessions -------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Where the token is and how to log in (settings ``BYOK_PKCS11_*``)."""

    module: str
    token_label: str
    pin: str = field(repr=False)
    kek_label: str
    oaep_hash: str
    pool_size: int
    wait_seconds: float

    @classmethod
    def from_settings(cls) -> Config:
        pin = settings.BYOK_PKCS11_PIN
        if settings.BYOK_PKCS11_PIN_FILE:
            pin = _read_pin_file(Path(settings.BYOK_PKCS11_PIN_FILE))
        if not pin:
            raise ImproperlyConfigured("BYOK_CUSTODY=pkcs11 needs BYOK_PKCS11_PIN or BYOK_PKCS11_PIN_FILE")
        if not settings.BYOK_PKCS11_TOKEN_LABEL:
            raise ImproperlyConfigured("BYOK_CUSTODY=pkcs11 needs BYOK_PKCS11_TOKEN_LABEL")
        return cls(
            module=settings.BYOK_PKCS11_MODULE,
            token_label=settings.BYOK_PKCS11_TOKEN_LABEL,
            pin=pin,
            kek_label=settings.BYOK_PKCS11_KEK_LABEL,
            oaep_hash=settings.BYOK_PKCS11_OAEP_HASH,
            pool_size=max(1, settings.BYOK_PKCS11_POOL_SIZE),
            wait_seconds=float(settings.BYOK_PKCS11_WAIT_SECONDS),
        )


def _read_pin_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ImproperlyConfigured(f"BYOK_PKCS11_PIN_FILE={path} cannot be read: {exc.strerror}") from exc
    if mode & 0o077:
        # The PIN opens the HSM to anyone on this machine who can read it (README "Custody in an HSM").
        raise ImproperlyConfigured(f"BYOK_PKCS11_PIN_FILE={path} must not be readable by group or others (chmod 600)")
    return path.read_text().strip()


@cache
def _lib(module: str) -> Any:
    try:
        loaded = pkcs11.lib(module)
    except RuntimeError as exc:
        raise ImproperlyConfigured(f"BYOK_PKCS11_MODULE={module} cannot be loaded: {exc}") from exc
    _loaded_modules.add(module)
    return loaded


class SessionPool:
    """A few logged-in R/W sessions on one token, shared by the threads of this process.

    ``run(operation)`` lends a session for one short HSM operation: it waits at most
    ``wait_seconds`` for one, and after a token or session error closes it, logs in
    again and retries once. ``uses`` counts sessions lent (the benchmark reports it).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._idle: queue.LifoQueue[pkcs11.Session] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(config.pool_size)
        self._lock = threading.Lock()
        self._logged_in = False
        self.uses = 0
        self.in_use = 0
        self.logins = 0
        self.kwp_exact: bool | None = None  # see _kwp_is_exact

    def token(self) -> pkcs11.Token:
        try:
            return _lib(self.config.module).get_token(token_label=self.config.token_label)
        except p11.NoSuchToken as exc:
            raise HsmError(f"No PKCS#11 token labelled {self.config.token_label!r} in {self.config.module}") from exc

    def _open(self) -> pkcs11.Session:
        token = self.token()
        with self._lock:
            if not self._logged_in:
                # PKCS#11 logs in the application, not the session: one C_Login covers every session.
                try:
                    session = token.open(rw=True, user_pin=self.config.pin)
                except p11.UserAlreadyLoggedIn:
                    session = token.open(rw=True)
                except (p11.PinIncorrect, p11.PinLocked, p11.PinExpired) as exc:
                    raise HsmError(f"Login to token {self.config.token_label!r} refused: {type(exc).__name__}") from exc
                self._logged_in = True
                self.logins += 1
                return session
        return token.open(rw=True)

    def _discard(self, session: pkcs11.Session) -> None:
        with self._lock:
            self._logged_in = False
        with contextlib.suppress(p11.PKCS11Error):  # already gone with the token or the login
            session.close()

    def run(self, operation: Callable[[pkcs11.Session], T]) -> T:
        if not self._slots.acquire(timeout=self.config.wait_seconds):
            raise HsmUnavailable(
                f"No HSM session free within {self.config.wait_seconds:g}s (pool of {self.config.pool_size})"
            )
        try:
            for attempt in (1, 2):
                try:
                    session = self._idle.get_nowait()
                except queue.Empty:
                    session = self._open()
                with self._lock:
                    self.in_use += 1
                try:
                    result = operation(session)
                except _SESSION_ERRORS as exc:
                    self._discard(session)
                    if attempt == 2:
                        raise HsmUnavailable(f"The HSM token keeps failing: {type(exc).__name__}") from exc
                    logger.warning("HSM session failed; logging in again", extra={"error": type(exc).__name__})
                    continue
                except BaseException:
                    self._idle.put(session)
                    raise
                finally:
                    with self._lock:
                        self.in_use -= 1
                with self._lock:
                    self.uses += 1
                self._idle.put(session)
                return result
            raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close the idle sessions (tests and shutdown)."""
        while True:
            try:
                self._discard(self._idle.get_nowait())
            except queue.Empty:
                return


_pools: dict[Config, SessionPool] = {}
_pools_lock = threading.Lock()


def pool() -> SessionPool:
    """The session pool for the configured token (one per configuration, so tests can switch tokens)."""
    config = Config.from_settings()
    with _pools_lock:
        if config not in _pools:
            _pools[config] = SessionPool(config)
        return _pools[config]


def close_pools() -> None:
    with _pools_lock:
        for each in _pools.values():
            each.close()
        _pools.clear()


def _after_fork_in_child() -> None:
    """A forked process (a Celery prefork worker) inherits no usable PKCS#11 state: start afresh.

    PKCS#11 requires C_Initialize again in the child; the parent's sessions are not the
    child's to use or close, so they are forgotten, not closed.
    """
    global _pools_lock
    _pools_lock = threading.Lock()
    _pools.clear()
    if _lib.cache_info().currsize:
        for module in _loaded_modules:
            _lib(module).reinitialize()


_loaded_modules: set[str] = set()
os.register_at_fork(after_in_child=_after_fork_in_child)


# --- the KEK ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KekInfo:
    """The KEK's identity: its label and the random ``CKA_ID`` every blob it wraps names."""

    label: str
    kek_id: bytes


def _find_secret(session: pkcs11.Session, **attrs: Any) -> P11Key | None:
    template = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: True}
    for name, value in attrs.items():
        template[Attribute[name.upper()]] = value
    found = list(session.get_objects(template))
    if len(found) > 1:
        raise HsmError(f"More than one key in the token matches {sorted(attrs)}: remove the duplicates")
    return found[0] if found else None


def _kek_by_label(session: pkcs11.Session, label: str) -> P11Key | None:
    return _find_secret(session, label=label, wrap=True)


def _binding_key(session: pkcs11.Session, kek_id: bytes) -> P11Key:
    key = _find_secret(session, id=kek_id, sign=True)
    if key is None:
        raise HsmError(f"The token holds no binding key for KEK {kek_id.hex()}")
    return key


def _kek_by_id(session: pkcs11.Session, kek_id: bytes) -> P11Key | None:
    return _find_secret(session, id=kek_id, wrap=True)


def _current_kek(session: pkcs11.Session) -> tuple[P11Key, bytes]:
    label = pool().config.kek_label
    kek = _kek_by_label(session, label)
    if kek is None:
        raise HsmError(f"The token has no KEK labelled {label!r}: run `manage.py byok_custody init`")
    return kek, bytes(kek[Attribute.ID])


def _token_key(session: pkcs11.Session, *, label: str, kek_id: bytes, capabilities: MechanismFlag) -> None:
    session.generate_key(
        KeyType.AES,
        _AES_256_BITS,
        id=kek_id,
        label=label,
        store=True,
        capabilities=capabilities,
        template={
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.PRIVATE: True,
            Attribute.MODIFIABLE: False,
        },
    )


def init_kek() -> tuple[KekInfo, bool]:
    """Create the KEK (and its binding key) labelled ``BYOK_PKCS11_KEK_LABEL`` if absent. (info, created)."""
    label = pool().config.kek_label

    def step(session: pkcs11.Session) -> tuple[KekInfo, bool]:
        existing = _kek_by_label(session, label)
        if existing is not None:
            return KekInfo(label, bytes(existing[Attribute.ID])), False
        _require(session, "CKM_AES_KEY_GEN", "generate the KEK")
        kek_id = secrets.token_bytes(_KEK_ID_BYTES)
        _token_key(session, label=label, kek_id=kek_id, capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP)
        _token_key(
            session,
            label=label + _BINDING_SUFFIX,
            kek_id=kek_id,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
        )
        return KekInfo(label, kek_id), True

    return pool().run(step)


def current_kek_info() -> KekInfo:
    return pool().run(lambda session: KekInfo(pool().config.kek_label, _current_kek(session)[1]))


@dataclass(frozen=True)
class Status:
    """What ``byok_custody status`` reports."""

    module: str
    token_label: str
    manufacturer: str
    model: str
    kek: KekInfo | None
    mechanisms: dict[str, bool]
    oaep_sha256: bool


def _require(session: pkcs11.Session, name: str, purpose: str) -> None:
    if REQUIRED_MECHANISMS[name] not in _mechanisms(session):
        raise MissingMechanism(name, purpose)


def _mechanisms(session: pkcs11.Session) -> set[Mechanism]:
    return set(session.token.slot.get_mechanisms())


def status() -> Status:
    """The token, whether the KEK exists, and which of the needed mechanisms the token offers."""

    def step(session: pkcs11.Session) -> Status:
        offered = _mechanisms(session)
        kek = _kek_by_label(session, pool().config.kek_label)
        token = session.token
        return Status(
            module=pool().config.module,
            token_label=token.label,
            manufacturer=token.manufacturer_id,
            model=token.model,
            kek=KekInfo(pool().config.kek_label, bytes(kek[Attribute.ID])) if kek is not None else None,
            mechanisms={name: mechanism in offered for name, mechanism in REQUIRED_MECHANISMS.items()},
            oaep_sha256=_oaep_sha256_works(session),
        )

    return pool().run(step)


def _oaep_sha256_works(session: pkcs11.Session) -> bool:
    """Whether CKM_RSA_PKCS_OAEP accepts SHA-256 (SoftHSM2 2.6 only takes SHA-1): tried on throwaway keys."""
    pair: tuple[P11Key, P11Key] = session.generate_keypair(KeyType.RSA, 2048, store=False)
    public, private = pair
    secret = session.generate_key(KeyType.AES, _AES_256_BITS, store=False, template={Attribute.EXTRACTABLE: True})
    try:
        public.wrap_key(secret, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=(*_OAEP["SHA256"], None))
    except (p11.ArgumentsBad, p11.MechanismParamInvalid, p11.MechanismInvalid):
        return False
    finally:
        for each in (secret, private, public):
            each.destroy()
    return True


# --- material ---------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class HsmMaterial:
    """A key's material as the pkcs11 backend holds it: wrapped under the HSM KEK, never in plaintext.

    It has no byte value of its own (no ``bytes()``, no ``len()``): whatever needs the
    material asks the HSM, through this module's functions. The AWS layer wraps it for
    an import through :meth:`wrap_for_import` (the ``WrapsForImport`` protocol there).
    """

    key_spec: str
    wrapped: bytes
    kek_id: bytes

    def __repr__(self) -> str:
        return f"HsmMaterial(key_spec={self.key_spec!r}, kek={self.kek_id.hex()})"

    def import_wrapping_algorithm(self, requested: str) -> str:
        """The algorithm KMS is asked for: the one this token produces (SHA-1 OAEP if so configured)."""
        if requested not in _OAEP_HASH_OF_ALGORITHM:
            raise UnsupportedSpec(f"The pkcs11 backend does not wrap with {requested}")
        return wrapping_algorithm()

    def wrap_for_import(self, public_key_der: bytes, algorithm: str) -> bytes:
        """Inside the HSM: the material wrapped under KMS's wrapping public key (GetParametersForImport's)."""
        public_key = serialization.load_der_public_key(public_key_der)
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise HsmError("KMS returned a wrapping key that is not RSA")
        return wrap_rsa(self, public_key, algorithm)


def check_spec(key_spec: str) -> None:
    """Refuse a spec whose material this backend cannot keep.

    - Asymmetric material (RSA, EC): a private key would need ``CKM_RSA_AES_KEY_WRAP`` (or
      an exact ``CKM_AES_KEY_WRAP_PAD`` of its PKCS#8 encoding) to reach KMS; SoftHSM2 2.6
      has the first not at all and pads the second with zeros, which KMS refuses. RSA and
      EC keys stay with the software backend.
    - Material whose length is not a multiple of 8 bytes (HMAC_224's 28) on a token whose
      ``CKM_AES_KEY_WRAP_PAD`` gives such a key back zero-padded (SoftHSM2 2.6 does; found
      by :func:`_kwp_is_exact` once per pool): it would come back 4 bytes too long.
    """
    spec = spec_of(key_spec)
    if spec.family not in (Family.SYMMETRIC, Family.HMAC):
        raise UnsupportedSpec(
            f"{key_spec} material cannot be kept by BYOK_CUSTODY=pkcs11: a private key needs CKM_RSA_AES_KEY_WRAP, "
            "which this backend does not use yet; only symmetric and HMAC keys are held in the HSM."
        )
    if spec.size % 8 and not _kwp_is_exact():
        raise UnsupportedSpec(
            f"{key_spec} material cannot be kept by this HSM: its CKM_AES_KEY_WRAP_PAD returns a {spec.size}-byte key "
            "zero-padded to a multiple of 8 bytes (a SoftHSM2 2.6 defect)."
        )


def _kwp_is_exact() -> bool:
    """Whether the token's AES-KWP gives a 28-byte key back as 28 bytes: tried once per pool on throwaway keys.

    Neither key is material: both are generated for the test, readable, and destroyed.
    """
    current = pool()
    if current.kwp_exact is None:

        def step(session: pkcs11.Session) -> bool:
            transport: P11Key = session.generate_key(
                KeyType.AES,
                _AES_256_BITS,
                store=False,
                capabilities=MechanismFlag.WRAP,
                template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
            )
            probe: P11Key = session.generate_key(
                KeyType.GENERIC_SECRET, 28 * 8, store=False, template={Attribute.EXTRACTABLE: True}
            )
            try:
                wrapped = transport.wrap_key(probe, mechanism=Mechanism.AES_KEY_WRAP_PAD)
                return len(aes_key_unwrap_with_padding(bytes(transport[Attribute.VALUE]), bytes(wrapped))) == 28
            finally:
                probe.destroy()
                transport.destroy()

        current.kwp_exact = current.run(step)
    return current.kwp_exact


def _secret_template() -> dict[Attribute, Any]:
    # Sensitive: its value can never be read; extractable: it can leave the token, but only wrapped.
    return {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True, Attribute.TOKEN: False}


def _key_type(key_spec: str) -> KeyType:
    return KeyType.AES if spec_of(key_spec).family == Family.SYMMETRIC else KeyType.GENERIC_SECRET


def _wrap_under_kek(session: pkcs11.Session, key: P11Key, key_spec: str) -> HsmMaterial:
    kek, kek_id = _current_kek(session)
    return HsmMaterial(key_spec, kek.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD), kek_id)


def _unwrap(session: pkcs11.Session, material: HsmMaterial) -> P11Key:
    """The material as a session object (destroy it when done)."""
    kek = _kek_by_id(session, material.kek_id)
    if kek is None:
        raise HsmError(f"The token no longer holds KEK {material.kek_id.hex()} that wrapped this material")
    key: P11Key = kek.unwrap_key(
        ObjectClass.SECRET_KEY,
        _key_type(material.key_spec),
        material.wrapped,
        mechanism=Mechanism.AES_KEY_WRAP_PAD,
        store=False,
        capabilities=MechanismFlag.SIGN,
        template=_secret_template(),
    )
    return key


def _with_unwrapped(material: HsmMaterial, use: Callable[[pkcs11.Session, P11Key], T]) -> T:
    def step(session: pkcs11.Session) -> T:
        key = _unwrap(session, material)
        try:
            return use(session, key)
        finally:
            key.destroy()

    return pool().run(step)


def generate(key_spec: str) -> HsmMaterial:
    """Fresh material generated by the HSM, returned only wrapped under the KEK."""
    check_spec(key_spec)
    spec = spec_of(key_spec)

    def step(session: pkcs11.Session) -> HsmMaterial:
        if spec.family == Family.SYMMETRIC:
            _require(session, "CKM_AES_KEY_GEN", f"generate {key_spec} material")
        else:
            _require(session, "CKM_GENERIC_SECRET_KEY_GEN", f"generate {key_spec} material")
        _require(session, "CKM_AES_KEY_WRAP_PAD", "wrap material under the KEK")
        key = session.generate_key(
            _key_type(key_spec),
            spec.size * 8,
            store=False,
            capabilities=MechanismFlag.SIGN,
            template=_secret_template(),
        )
        try:
            return _wrap_under_kek(session, key, key_spec)
        finally:
            key.destroy()

    return pool().run(step)


def import_plaintext(key_spec: str, material: bytes | bytearray) -> HsmMaterial:
    """Move software-held material into the HSM (the software → pkcs11 migration; nothing else uses it)."""
    check_spec(key_spec)

    def step(session: pkcs11.Session) -> HsmMaterial:
        key: P11Key = session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: _key_type(key_spec),
                Attribute.VALUE: bytes(material),
                Attribute.SIGN: True,
                **_secret_template(),
            }
        )
        try:
            return _wrap_under_kek(session, key, key_spec)
        finally:
            key.destroy()

    return pool().run(step)


def rewrap(material: HsmMaterial) -> HsmMaterial:
    """The same material wrapped under the current KEK (KEK rotation inside the HSM)."""
    return _with_unwrapped(material, lambda session, key: _wrap_under_kek(session, key, material.key_spec))


def check_value(material: HsmMaterial) -> str:
    """KCV inside the HSM: AES-CMAC (symmetric) or HMAC with the key's hash (HMAC), over 16 zero bytes."""
    spec = spec_of(material.key_spec)
    if spec.family == Family.SYMMETRIC:
        name, mechanism = "CKM_AES_CMAC", Mechanism.AES_CMAC
    else:
        name, mechanism = f"CKM_{spec.detail}_HMAC", _HMAC_MECHANISMS[spec.detail]

    def use(session: pkcs11.Session, key: P11Key) -> str:
        _require(session, name, f"compute the check value of {material.key_spec} material")
        return bytes(key.sign(bytes(16), mechanism=mechanism))[:3].hex().upper()

    return _with_unwrapped(material, use)


def wrapping_algorithm() -> str:
    """The RSA-OAEP algorithm the HSM wraps with for KMS and for downloads (by ``BYOK_PKCS11_OAEP_HASH``)."""
    return _OAEP_ALGORITHM[settings.BYOK_PKCS11_OAEP_HASH]


def wrap_rsa(material: HsmMaterial, public_key: rsa.RSAPublicKey, algorithm: str) -> bytes:
    """Inside the HSM: ``material`` wrapped under ``public_key`` with RSA-OAEP (``algorithm``'s hash)."""
    oaep_hash = _OAEP_HASH_OF_ALGORITHM.get(algorithm)
    if oaep_hash is None:
        raise UnsupportedSpec(f"The pkcs11 backend does not wrap with {algorithm}")
    numbers = public_key.public_numbers()

    def use(session: pkcs11.Session, key: P11Key) -> bytes:
        _require(session, "CKM_RSA_PKCS_OAEP", f"wrap material with {algorithm}")
        wrapping_key: P11Key = session.create_object(
            {
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.TOKEN: False,
                Attribute.MODULUS: numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"),
                Attribute.PUBLIC_EXPONENT: numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"),
                Attribute.WRAP: True,
            }
        )
        try:
            return bytes(
                wrapping_key.wrap_key(key, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=(*_OAEP[oaep_hash], None))
            )
        except (p11.ArgumentsBad, p11.MechanismParamInvalid) as exc:
            raise MissingMechanism(
                f"CKM_RSA_PKCS_OAEP with {oaep_hash}/MGF1-{oaep_hash}",
                f"wrap material with {algorithm} (set BYOK_PKCS11_OAEP_HASH=SHA1 if the token only offers SHA-1)",
            ) from exc
        finally:
            wrapping_key.destroy()

    return _with_unwrapped(material, use)


# --- blobs at rest ----------------------------------------------------------------------


def _binding_tag(session: pkcs11.Session, kek_id: bytes, aad: bytes, body: bytes) -> bytes:
    mac = _binding_key(session, kek_id).sign(aad + body, mechanism=Mechanism.AES_CMAC)
    return bytes(mac)[:_TAG_BYTES]


def _body(material: HsmMaterial) -> bytes:
    spec = material.key_spec.encode("ascii")
    return (
        FORMAT_HSM
        + material.kek_id
        + struct.pack(">B", len(spec))
        + spec
        + struct.pack(">H", len(material.wrapped))
        + material.wrapped
    )


def seal(aad: bytes, material: HsmMaterial) -> bytes:
    """The stored form: format, KEK id, spec, the KEK-wrapped material, and a CMAC binding it to ``aad``."""
    body = _body(material)
    return body + pool().run(lambda session: _binding_tag(session, material.kek_id, aad, body))


class BlobError(HsmError):
    """A stored blob that is not genuine (tampered, swapped between rows, or unknown format)."""

    status = 500
    code = "custody_error"


def parse(blob: bytes) -> tuple[HsmMaterial, bytes, bytes]:
    """(material, body, tag) of a stored blob, without checking its tag."""
    try:
        if not blob.startswith(FORMAT_HSM):
            raise ValueError("not an HSM blob")
        offset = 1
        kek_id = blob[offset : offset + _KEK_ID_BYTES]
        offset += _KEK_ID_BYTES
        (spec_len,) = struct.unpack_from(">B", blob, offset)
        offset += 1
        key_spec = blob[offset : offset + spec_len].decode("ascii")
        offset += spec_len
        (wrapped_len,) = struct.unpack_from(">H", blob, offset)
        offset += 2
        wrapped = blob[offset : offset + wrapped_len]
        offset += wrapped_len
        tag = blob[offset:]
        if len(kek_id) != _KEK_ID_BYTES or len(wrapped) != wrapped_len or len(tag) != _TAG_BYTES:
            raise ValueError("truncated")
        spec_of(key_spec)
    except (ValueError, struct.error, KeyError, UnicodeDecodeError) as exc:
        raise BlobError("sealed material has an unknown format") from exc
    return HsmMaterial(key_spec, wrapped, kek_id), blob[:offset], tag


def unseal(aad: bytes, blob: bytes) -> HsmMaterial:
    """The :class:`HsmMaterial` of a blob sealed by :func:`seal` for ``aad``; :class:`BlobError` if not genuine."""
    material, body, tag = parse(blob)

    def step(session: pkcs11.Session) -> bytes:
        if _kek_by_id(session, material.kek_id) is None:
            raise BlobError(f"sealed under KEK {material.kek_id.hex()}, which this token does not hold")
        return _binding_tag(session, material.kek_id, aad, body)

    if not hmac.compare_digest(pool().run(step), tag):
        raise BlobError("sealed material failed authentication")
    return material


def blob_kek_id(blob: bytes) -> bytes:
    return bytes(blob[1 : 1 + _KEK_ID_BYTES])
