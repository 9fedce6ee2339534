"""The settings of a ``make run`` checkout, kept for the operator commands.

``scripts/run.sh`` starts the portal with development settings it exports
(``DJANGO_DEBUG=true``, the sandbox AWS, ...). An operator then runs
``.venv/bin/python manage.py byok_users ...`` in another shell, without those
variables: a plain production start would stop at "Missing production settings".
So run.sh records them in ``var/make-run.env`` (:func:`write`), and ``manage.py``
— and only manage.py, never the web or Celery processes — applies them
(:func:`apply_for_manage_py`) under three conditions that keep a production
deployment from ever falling back to them silently:

1. the file exists, which only ``make run`` does;
2. the environment names no setting that only a deployment sets (``DJANGO_DEBUG``
   either way, the secret key, the KEK, the audit key, a settings module): any one
   of them and the file is ignored;
3. manage.py says so on stderr every time.

Only the names in :data:`NAMES` are written or read; the file holds no secret.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

FILE_NAME = "make-run.env"
NAMES = ("DJANGO_DEBUG", "BYOK_SANDBOX", "BYOK_SANDBOX_URL", "BYOK_AWS_PRINCIPAL_ARN", "DATABASE_URL")
# (A settings module of one's own also counts; manage.py checks it before importing this
# package, whose Celery app sets the default one.)
DEPLOYMENT_NAMES = (
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DJANGO_SECRET_KEY_FILE",
    "BYOK_KEK",
    "BYOK_KEK_FILE",
    "BYOK_AUDIT_KEY",
    "BYOK_AUDIT_KEY_FILE",
    "BYOK_TOKEN_KEY",
    "BYOK_TOKEN_KEY_FILE",
)
_HEADER = "# Written by `make run` (scripts/run.sh) for manage.py in this checkout only; see README.\n"


def path(environ: MutableMapping[str, str] = os.environ) -> Path:
    base = Path(__file__).resolve().parent.parent
    return Path(environ.get("BYOK_VAR_DIR") or base / "var") / FILE_NAME


def write(environ: MutableMapping[str, str] = os.environ) -> Path:
    """Record the listed variables as ``make run`` has them."""
    target = path(environ)
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{name}={environ[name]}\n" for name in NAMES if environ.get(name)]
    target.write_text(_HEADER + "".join(lines), encoding="utf-8")
    return target


def apply_for_manage_py(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Apply the recorded settings if this is a ``make run`` checkout (see the module docstring)."""
    if any(name in environ for name in DEPLOYMENT_NAMES):
        return None
    source = path(environ)
    if not source.is_file():
        return None
    for line in source.read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if sep and name in NAMES:
            environ.setdefault(name, value)
    return source


if __name__ == "__main__":
    if sys.argv[1:] != ["write"]:
        sys.exit("usage: python -m byok_portal.devenv write")
    print(f"settings for manage.py recorded in {write()}")
