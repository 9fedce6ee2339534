"""The sandbox-only ``/_sandbox/`` HTTP API and the AWS call counter.

Tests and benchmarks use it to look at KMS keys without going through KMS, to make
time-driven events happen now (purge), to start from nothing (reset) and to count the
AWS calls a portal operation makes. It never returns key material: only its SHA-256
and KCV.

Endpoints (JSON in and out):

- ``GET  /_sandbox/kms/<account>/<region>/keys/<key_id>`` → key summary (see :func:`key_summary`)
- ``POST /_sandbox/kms/<account>/<region>/keys/<key_id>/purge`` → ``{"key_id": ..., "purged": true}``
- ``POST /_sandbox/reset`` → ``{"reset": true}`` (the state file, if any, is emptied too)
- ``GET  /_sandbox/calls`` → ``{"KMS.CreateKey": 1, "STS.AssumeRole": 2, ...}``
- ``POST /_sandbox/calls/reset`` → ``{}`` (the KMS call log and the recorded STS sessions too)
- ``GET  /_sandbox/calls/log`` → ``{"calls": [{"at", "account", "region", "operation", "throttled"}, ...]}`` (KMS)
- ``POST /_sandbox/quota/<scale>`` → ``{"scale": ...}``: KMS quota mode at ``scale`` × AWS's rates, 0 = off
  (see :mod:`sandbox_aws.quotas`)
- ``GET  /_sandbox/sts/sessions`` → ``{"sessions": [{"role_arn", "role_session_name", "source_identity",
  "access_key_id", "time"}, ...]}``: every AssumeRole granted, as CloudTrail would show it
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache
from typing import Any

import botocore.session
from botocore.exceptions import UnknownServiceError
from moto.core.responses import BaseResponse
from moto.kms.models import kms_backends
from moto.moto_api._internal.models import moto_api_backend

from sandbox_aws import quotas, state, sts
from sandbox_aws.kms import SandboxKey, SandboxKmsBackend, material_fingerprint
from sandbox_aws.locking import SANDBOX_LOCK

PREFIX = "/_sandbox/"
QUOTA_PATH = re.compile(r"^/_sandbox/quota/(?P<scale>\d+(\.\d+)?)$")
KEY_PATH = re.compile(
    r"^/_sandbox/kms/(?P<account>\d{12})/(?P<region>[a-z0-9-]+)/keys/(?P<key_id>[^/]+)(?P<purge>/purge)?$"
)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


# -- call counter ------------------------------------------------------------------------

_calls: Counter[str] = Counter()


@cache
def _service_id(service_name: str) -> str:
    """botocore's service id ("KMS", "STS", "IAM"), the name users see in boto3 errors."""
    try:
        return str(botocore.session.get_session().get_service_model(service_name).service_id)
    except UnknownServiceError:
        return service_name.upper()


def _counting_call_action(original: Callable[[BaseResponse], Any]) -> Callable[[BaseResponse], Any]:
    def call_action(self: BaseResponse) -> Any:
        with SANDBOX_LOCK:
            action = self._get_action()
            # Counted before running, so refused calls count too: they are AWS round trips.
            service = _service_id(self.boto3_service_name)
            _calls[f"{service}.{action}"] += 1
            if service == "KMS" and not quotas.admit(self.current_account, self.region, action):
                return quotas.throttled_response()
            try:
                return original(self)
            finally:
                # Before the response leaves: what a caller was told survives a restart.
                state.after_call(action)

    call_action.sandbox_wrapped = True  # type: ignore[attr-defined]  # marker that makes install() idempotent
    return call_action


def install_call_counter() -> None:
    """Count every AWS call the moto server handles. Idempotent."""
    if getattr(BaseResponse.call_action, "sandbox_wrapped", False):
        return
    BaseResponse.call_action = _counting_call_action(BaseResponse.call_action)  # type: ignore[method-assign,assignment]


def call_counts() -> dict[str, int]:
    """Calls per ``<Service>.<Operation>`` since start or the last reset."""
    with SANDBOX_LOCK:
        return dict(sorted(_calls.items()))


def reset_call_counts() -> None:
    """Start counting (and logging KMS calls) from zero."""
    with SANDBOX_LOCK:
        _calls.clear()
        quotas.reset()
        sts.reset_sessions()


def reset_everything() -> None:
    """Forget all AWS state (every service, account and region) and the call counts, on disk too."""
    with SANDBOX_LOCK:
        moto_api_backend.reset()
        _calls.clear()
        sts.reset_sessions()
        state.after_change()


