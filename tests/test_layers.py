"""The layers of STYLE.md hold: no import cycles, no app imports another app's views, and the only
imports that run upward are the ones named here, each with its reason (``scripts/layers.py`` counts them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# (importing module -> imported module): why it is still there.
KNOWN_UPWARD = {
    # audit's pages are pages: they sit behind accounts' login gate (session + verified TOTP).
    "audit.views -> accounts.decorators",
    # accounts/ belongs to the login/lockout/tokens work; these read or grant keystore roles and
    # belong in keystores (the grant command) or should read memberships through ``user.memberships``.
    "accounts.management.commands.byok_grant -> keystores.models",
    "accounts.management.commands.byok_grant -> keystores.services",
    "accounts.management.commands.byok_users -> keystores.models",
    "accounts.views -> keystores.models",
    # Unexpected errors are audited from the kernel's API exception handler and a page middleware:
    # the recorder names the acting person (accounts), writes the trail (audit) and attaches the key
    # (keys). It belongs above the apps, with the handler, once the API's error handling moves there.
    "byok_portal.unexpected -> accounts.identity",
    "byok_portal.unexpected -> audit.services",
    "byok_portal.unexpected -> keys.models",
}


def _findings() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "layers.py"), "--json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return dict(json.loads(done.stdout))


def test_no_import_runs_upward_except_the_known_ones() -> None:
    assert set(_findings()["upward"]) == KNOWN_UPWARD


def test_no_cycles_and_no_app_imports_another_apps_views() -> None:
    findings = _findings()
    assert findings["cycles"] == []
    assert findings["views_imports"] == []
