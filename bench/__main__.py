"""Run the benchmark modules under ``bench/`` and write their figures to BENCHMARKS.md as one table.

``python -m bench`` runs them all; ``python -m bench audit_bench ...`` only those named,
keeping the other modules' rows from the previous BENCHMARKS.md.
"""

from __future__ import annotations

import importlib
import pkgutil
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench

COLUMNS = ("figure", "value", "unit", "baseline", "ratio", "note")
OUTPUT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def _modules() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(bench.__path__) if not info.name.startswith("_"))


def _previous() -> tuple[list[str], list[str]]:
    """The last file's figure rows (header rows left out) and its hand-written notes.

    Notes are everything from the first ``## `` heading on: comparisons measured by hand
    (before/after a change) that a run of the modules cannot reproduce, so a run keeps them.
    """
    if not OUTPUT.exists():
        return [], []
    lines = OUTPUT.read_text(encoding="utf-8").splitlines()
    notes_at = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    rows = [line for line in lines[:notes_at] if line.startswith("| ") and not line.startswith("| Module |")]
    return rows, lines[notes_at:]


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        value = f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def main(selected: list[str]) -> int:
    rows: list[tuple[str, dict[str, Any]]] = []
    failed: list[str] = []
    for name in _modules():
        if selected and name not in selected:
            continue
        module = importlib.import_module(f"bench.{name}")
        run: Callable[[], list[dict[str, Any]]] | None = getattr(module, "run", None)
        if run is None:
            continue
        print(f"bench: {name} ...", flush=True)
        started = time.monotonic()
        try:
            results = run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        print(f"bench: {name} done in {time.monotonic() - started:.0f} s", flush=True)
        rows.extend((name, result) for result in results)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m bench`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"Python {platform.python_version()}, {platform.machine()}, {platform.system()}.",
        "",
        "| Module | " + " | ".join(column.title() for column in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    ran = {name for name, _ in rows} | set(failed)
    for name, result in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(result.get(column)) for column in COLUMNS) + " |")
    previous_rows, notes = _previous()
    # A partial run (`python -m bench audit_bench`) keeps the other modules' last figures.
    lines.extend(line for line in previous_rows if line.split("|")[1].strip() not in ran)
    if failed:
        lines += ["", "Failed (see the bench output): " + ", ".join(failed)]
    if notes:
        lines += ["", *notes]
    OUTPUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"bench: wrote {OUTPUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
