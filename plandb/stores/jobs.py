"""Decomposition jobs and their logs (tables in plan files and jobs/system_jobs.sqlite), and
the registry's job index (job_id -> the file holding it).

Functions take a `Tx` (writes) or a connection (reads) and never commit. Values arrive
already checked and redacted by the repository (`plandb.records_jobs`).

Indexed columns are compared with ``= +?``: apsw's SQLite has STAT4, which re-prepares a
statement for each new bound value of a plain ``= ?`` on an indexed column; ``+?`` keeps one
plan and still uses the index (checked in tests with EXPLAIN QUERY PLAN).
"""

from __future__ import annotations

from typing import Any

from .. import jsonutil
from ..record_models import Job, JobIndexEntry, JobLog
from .filters import equal_filters, where_sql

JOB_COLUMNS = (
    "job_id, job_type, mode, target_task_id, status, params, metadata, stats, result, error, "
    "created_at, updated_at, started_at, finished_at"
)
# Columns update_job may set; the repository picks keys from this tuple only.
UPDATABLE = ("status", "error", "started_at", "finished_at", "stats", "result")


def _job(row: tuple, plan_id: int | None) -> Job:
    return Job(
        job_id=row[0], plan_id=plan_id, job_type=row[1] or "plan_decompose", mode=row[2],
        target_task_id=row[3], status=row[4], params=jsonutil.loads(row[5], {}),
        metadata=jsonutil.loads(row[6], {}) or {}, stats=jsonutil.loads(row[7], {}),
        result=jsonutil.loads(row[8]), error=row[9], created_at=row[10], updated_at=row[11],
        started_at=row[12], finished_at=row[13],
    )


def _one(conn, sql: str, params: Any = ()) -> Any:
    for row in conn.execute(sql, params):
        return row
    return None


# --- jobs ------------------------------------------------------------------------------------


def upsert_job(tx, *, job_id: str, job_type: str, mode: str | None, target_task_id: int | None,
               status: str, params: str | None, metadata: str | None, stamp: str) -> None:
    """Insert the job, or update its definition (type, mode, target, status, params, metadata)
    keeping created_at, progress stamps, stats, result and error."""
    tx.execute(
        "INSERT INTO decomposition_jobs (job_id, job_type, mode, target_task_id, status, "
        "params, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (job_id) DO UPDATE SET job_type = excluded.job_type, mode = excluded.mode, "
        "target_task_id = excluded.target_task_id, status = excluded.status, "
        "params = excluded.params, metadata = excluded.metadata, "
        "updated_at = excluded.updated_at",
        (job_id, job_type, mode, target_task_id, status, params, metadata, stamp, stamp))


def update_job(tx, job_id: str, values: dict[str, Any], stamp: str) -> bool:
    """Set the given UPDATABLE columns; False if there is no such job."""
    sets = [f"{k} = ?" for k in values if k in UPDATABLE]  # fixed names, never caller text
    assert len(sets) == len(values)
    tx.execute(f"UPDATE decomposition_jobs SET {', '.join(sets + ['updated_at = ?'])} "
               "WHERE job_id = +?", (*values.values(), stamp, job_id))
    return tx.conn.changes() > 0


def get_job(conn, job_id: str, plan_id: int | None) -> Job | None:
    row = _one(conn, f"SELECT {JOB_COLUMNS} FROM decomposition_jobs WHERE job_id = +?",
               (job_id,))
    return None if row is None else _job(row, plan_id)


def job_exists(conn, job_id: str) -> bool:
    return _one(conn, "SELECT 1 FROM decomposition_jobs WHERE job_id = +?", (job_id,)) is not None


def list_jobs(conn, plan_id: int | None, *, status: str | None, job_type: str | None,
              limit: int, offset: int) -> list[Job]:
    """Newest first (created_at, then job_id)."""
    where, params = equal_filters((("status", status), ("job_type", job_type)))
    sql = (f"SELECT {JOB_COLUMNS} FROM decomposition_jobs" + where_sql(where)
           + " ORDER BY created_at DESC, job_id DESC LIMIT ? OFFSET ?")
    return [_job(r, plan_id) for r in conn.execute(sql, (*params, limit, offset))]


