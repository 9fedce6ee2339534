"""``--output json`` for scripts (the API's own JSON), ``--output table`` for people."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import click


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    return str(value)


def emit(data: Any, fmt: str, columns: Sequence[str] | None = None) -> None:
    """Print one object (a two-column table of its fields) or a list (one row each, ``columns`` chosen)."""
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    if isinstance(data, list):
        table(data, columns or (sorted(data[0]) if data else []))
    elif isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        for name, value in data.items():
            click.echo(f"{name.ljust(width)}  {_cell(value)}")
    else:
        click.echo(_cell(data))


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    header = [column.upper() for column in columns]
    widths = [max([len(header[i])] + [len(row[i]) for row in cells]) for i in range(len(columns))]
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if not cells:
        click.echo("(none)")
