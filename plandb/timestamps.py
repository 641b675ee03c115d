"""One sortable UTC text format for every timestamp plandb stores.

`2026-11-22T10:01:24.123456Z`: fixed width, so text comparison is time comparison and
"older than" queries are exact. Legacy SQLite `CURRENT_TIMESTAMP` text is normalised on import.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from .errors import InvalidInput

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_LEGACY = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d{1,6})?(Z|[+-]00:?00)?$")


# (epoch second, its "YYYY-MM-DDTHH:MM:SS" text): every write stamps rows, and
# datetime.strftime costs as much as a small SQLite commit (it re-imports `time` and builds a
# struct per call), so the text of the current second is formatted once. One tuple, replaced
# whole, so threads never see a second paired with another second's text.
_second: tuple[int, str] = (-1, "")


def now() -> str:
    """The current UTC time in plandb's stored format (microseconds, truncated like
    ``datetime.now``)."""
    global _second
    sec, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second
    if cached[0] != sec:
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{micros:06d}Z"


def format_dt(value: datetime) -> str:
    """A datetime (naive = UTC) in the stored format."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime(_FORMAT)


def ago(days: float) -> str:
    """The stored-format time `days` before now (for "older than" comparisons)."""
    return format_dt(datetime.now(UTC) - timedelta(days=days))


def normalize(value: str | datetime | float | int | None) -> str | None:
    """Accept a datetime, epoch seconds, stored text or SQLite CURRENT_TIMESTAMP text.

    Returns the stored format, or None for None. Raises InvalidInput for anything else.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return format_dt(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return format_dt(datetime.fromtimestamp(float(value), UTC))
        except (ValueError, OverflowError, OSError):  # NaN, or beyond the years 1..9999
            raise InvalidInput(f"epoch seconds {value!r:.40} are out of range") from None
    if isinstance(value, str):
        m = _LEGACY.match(value.strip())
        if m:
            frac = (m.group(3) or ".0")[1:].ljust(6, "0")
            return f"{m.group(1)}T{m.group(2)}.{frac}Z"
        try:
            return format_dt(datetime.fromisoformat(value))
        except ValueError:
            pass
    raise InvalidInput(f"not a timestamp: {value!r} (use ISO 8601 UTC, e.g. {now()})")