def all_jobs(conn) -> list[tuple[str, str, str]]:
    """(job_id, job_type, created_at) of every job in the file, for reindexing."""
    return conn.execute(
        "SELECT job_id, coalesce(job_type, 'plan_decompose'), created_at "
        "FROM decomposition_jobs").fetchall()


# --- job logs --------------------------------------------------------------------------------


def append_log(tx, *, job_id: str, timestamp: str, level: str, message: str,
               metadata: str | None) -> JobLog:
    tx.execute("INSERT INTO decomposition_job_logs (job_id, timestamp, level, message, metadata) "
               "VALUES (?, ?, ?, ?, ?)", (job_id, timestamp, level, message, metadata))
    return JobLog(tx.conn.last_insert_rowid(), job_id, timestamp, level, message,
                  jsonutil.loads(metadata, {}) or {})


def job_logs(conn, job_id: str, limit: int | None = None) -> list[JobLog]:
    """A job's logs in append order; with `limit`, the last `limit` of them."""
    if limit is None:
        rows = conn.execute(
            "SELECT id, job_id, timestamp, level, message, metadata FROM decomposition_job_logs "
            "WHERE job_id = +? ORDER BY id", (job_id,)).fetchall()
    else:
        rows = conn.execute(
            "SELECT id, job_id, timestamp, level, message, metadata FROM decomposition_job_logs "
            "WHERE job_id = +? ORDER BY id DESC LIMIT ?", (job_id, limit)).fetchall()
        rows.reverse()
    return [JobLog(r[0], r[1], r[2], r[3], r[4], jsonutil.loads(r[5], {}) or {}) for r in rows]


# --- the registry's job index ----------------------------------------------------------------

_INDEX_COLUMNS = "job_id, plan_id, job_type, created_at"


def index_get(conn, job_id: str) -> JobIndexEntry | None:
    row = _one(conn, f"SELECT {_INDEX_COLUMNS} FROM plan_decomposition_job_index "
               "WHERE job_id = +?", (job_id,))
    return None if row is None else JobIndexEntry(*row)


def index_put(conn, job_id: str, plan_id: int | None, job_type: str, created_at: str) -> None:
    conn.execute(
        "INSERT INTO plan_decomposition_job_index (job_id, plan_id, job_type, created_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET plan_id = excluded.plan_id, "
        "job_type = excluded.job_type", (job_id, plan_id, job_type, created_at))


def index_delete(conn, job_id: str) -> None:
    conn.execute("DELETE FROM plan_decomposition_job_index WHERE job_id = +?", (job_id,))


def index_forget_plan(conn, plan_id: int) -> None:
    """Drop the index entries of a deleted plan (its jobs went with its file)."""
    conn.execute("DELETE FROM plan_decomposition_job_index WHERE plan_id = +?", (plan_id,))


def index_all(conn) -> dict[str, JobIndexEntry]:
    return {r[0]: JobIndexEntry(*r) for r in
            conn.execute(f"SELECT {_INDEX_COLUMNS} FROM plan_decomposition_job_index")}




def index_list(conn, *, plan_id: Any = None, system_only: bool = False, job_type: str | None,
               limit: int, offset: int) -> list[JobIndexEntry]:
    """Newest first. `plan_id` filters one plan; `system_only` the jobs bound to no plan."""
    where, params = equal_filters(
        (("plan_id", None if system_only else plan_id), ("job_type", job_type)))
    if system_only:
        where.append("plan_id IS NULL")
    sql = (f"SELECT {_INDEX_COLUMNS} FROM plan_decomposition_job_index" + where_sql(where)
           + " ORDER BY created_at DESC, job_id DESC LIMIT ? OFFSET ?")
    return [JobIndexEntry(*r) for r in conn.execute(sql, (*params, limit, offset))]
