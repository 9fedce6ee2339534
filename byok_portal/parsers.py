"""The API's one JSON parser: every body that is not well-formed JSON text is a 400.

DRF's :class:`~rest_framework.parsers.JSONParser` turns a ``ValueError`` into a 400, but
two kinds of bad body escape it and surface later as 500s:

* nesting deep enough to exhaust the decoder's recursion limit (``RecursionError``);
* a lone UTF-16 surrogate written as an escape (``"\\ud800"``): ``json`` accepts it
  (RFC 8259 §8.2 leaves it to the parser), but the string cannot be encoded as UTF-8,
  so the database, the audit trail and the renderer all fail on it afterwards;
* a NUL character (``"\\u0000"``), which PostgreSQL stores neither in text nor in
  ``jsonb``: a body that reaches a JSON column (a bulk job's filter or parameters) failed
  there. DRF's CharField refuses NUL too, so nothing legitimate is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Far deeper than any request body of this API (the deepest is a key's tags: two levels),
# and far below the interpreter's recursion limit, so the decoder never gets near it.
MAX_DEPTH = 32


def _check(value: Any) -> None:
    """Refuse strings that are not valid Unicode scalar values, and nesting past MAX_DEPTH (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ParseError("JSON parse error - strings must be valid Unicode (no lone surrogates).") from exc
            if "\x00" in item:
                raise ParseError("JSON parse error - strings may not contain NUL characters.")
        elif isinstance(item, Mapping | list):
            if depth > MAX_DEPTH:
                raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.")
            children = [*item.keys(), *item.values()] if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)


class StrictJSONParser(JSONParser):
    """:class:`JSONParser` that answers 400 to every body it cannot hand on safely (see the module docstring)."""

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.") from exc
        _check(data)
        return data
