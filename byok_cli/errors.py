"""What went wrong, as an exit code a script can branch on."""

from __future__ import annotations

from typing import Any

# Exit codes by kind of error (documented in `byok --help` and the README).
OK = 0
FAILED = 1  # anything else: a 500, an unexpected answer
USAGE = 2  # click's own code for a bad command line
AUTH = 3  # 401 (no, bad, expired or revoked token) and 403 (role, scope, two-person rule)
NOT_FOUND = 4  # 404
CONFLICT = 5  # 409 (invalid state, nothing prepared, already decided)
AWS = 6  # 502: AWS refused the call or could not be reached
VALIDATION = 7  # 400: the input, with each field's reason
# A download whose check value (KCV / public-key hash) does not match; an audit chain that does not verify.
CHECK_FAILED = 8
UNREACHABLE = 9  # the portal could not be reached
THROTTLED = 10  # 429
PENDING_APPROVAL = 11  # 202: the operation waits for approvals (SPEC §12); nothing happened yet

EXIT_CODES_HELP = """\b
Exit codes:
  0 ok    1 other error    2 bad command line
  3 authentication or permission (401, 403)
  4 not found (404)        5 conflict (409)
  6 AWS error (502)        7 invalid input (400)
  8 check failed (KCV mismatch, audit chain)
  9 portal unreachable
  10 throttled (429)       11 waiting for approval (202)"""

_BY_STATUS = {400: VALIDATION, 401: AUTH, 403: AUTH, 404: NOT_FOUND, 409: CONFLICT, 429: THROTTLED, 502: AWS}


class CliError(Exception):
    """An error to print on stderr and exit with."""

    def __init__(self, message: str, exit_code: int = FAILED, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.body = body


def from_response(status: int, body: Any) -> CliError:
    """The portal's error answer (SPEC §6: ``{"detail", "code", ...}`` or field errors) as a :class:`CliError`."""
    exit_code = _BY_STATUS.get(status, FAILED)
    if isinstance(body, dict) and "detail" in body:
        message = str(body["detail"])
        if body.get("code"):
            message += f" [{body['code']}]"
        if body.get("allowed_states"):
            message += f" (allowed in: {', '.join(body['allowed_states'])})"
    elif isinstance(body, dict):
        message = "; ".join(
            f"{field}: {' '.join(map(str, errors)) if isinstance(errors, list) else errors}"
            for field, errors in body.items()
        )
    else:
        message = str(body)[:500] or f"HTTP {status}"
    return CliError(f"HTTP {status}: {message}", exit_code, body)
