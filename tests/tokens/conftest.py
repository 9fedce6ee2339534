"""The ``byok`` command as a user installs it (``pip install`` of the repository), run against a live portal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def byok_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --no-deps`` of a copy of the repository's packaging into a fresh target: its ``bin/byok``.

    The copy keeps the checkout free of build directories. The dependencies (click, httpx,
    cryptography) come from the test virtualenv, which has requirements.txt's pins.
    """
    source = tmp_path_factory.mktemp("byok-source")
    shutil.copy(REPO / "pyproject.toml", source / "pyproject.toml")
    shutil.copytree(REPO / "byok_cli", source / "byok_cli", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path_factory.mktemp("byok-install")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return target


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def byok(byok_install: Path, tmp_path: Path) -> Any:
    """``byok(*args, token=..., url=...)`` runs the installed command in a subprocess with a clean HOME."""
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, url: str, token: str, env: dict[str, str] | None = None, timeout: int = 120) -> Run:
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "PYTHONPATH": os.pathsep.join([str(byok_install), *sys.path[1:]]),
            "BYOK_URL": url,
            "BYOK_TOKEN": token,
            **(env or {}),
        }
        done = subprocess.run(
            [sys.executable, str(byok_install / "bin" / "byok"), *args],
            env=environment,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    return run
