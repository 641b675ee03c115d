"""Action logs (table ``plan_action_logs`` in plan files and jobs/system_jobs.sqlite).

- `append`: the per-job ``sequence`` is computed inside the caller's BEGIN IMMEDIATE
  transaction, so no other writer (thread or process) can interleave: it is one more than the
  larger of the job's high-water mark (``action_log_sequences``, which outlives cleanup) and
  its largest stored sequence (which covers rows adopted from older files). UNIQUE (job_id,
  sequence) is the backstop.
- `page`: keyset pagination on the autoincrement id (see `plandb.stores.cursor`): every entry
  exactly once in either direction, even while entries are appended.

Functions take a `Tx` or a connection and never commit; values arrive checked and redacted.
"""

from __future__ import annotations

from typing import Any

from .. import jsonutil
from ..record_models import ActionCounts, ActionLogEntry, ActionStats
from . import cursor as cursors
from .filters import equal_filters, where_sql

SCOPE = "action_logs"
COLUMNS = (
    "id, job_id, job_type, sequence, session_id, user_message, action_kind, action_name, "
    "status, success, message, parameters, details, created_at"
)


def _entry(row: tuple, plan_id: int | None) -> ActionLogEntry:
    return ActionLogEntry(
        id=row[0], plan_id=plan_id, job_id=row[1], job_type=row[2], sequence=row[3],
        session_id=row[4], user_message=row[5], action_kind=row[6], action_name=row[7],
        status=row[8], success=None if row[9] is None else bool(row[9]), message=row[10],
        parameters=jsonutil.loads(row[11], {}), details=jsonutil.loads(row[12], {}),
        created_at=row[13],
    )


def next_sequence(tx, job_id: str) -> int:
    """The job's next sequence number; call inside the write transaction that inserts it."""
    mark = tx.one("SELECT last_sequence FROM action_log_sequences WHERE job_id = +?", (job_id,))
    top = tx.one("SELECT max(sequence) FROM plan_action_logs WHERE job_id = +?", (job_id,))
    seq = max(mark[0] if mark else 0, top[0] or 0) + 1
    tx.execute("INSERT INTO action_log_sequences (job_id, last_sequence) VALUES (?, ?) "
               "ON CONFLICT (job_id) DO UPDATE SET last_sequence = excluded.last_sequence",
               (job_id, seq))
    return seq


def append(tx, plan_id: int | None, values: dict[str, Any]) -> ActionLogEntry:
    """Insert one entry (values: every column but id and sequence) with the next sequence."""
    seq = next_sequence(tx, values["job_id"])
    tx.execute(
        "INSERT INTO plan_action_logs (job_id, job_type, sequence, session_id, user_message, "
        "action_kind, action_name, status, success, message, parameters, details, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (values["job_id"], values["job_type"], seq, values["session_id"],
         values["user_message"], values["action_kind"], values["action_name"],
         values["status"], values["success"], values["message"], values["parameters"],
         values["details"], values["created_at"]))
    row = (tx.conn.last_insert_rowid(), values["job_id"], values["job_type"], seq,
           values["session_id"], values["user_message"], values["action_kind"],
           values["action_name"], values["status"], values["success"], values["message"],
           values["parameters"], values["details"], values["created_at"])
    return _entry(row, plan_id)


def _filters(job_id, status, action_name, since, until) -> tuple[list[str], list[Any]]:
    where, params = equal_filters(
        (("job_id", job_id), ("status", status), ("action_name", action_name)))
    if since is not None:
        where.append("created_at >= ?")
        params.append(since)
    if until is not None:
        where.append("created_at < ?")
        params.append(until)
    return where, params


def page(conn, plan_id: int | None, *, after: int | None, descending: bool, limit: int,
         job_id=None, status=None, action_name=None, since=None, until=None
         ) -> tuple[list[ActionLogEntry], str | None]:
    """One page after id `after` (None: from the start of the chosen direction)."""
    where, params = _filters(job_id, status, action_name, since, until)
    if after is not None:
        where.insert(0, "id < ?" if descending else "id > ?")
        params.insert(0, after)
    sql = (f"SELECT {COLUMNS} FROM plan_action_logs"
           + where_sql(where)
           + (" ORDER BY id DESC" if descending else " ORDER BY id") + " LIMIT ?")
    rows = conn.execute(sql, (*params, limit + 1)).fetchall()
    rows, nxt = cursors.page(rows, limit, SCOPE, descending)
    return [_entry(r, plan_id) for r in rows], nxt


def cleanup(tx, *, before: str | None, keep_newest: int | None) -> int:
    """Delete entries created before `before`, then all but the newest `keep_newest`."""
    removed = 0
    if before is not None:
        tx.execute("DELETE FROM plan_action_logs WHERE created_at < ?", (before,))
        removed += tx.conn.changes()
    if keep_newest is not None:
        edge = tx.one("SELECT id FROM plan_action_logs ORDER BY id DESC LIMIT 1 OFFSET ?",
                      (keep_newest,))
        if edge is not None:
            tx.execute("DELETE FROM plan_action_logs WHERE id <= ?", (edge[0],))
            removed += tx.conn.changes()
    return removed


def stats(conn, plan_id: int | None, job_id: str | None) -> ActionStats:
    where, params = _filters(job_id, None, None, None, None)
    cond = where_sql(where)
    out = ActionStats(plan_id=plan_id, job_id=job_id)
    for name, status, success, count, first, last in conn.execute(
            "SELECT coalesce(action_name, ''), coalesce(status, ''), success, count(*), "
            f"min(created_at), max(created_at) FROM plan_action_logs{cond} "
            "GROUP BY 1, 2, 3", params):
        out.total += count
        counts = out.by_action.setdefault(name, ActionCounts())
        counts.total += count
        if success is None:
            out.unknown += count
        elif success:
            out.successes += count
            counts.successes += count
        else:
            out.failures += count
            counts.failures += count
        out.by_status[status] = out.by_status.get(status, 0) + count
        out.first_at = first if out.first_at is None else min(out.first_at, first)
        out.last_at = last if out.last_at is None else max(out.last_at, last)
    decided = out.successes + out.failures
    out.success_rate = out.successes / decided if decided else None
    return out
