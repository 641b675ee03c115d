"""JSON in and out of TEXT columns, always through orjson and always valid JSON."""

from __future__ import annotations

from typing import Any

import orjson

from .errors import InvalidInput

_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any) -> str | None:
    """Serialise a JSON-like value; None stays SQL NULL. Raises InvalidInput if impossible."""
    if value is None:
        return None
    try:
        return orjson.dumps(value, option=_OPTS).decode()
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidInput(f"value is not JSON-serialisable: {exc}") from None


def loads(text: str | bytes | None, default: Any = None) -> Any:
    """Parse a stored JSON column; NULL (or empty) gives `default`."""
    if text is None or text == "" or text == b"":
        return default
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # Legacy rows may hold free text where JSON is expected: keep it, never lose it.
        return text if isinstance(text, str) else text.decode("utf-8", "replace")
