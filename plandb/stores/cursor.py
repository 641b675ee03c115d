"""Opaque keyset-pagination cursors: where the last page ended, in which direction, for which
listing. Base64url of a small JSON object; clients treat them as opaque strings.

Keyset pagination on an autoincrement id ("id > last" / "id < last") visits every row exactly
once in either direction even while rows are appended, which OFFSET cannot do.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from ..errors import InvalidInput

MAX_ID = 2**63 - 1


def encode(scope: str, last_id: int, descending: bool) -> str:
    raw = orjson.dumps({"v": 1, "s": scope, "id": last_id, "d": "desc" if descending else "asc"})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: Any, scope: str, descending: bool) -> int:
    """The id the previous page ended at; InvalidInput for anything not made by `encode` for
    the same listing and direction."""
    if not isinstance(cursor, str) or not 0 < len(cursor) <= 200:
        raise InvalidInput("cursor must be a string returned by the previous call")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidInput("cursor is not valid; pass the next_cursor a listing returned") from None
    if not isinstance(data, dict) or data.get("v") != 1 or data.get("s") != scope:
        raise InvalidInput(f"cursor does not belong to this listing ({scope})")
    if data.get("d") != ("desc" if descending else "asc"):
        raise InvalidInput("cursor was made for the other direction; pass the same `reverse`")
    last = data.get("id")
    if isinstance(last, bool) or not isinstance(last, int) or not 0 <= last <= MAX_ID:
        raise InvalidInput("cursor is not valid; pass the next_cursor a listing returned")
    return last


def page(rows: list, limit: int, scope: str, descending: bool, id_of=lambda r: r[0]):
    """Split `limit + 1` fetched rows into (page rows, next cursor or None)."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode(scope, id_of(rows[-1]), descending)
    return rows, None
