"""Argument checks shared by the record mixins (jobs, action logs, chat, memory, caches).

Everything is checked before anything is written, so a refused call changes nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

from .errors import InvalidId, InvalidInput
from .payload import Payloads, clean_name
from .timestamps import normalize

MAX_ID = 200
MAX_LABEL = 200
MAX_LIMIT = 1000


def record_id(value: Any, what: str, payloads: Payloads) -> str:
    """A caller-chosen string id (job, session, run, memory): non-blank, <= 200 chars, no NUL,
    and not shaped like a secret (ids are stored as given, so they cannot be redacted)."""
    if not isinstance(value, str):
        raise InvalidId(what, value, "must be a string")
    if not value.strip():
        raise InvalidId(what, value, "must not be blank")
    if len(value) > MAX_ID:
        raise InvalidId(what, value, f"must be at most {MAX_ID} characters")
    if "\x00" in value:
        raise InvalidId(what, value, "must not contain NUL characters")
    if payloads.redactor.redact_text(value) != value:
        raise InvalidId(what, "[REDACTED]", "looks like a secret; ids are stored unredacted")
    return value


def new_id() -> str:
    """A fresh random id (uuid4 hex) for records the caller did not name."""
    return uuid.uuid4().hex


def label(value: Any, what: str, payloads: Payloads, max_len: int = MAX_LABEL) -> str:
    """A short required label (status, level, type, name), redacted like any text."""
    return payloads.text(clean_name(value, what, max_len), what) or ""


def opt_label(value: Any, what: str, payloads: Payloads, max_len: int = MAX_LABEL) -> str | None:
    return None if value is None else label(value, what, payloads, max_len)


def opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer or None, got {type(value).__name__}")
    if not -(2**63) <= value < 2**63:
        raise InvalidInput(f"{what} is out of the 64-bit range")
    return value


def opt_bool(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidInput(f"{what} must be True, False or None, got {type(value).__name__}")


def opt_stamp(value: Any) -> str | None:
    """None, or any timestamp `timestamps.normalize` accepts, in the stored format."""
    return normalize(value)


def limit_arg(value: Any, what: str = "limit", maximum: int = MAX_LIMIT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(f"{what} must be an integer from 1 to {maximum}, got {value!r}")
    return value


def offset_arg(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"offset must be a non-negative integer, got {value!r}")
    return value


def str_list(value: Any, what: str) -> list[str] | None:
    """None, or a list/tuple of strings (keywords, tags)."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{what} must be a list of strings")
    return list(value)
