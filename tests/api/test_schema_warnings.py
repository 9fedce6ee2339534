"""The OpenAPI schema builds without a warning: ``check --deploy --fail-level WARNING`` (CI, the production
smoke test) refuses to start on drf-spectacular's warnings, such as two choice sets competing for one name."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command


def test_the_schema_builds_without_warnings(tmp_path: Path) -> None:
    try:
        call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yaml"))
    except SystemExit as exc:  # drf-spectacular exits non-zero when it warned
        pytest.fail(f"drf-spectacular warned while building the schema (exit {exc.code})")
    assert "KeyStateEnum" in (tmp_path / "schema.yaml").read_text()
