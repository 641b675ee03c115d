"""WHERE clauses of optional equality filters, shared by the record stores.

Column names are constants of the calling store, never caller input; values are always bound.
``= +?`` keeps apsw's STAT4 build from re-preparing the statement for every bound value while
the index is still used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def equal_filters(pairs: Iterable[tuple[str, Any]]) -> tuple[list[str], list[Any]]:
    """(conditions, params): ``column = +?`` for each pair whose value is not None."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in pairs:
        if value is not None:
            where.append(f"{column} = +?")
            params.append(value)
    return where, params


def where_sql(where: list[str]) -> str:
    """`` WHERE a AND b`` (or nothing) for a list of conditions."""
    return " WHERE " + " AND ".join(where) if where else ""
