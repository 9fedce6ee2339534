r"""STS AssumeRole as AWS answers it: only an existing role, only as its trust policy allows.

moto lets anyone assume any role ARN, even one that was never created. The sandbox does
what AWS does instead: AssumeRole is refused with ``AccessDenied`` unless the role exists
in the sandbox's IAM and its trust policy has an ``Allow`` statement for
``sts:AssumeRole`` whose ``sts:ExternalId`` conditions the call meets. So "Test
connection" in the portal fails until the role is created with the trust policy the
portal generates, exactly as it would against AWS. Principals, other condition keys and
Deny statements are not evaluated: the sandbox is not an IAM policy engine.

``RoleSessionName`` and ``SourceIdentity`` are validated as AWS does (2-64 characters of
``[\w+=,.@-]``; a SourceIdentity may not start with ``aws:``), and a SourceIdentity is
refused unless the trust policy also allows ``sts:SetSourceIdentity``. Every granted
session is recorded (:func:`sessions`, ``GET /_sandbox/sts/sessions``): what the
customer's CloudTrail would show of it.

To create roles at all, every account has a role :data:`ACCOUNT_ADMIN_ROLE` that anyone
may assume, standing in for the account's administrator (on AWS: the role AWS
Organizations creates in member accounts for the management account). Through it, the
IAM API creates roles exactly as an administrator would on AWS.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import AccessDeniedError, InvalidClientTokenIdError, JsonRESTError
from moto.core.responses import BaseResponse
from moto.iam import models as moto_iam_models
from moto.iam.exceptions import NotFoundException
from moto.iam.models import iam_backends
from moto.sts.exceptions import STSValidationError
from moto.sts.models import STSBackend
from moto.sts.responses import TokenResponse

ROLE_ARN = re.compile(r"^arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):role/.+$")
EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")
EXTERNAL_ID_CONDITION_KEY = "sts:externalid"
ASSUME_ROLE_ACTIONS = {"sts:assumerole", "sts:*", "*"}
SET_SOURCE_IDENTITY_ACTIONS = {"sts:setsourceidentity", "sts:*", "*"}
SESSION_NAME_PATTERN = r"[\w+=,.@-]*"
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$", re.ASCII)
ACCOUNT_ADMIN_ROLE = "OrganizationAccountAccessRole"


class AccessDenied(AccessDeniedError):
    """AWS's answer (HTTP 403) when the trust policy does not let the caller in."""

    def __init__(self, role_arn: str, action: str = "sts:AssumeRole") -> None:
        # The backend does not know the caller's ARN; AWS would name it here.
        super().__init__(user_arn="the caller", action=f"{action} on resource: {role_arn}")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _load_policy(document: str) -> dict[str, Any]:
    try:
        policy = json.loads(document)
    except json.JSONDecodeError:
        # IAM hands policies around URL-encoded; moto may keep them that way.
        policy = json.loads(urllib.parse.unquote(document))
    return policy if isinstance(policy, dict) else {}


def _external_id_matches(operator: str, expected: list[Any], external_id: str | None) -> bool:
    if external_id is None:
        return False
    operator = operator.lower()
    if operator == "stringequals":
        return external_id in expected
    if operator == "stringequalsignorecase":
        return external_id.lower() in {str(value).lower() for value in expected}
    if operator == "stringlike":
        return any(fnmatch.fnmatchcase(external_id, str(pattern)) for pattern in expected)
    # Operators the sandbox does not evaluate never grant access through ExternalId.
    return False


def _statement_allows(statement: dict[str, Any], external_id: str | None) -> bool:
    """An Allow statement admits the call if each of its ExternalId conditions holds."""
    for operator, conditions in (statement.get("Condition") or {}).items():
        for key, expected in (conditions or {}).items():
            if key.lower() == EXTERNAL_ID_CONDITION_KEY and not _external_id_matches(
                operator, _as_list(expected), external_id
            ):
                return False
    return True


