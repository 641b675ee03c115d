"""Every payload on its way into a database file passes through here: redact, then encode.

Stores never call `jsonutil.dumps` on user data directly; they call `Payloads.json()` /
`Payloads.text()`, so a secret or an oversized field is scrubbed *before* it is written.
"""

from __future__ import annotations

from typing import Any

from . import jsonutil
from .errors import InvalidInput
from .redaction import DEFAULT_REDACTOR, Redactor


class Payloads:
    """Redaction + encoding for one repository (its `Redactor` decides limits and rules)."""

    __slots__ = ("redactor",)

    def __init__(self, redactor: Redactor | None = None):
        self.redactor = redactor or DEFAULT_REDACTOR

    def json(self, value: Any) -> str | None:
        """Redacted JSON text for a JSON column (None stays NULL)."""
        if value is None:
            return None
        return jsonutil.dumps(self.redactor.redact(value))

    def json_object(self, value: Any, what: str = "metadata") -> str | None:
        """Like `json`, but the value must be a mapping (or None)."""
        return self.object(value, what)[1]

    def object(self, value: Any, what: str = "metadata") -> tuple[Any, str | None]:
        """A mapping (or None) redacted, and its JSON text: the first is what reading the
        column back gives (None -> ``{}``), without parsing the second. Redaction returns
        JSON types only (str keys, lists, 64-bit ints, finite floats), which orjson writes and
        reads back unchanged."""
        if value is None:
            return {}, None
        if not isinstance(value, dict):
            raise InvalidInput(f"{what} must be a dict (JSON object), got {type(value).__name__}")
        redacted = self.redactor.redact(value)
        return redacted, jsonutil.dumps(redacted)

    def text(self, value: Any, what: str = "text") -> str | None:
        """Redacted (and size-capped) text for a TEXT column (None stays NULL)."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
        return self.redactor.redact_text(value)  # what `redact` gives for text, one call less


def clean_name(value: Any, what: str = "name", max_len: int = 10_000) -> str:
    """A required, non-blank string of reasonable size (names, titles, statuses)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInput(f"{what} must not be blank")
    if len(value) > max_len:
        raise InvalidInput(f"{what} is {len(value)} characters; the limit is {max_len}")
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain NUL characters")
    return check_unicode(value, what)


def check_unicode(value: str, what: str = "text") -> str:
    """Refuse text SQLite cannot store: a lone surrogate (e.g. from a surrogateescape'd path)
    does not encode to UTF-8, and binding it would fail with a UnicodeEncodeError."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(f"{what} is not valid Unicode text (a lone surrogate at index "
                               f"{exc.start}); decode it properly first") from None
    return value
