"""The layers of STYLE.md hold: no import cycles, no app imports another app's views, and the only
imports that run upward are the ones named here, each with its reason (``scripts/layers.py`` counts them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# (importing module -> imported module): why it is still there. None left: the grant command lives in
# keystores, accounts reads roles through ``user.memberships``, the login gate is in the kernel
# (``byok_portal/web.py``) and the unexpected-error recorder is handed down from ``KeysConfig.ready``.
KNOWN_UPWARD: set[str] = set()


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