# -- key inspection ----------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def key_summary(backend: SandboxKmsBackend, key: SandboxKey) -> dict[str, Any]:
    """What tests may know about a key: state, origin, fingerprint of its material, names, tags, dates."""
    fingerprint = material_fingerprint(key.key_material, key.key_spec) if key.key_material is not None else None
    return {
        "key_id": key.id,
        "arn": key.arn,
        "key_state": key.key_state,
        "origin": key.origin,
        "has_material": key.has_material,
        "material_sha256": fingerprint.sha256_hex if fingerprint else None,
        "kcv": fingerprint.kcv if fingerprint else None,
        "public_key_sha256": fingerprint.public_key_sha256 if fingerprint else None,
        "key_spec": key.key_spec,
        "key_usage": key.key_usage,
        "aliases": sorted(key.aliases),
        "tags": backend.tagger.get_tag_dict_for_resource(key.id),
        "deletion_date": _iso(key.deletion_date),
        "expiration_model": key.expiration_model,
        "valid_to": _iso(key.valid_to),
        "materials": [
            {"id": m.material_id, "state": m.state, "imported": m.imported, "valid_to": _iso(m.valid_to)}
            for m in key.materials
        ],
    }


class ControlError(Exception):
    """An error answered as ``{"error": ..., "message": ...}`` with an HTTP status."""

    def __init__(self, status: str, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def _kms_backend(account: str, region: str) -> SandboxKmsBackend:
    account_backends = kms_backends[account]
    if region not in account_backends:
        raise ControlError("404 Not Found", "UnknownRegion", f"KMS has no region {region!r}")
    backend = account_backends[region]
    if not isinstance(backend, SandboxKmsBackend):
        raise ControlError("500 Internal Server Error", "NotInstalled", "sandbox KMS patches are not installed")
    return backend


def _handle_key(method: str, account: str, region: str, key_id: str, purge: bool) -> dict[str, Any]:
    expected = "POST" if purge else "GET"
    if method != expected:
        raise ControlError("405 Method Not Allowed", "MethodNotAllowed", f"use {expected}")
    with SANDBOX_LOCK:
        backend = _kms_backend(account, region)
        backend.sweep()
        try:
            key = backend.key_for(key_id)
        except Exception:
            raise ControlError("404 Not Found", "NotFoundException", f"Key {key_id} does not exist") from None
        if purge:
            # As at the end of the deletion window: the key, its aliases and tags are gone.
            backend.delete_key(key.id)
            state.after_change()
            return {"key_id": key.id, "purged": True}
        return key_summary(backend, key)


def _reset() -> dict[str, Any]:
    reset_everything()
    return {"reset": True}


def _reset_calls() -> dict[str, Any]:
    reset_call_counts()
    return {}


def _call_log() -> dict[str, Any]:
    return {"calls": quotas.call_log()}


ROUTES: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
    ("GET", "/_sandbox/calls/log"): _call_log,
    ("POST", "/_sandbox/reset"): _reset,
    ("GET", "/_sandbox/calls"): call_counts,
    ("POST", "/_sandbox/calls/reset"): _reset_calls,
    ("GET", "/_sandbox/sts/sessions"): lambda: {"sessions": sts.sessions()},
}


def _dispatch(method: str, path: str) -> dict[str, Any]:
    quota = QUOTA_PATH.match(path)
    if quota and method == "POST":
        quotas.set_scale(float(quota["scale"]))
        return {"scale": quotas.scale()}
    match = KEY_PATH.match(path)
    if match:
        return _handle_key(method, match["account"], match["region"], match["key_id"], bool(match["purge"]))
    handler = ROUTES.get((method, path))
    if handler is not None:
        return handler()
    if any(route_path == path for _, route_path in ROUTES):
        raise ControlError("405 Method Not Allowed", "MethodNotAllowed", f"{method} not allowed on {path}")
    raise ControlError("404 Not Found", "NotFound", f"no sandbox endpoint {path}")


def with_control_api(app: WsgiApp) -> WsgiApp:
    """Wrap the moto WSGI app so ``/_sandbox/`` requests are answered here."""

    def control_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX):
            return app(environ, start_response)
        try:
            status, body = "200 OK", _dispatch(environ.get("REQUEST_METHOD", "GET"), path)
        except ControlError as error:
            status, body = error.status, {"error": error.error, "message": error.message}
        payload = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    return control_app