def trust_policy_admits(document: str, external_id: str | None, actions: set[str] = ASSUME_ROLE_ACTIONS) -> bool:
    """Whether a role's trust policy allows one of ``actions`` (AssumeRole by default), judged on ExternalId only."""
    statements = [
        statement
        for statement in _as_list(_load_policy(document).get("Statement", []))
        if isinstance(statement, dict)
        and statement.get("Effect") == "Allow"
        and any(str(action).lower() in actions for action in _as_list(statement.get("Action", [])))
    ]
    # Nothing allows AssumeRole: denied, as IAM denies whatever no statement allows.
    return any(_statement_allows(statement, external_id) for statement in statements)


def _existing_role(match: re.Match[str], role_arn: str) -> Any | None:
    # Only look where a role could exist: never create IAM state for a mere lookup.
    if match["account"] not in iam_backends:
        return None
    account_iam = iam_backends[match["account"]]
    if match["partition"] not in account_iam:
        return None
    try:
        return account_iam[match["partition"]].get_role_by_arn(role_arn)
    except NotFoundException:
        return None


def _check_name(field: str, value: str) -> None:
    """AWS's constraints on RoleSessionName and SourceIdentity, with its validation messages."""
    if not _SESSION_NAME.match(value):
        constraint = (
            f"Member must have length {'greater than or equal to 2' if len(value) < 2 else 'less than or equal to 64'}"
            if not 2 <= len(value) <= 64
            else f"Member must satisfy regular expression pattern: {SESSION_NAME_PATTERN}"
        )
        raise STSValidationError(
            f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
        )


def check_assume_role(
    role_arn: str, external_id: str | None, session_name: str = "sandbox", source_identity: str | None = None
) -> None:
    """Refuse AssumeRole like AWS: bad names, a role that does not exist, or a trust policy that does not admit it."""
    _check_name("roleSessionName", session_name)
    if source_identity is not None:
        _check_name("sourceIdentity", source_identity)
        if source_identity.lower().startswith("aws:"):
            raise STSValidationError("SourceIdentity cannot start with the reserved prefix 'aws:'")
    if external_id is not None and not EXTERNAL_ID.match(external_id):
        raise STSValidationError(
            f"1 validation error detected: Value '{external_id}' at 'externalId' failed to satisfy constraint: "
            r"Member must satisfy regular expression pattern: [\w+=,.@:/-]*"
        )
    match = ROLE_ARN.match(role_arn or "")
    if match is None:
        # AWS answers a malformed ARN with the same AccessDenied as a missing role.
        raise AccessDenied(role_arn)
    role = _existing_role(match, role_arn)
    if role is None:
        if role_arn.split(":role/", 1)[1] == ACCOUNT_ADMIN_ROLE:
            return
        raise AccessDenied(role_arn)
    document = role.assume_role_policy_document
    if not trust_policy_admits(document, external_id):
        raise AccessDenied(role_arn)
    # AWS evaluates sts:SetSourceIdentity as a second action of the same request.
    if source_identity is not None and not trust_policy_admits(document, external_id, SET_SOURCE_IDENTITY_ACTIONS):
        raise AccessDenied(role_arn, action="sts:SetSourceIdentity")


# -- the sessions granted: what CloudTrail would record of each AssumeRole ----------------

_sessions_lock = threading.Lock()
_sessions: list[dict[str, Any]] = []


def sessions() -> list[dict[str, Any]]:
    """Every AssumeRole granted since start or the last reset, oldest first."""
    with _sessions_lock:
        return [dict(entry) for entry in _sessions]


def reset_sessions() -> None:
    with _sessions_lock:
        _sessions.clear()


def _wrap_assume_role_response(original: Callable[..., Any]) -> Callable[..., Any]:
    """Check the request's names (moto ignores SourceIdentity), then record the granted session."""

    def assume_role(self: TokenResponse) -> Any:
        role_arn = self._get_param("RoleArn") or ""
        session_name = self._get_param("RoleSessionName") or ""
        source_identity = self._get_param("SourceIdentity")
        check_assume_role(role_arn, self._get_param("ExternalId"), session_name, source_identity)
        result = original(self)
        granted: Any = result.result
        with _sessions_lock:
            _sessions.append(
                {
                    "role_arn": role_arn,
                    "role_session_name": session_name,
                    "source_identity": source_identity,
                    "access_key_id": granted["Credentials"].access_key_id,
                    "time": datetime.now(UTC).isoformat(),
                }
            )
        return result

    assume_role.sandbox_wrapped = True  # type: ignore[attr-defined]  # marker that makes install() idempotent
    return assume_role


