"""Structured (JSON) log lines.

Log records are data, not prose: one JSON object per line with the logger, level,
message and any ``extra=`` fields. Callers pass ids and states, never key material
or tokens; the formatter additionally drops any extra field whose name suggests a
secret, as a second line of defence.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_SECRET_WORDS = ("material", "plaintext", "token", "password", "secret", "kek")


class JSONFormatter(logging.Formatter):
    """Render a log record as a single JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name in _STANDARD_ATTRS or name.startswith("_"):
                continue
            if any(word in name.lower() for word in _SECRET_WORDS):
                payload[name] = "[redacted]"
                continue
            payload[name] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            payload["exception"] = record.exc_info[0].__name__
        return json.dumps(payload, sort_keys=True)
