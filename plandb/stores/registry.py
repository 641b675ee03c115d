"""The plan index in main/plan_registry.db.

Rows carry a lifecycle ``state`` for the crash-safe multi-file steps (see `repository`):
``creating`` -> ``ready`` -> ``deleting`` -> gone. Reads for callers only ever see ``ready``.
"""

from __future__ import annotations

from typing import Any

import apsw

from .. import jsonutil
from ..errors import InvalidInput, PlanNotFound
from ..models import PlanSummary
from ..payload import check_unicode

_COLS = "id, title, description, metadata, task_count, updated_at, created_at, owner, state"


def _summary(row: tuple) -> PlanSummary:
    return PlanSummary(row[0], row[1], row[2], jsonutil.loads(row[3], {}) or {}, row[4],
                       row[5], row[6], row[7], row[8])


def _one(conn: apsw.Connection, sql: str, params: Any = ()) -> Any:
    for row in conn.execute(sql, params):
        return row
    return None


def next_plan_id(conn: apsw.Connection, taken_on_disk) -> int:
    """The next id: above every id the registry ever gave out, and not used by any file."""
    seq = _one(conn, "SELECT seq FROM sqlite_sequence WHERE name = 'plans'")
    top = _one(conn, "SELECT max(id) FROM plans")[0] or 0
    candidate = max(seq[0] if seq else 0, top) + 1
    while taken_on_disk(candidate):
        candidate += 1
    return candidate


def insert_plan(conn, plan_id: int, *, title: str, owner: str | None, description: str | None,
                metadata_json: str | None, plan_file: str, state: str, stamp: str,
                task_count: int = 0) -> None:
    conn.execute(
        "INSERT INTO plans (id, title, owner, description, metadata, plan_file, state, "
        "task_count, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (plan_id, title, owner, description, metadata_json, plan_file, state, task_count,
         stamp, stamp))


def set_state(conn, plan_id: int, state: str) -> None:
    conn.execute("UPDATE plans SET state = ? WHERE id = ?", (state, plan_id))


def get_row(conn, plan_id: int) -> tuple | None:
    return _one(conn, f"SELECT {_COLS}, plan_file FROM plans WHERE id = ?", (plan_id,))


def get_summary(conn, plan_id: int, *, any_state: bool = False) -> PlanSummary:
    row = get_row(conn, plan_id)
    if row is None or (row[8] != "ready" and not any_state):
        raise PlanNotFound(plan_id, "" if row is None else f"it is {row[8]}")
    return _summary(row)


def list_plans(conn, owner: str | None, limit: int | None, offset: int) -> list[PlanSummary]:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidInput(f"limit must be a non-negative integer or None, got {limit!r:.80}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput(f"offset must be a non-negative integer, got {offset!r:.80}")
    if owner is not None:
        if not isinstance(owner, str):
            raise InvalidInput(f"owner must be a string or None, got {type(owner).__name__}")
        check_unicode(owner, "owner")
    # Beyond SQLite's 64-bit integers a limit means "all" and an offset "past the end".
    limit = None if limit is not None and limit >= 2**63 else limit
    offset = min(offset, 2**63 - 1)
    lim = -1 if limit is None else limit
    if owner is None:
        sql = (f"SELECT {_COLS} FROM plans WHERE state = 'ready' "
               "ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?")
        params: tuple = (lim, offset)
    else:
        sql = (f"SELECT {_COLS} FROM plans WHERE owner = +? AND state = 'ready' "
               "ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?")
        params = (owner, lim, offset)
    return [_summary(r) for r in conn.execute(sql, params)]


def all_rows(conn) -> list[tuple[int, str, str]]:
    """(id, state, plan_file) of every row, any state: for reconcile and inspect."""
    return conn.execute("SELECT id, state, plan_file FROM plans ORDER BY id").fetchall()


def full_rows(conn) -> list[tuple]:
    """Every row, any state, with the columns of `get_row` (for reconcile)."""
    return conn.execute(f"SELECT {_COLS}, plan_file FROM plans ORDER BY id").fetchall()


def update_plan(conn, plan_id: int, values: dict[str, Any], stamp: str) -> None:
    sets = [f"{k} = ?" for k in values]  # keys chosen by the repository, never the caller
    conn.execute(f"UPDATE plans SET {', '.join(sets + ['updated_at = ?'])} WHERE id = ?",
                 (*values.values(), stamp, plan_id))


def sync_counts(conn, rows: list[tuple[int, int, str]]) -> None:
    """Apply (plan_id, task_count, updated_at) mirrored from plan files."""
    conn.executemany(
        "UPDATE plans SET task_count = ?, updated_at = max(updated_at, ?) WHERE id = ?",
        [(count, stamp, pid) for pid, count, stamp in rows])


def delete_row(conn, plan_id: int) -> None:
    conn.execute("DELETE FROM plans WHERE id = ?", (plan_id,))