def _wrap_assume_role(original: Callable[..., Any]) -> Callable[..., Any]:
    def assume_role(self: STSBackend, **kwargs: Any) -> Any:
        check_assume_role(kwargs.get("role_arn", ""), kwargs.get("external_id"))
        return original(self, **kwargs)

    assume_role.__doc__ = original.__doc__
    assume_role.sandbox_wrapped = True  # type: ignore[attr-defined]  # marker that makes install() idempotent
    return assume_role


# -- temporary credentials the sandbox never issued -------------------------------------

TEMPORARY_ACCESS_KEY_PREFIX = "ASIA"
INVALID_TOKEN_MESSAGE = "The security token included in the request is invalid."  # noqa: S105  # AWS's words


# Where each access key was last found: every request names its account by its access key,
# and walking every account's IAM for it costs time in proportion to the accounts the
# sandbox knows (thousands after a long test session, one per keystore). A remembered
# account is checked before it is trusted, so a reset or a deleted key is never missed.
_account_of_key: dict[str, str] = {}


def _holds(account_backends: Any, access_key: str) -> bool:
    return any(access_key in backend.access_keys for backend in list(account_backends.values()))


def account_of(access_key: str) -> str | None:
    """The account whose IAM holds ``access_key`` (issued by STS or IAM), or None."""
    remembered = _account_of_key.get(access_key)
    if remembered is not None:
        # dict.get: looking must not create the account, as BackendDict's [] would.
        account_backends = dict.get(iam_backends, remembered)
        if account_backends is not None and _holds(account_backends, access_key):
            return remembered
        _account_of_key.pop(access_key, None)
    for account_id, account_backends in list(iam_backends.items()):
        if _holds(account_backends, access_key):
            _account_of_key[access_key] = account_id
            return account_id
    return None


def _account_id_from(access_key: str) -> str:
    """moto's ``get_account_id_from`` (the account a request acts in), answered by :func:`account_of`."""
    return account_of(access_key) or DEFAULT_ACCOUNT_ID


def _issued(access_key: str) -> bool:
    return account_of(access_key) is not None


def check_credentials(response: BaseResponse) -> None:
    """Refuse temporary credentials the sandbox does not know (e.g. from before a reset), as AWS does.

    moto would let them through into its default account, where every key is "not
    found" and new keys land in the wrong account. Long-term keys (``sandbox``,
    ``testing``) keep mapping to the default account, as they always did.
    """
    access_key = response.get_access_key()
    if not access_key.startswith(TEMPORARY_ACCESS_KEY_PREFIX) or _issued(access_key):
        return
    if response.boto3_service_name == "kms":  # JSON protocol: AWS's KMS error
        raise JsonRESTError("UnrecognizedClientException", INVALID_TOKEN_MESSAGE)
    raise InvalidClientTokenIdError()


def _wrap_authenticate(original: Callable[..., Any]) -> Callable[..., Any]:
    def authenticate(self: BaseResponse, *args: Any, **kwargs: Any) -> Any:
        check_credentials(self)
        return original(self, *args, **kwargs)

    authenticate.sandbox_wrapped = True  # type: ignore[attr-defined]  # marker that makes install() idempotent
    return authenticate


def install() -> None:
    """Add the role, trust-policy and credential checks to moto. Idempotent."""
    moto_iam_models.get_account_id_from = _account_id_from  # looked up there by every request
    authenticate = BaseResponse._authenticate_and_authorize_normal_action
    if not getattr(authenticate, "sandbox_wrapped", False):
        BaseResponse._authenticate_and_authorize_normal_action = _wrap_authenticate(authenticate)  # type: ignore[method-assign]
    if not getattr(TokenResponse.assume_role, "sandbox_wrapped", False):
        TokenResponse.assume_role = _wrap_assume_role_response(TokenResponse.assume_role)  # type: ignore[method-assign]
    if getattr(STSBackend.assume_role, "sandbox_wrapped", False):
        return
    STSBackend.assume_role = _wrap_assume_role(STSBackend.assume_role)  # type: ignore[method-assign]
