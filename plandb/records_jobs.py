"""Decomposition jobs, job logs and action logs, routed by plan id.

``plan_id=None`` -> jobs/system_jobs.sqlite; a plan id -> plans/plan_<id>.sqlite
(PlanNotFound if it has no file). The registry's job index (``plan_decomposition_job_index``)
maps job_id -> (plan_id, job_type), so a job can be found by its id alone (`find_job`,
`load_decomposition_job(None, job_id)`).

Two files, no atomic commit across them, so the order is fixed: the job is committed to its
own file first, the index entry after. A crash (or a busy registry) between the two leaves a
job the index does not know; nothing acknowledged is lost, because:

- the job itself is durable in its file, and `load_decomposition_job(plan_id, ...)` with the
  right plan id always finds it;
- a failed index write is kept in memory and retried on the next job write and on
  `close()`;
- `reindex_jobs()` (what `plandb doctor` runs) compares the index with every job file and
  repairs missing, wrong and stale entries; `find_job(job_id, scan=True)` repairs one job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw

from .config import check_plan_id
from .crashpoints import crash_point
from .errors import InvalidInput, PlanDBError, PlanNotFound, RecordConflict, RecordNotFound
from .record_models import ActionLogEntry, ActionStats, Job, JobIndexEntry, JobIndexReport, JobLog
from .records_common import (
    label,
    limit_arg,
    offset_arg,
    opt_bool,
    opt_int,
    opt_label,
    opt_stamp,
    record_id,
)
from .stores import actions, jobs
from .stores import cursor as cursors
from .timestamps import ago, now
from .transaction import read, write

log = logging.getLogger("plandb.jobs")

def _where(plan_id: int | None) -> str:
    return "jobs/system_jobs.sqlite" if plan_id is None else f"plan {plan_id}"


class JobsMixin:
    """Jobs, job logs, the job index and action logs (mixed into PlanRepository)."""

    def _init_jobs(self) -> None:
        self._index_pending: dict[str, tuple[int | None, str, str]] = {}
        self._index_lock = threading.Lock()

    # --- routing ---------------------------------------------------------------------------

    @contextmanager
    def _jobs_file(self, plan_id: int | None) -> Iterator[tuple[apsw.Connection, Path]]:
        """(connection, path) of the file holding `plan_id`'s jobs and action logs."""
        if plan_id is None:
            path = self.config.system_jobs_db_path
            with self._open(path, "jobs") as conn:
                yield conn, path
        else:
            check_plan_id(plan_id)
            with self._plan(plan_id) as store:
                yield store.conn, self.config.plan_db_path(plan_id)

    @contextmanager
    def _jobs_write(self, plan_id: int | None):
        with self._jobs_file(plan_id) as (conn, path), write(
                conn, path, retries=self.config.write_retries) as tx:
            yield tx

    # --- jobs ------------------------------------------------------------------------------

    def record_decomposition_job(
        self, plan_id: int | None, *, job_id: str, job_type: str = "plan_decompose",
        mode: str | None = None, target_task_id: int | None = None, status: str = "queued",
        params: Any = None, metadata: dict[str, Any] | None = None,
    ) -> Job:
        """Create or update (upsert) a decomposition job in `plan_id`'s file (None: the
        system jobs file) and note it in the registry's job index.

        An update replaces type, mode, target, status, params and metadata and keeps
        created_at, progress stamps, stats, result and error. RecordConflict if the job id
        already belongs to another plan.
        """
        p = self.payloads
        job_id = record_id(job_id, "job id", p)
        job_type = label(job_type, "job_type", p)
        mode = opt_label(mode, "mode", p)
        target_task_id = opt_int(target_task_id, "target_task_id")
        status = label(status, "status", p)
        params_json = p.json(params)
        meta_json = p.json_object(metadata)
        if plan_id is not None:
            check_plan_id(plan_id)
        self._check_job_owner(job_id, plan_id)
        with self._jobs_write(plan_id) as tx:
            jobs.upsert_job(tx, job_id=job_id, job_type=job_type, mode=mode,
                            target_task_id=target_task_id, status=status, params=params_json,
                            metadata=meta_json, stamp=now())
            job = jobs.get_job(tx.conn, job_id, plan_id)
        crash_point("job:file")
        self._index_job(job_id, plan_id, job.job_type, job.created_at)
        return job

    def _check_job_owner(self, job_id: str, plan_id: int | None) -> None:
        """RecordConflict if the index says another file holds this job (and it does)."""
        with self._registry() as conn:
            entry = jobs.index_get(conn, job_id)
        if entry is None or entry.plan_id == plan_id:
            return
        try:
            with self._jobs_file(entry.plan_id) as (conn, _path):
                held = jobs.job_exists(conn, job_id)
        except PlanNotFound:
            held = False
        if held:
            raise RecordConflict("job", job_id, f"already belongs to {_where(entry.plan_id)}; "
                                 "use that plan id or another job id")

    def _index_job(self, job_id: str, plan_id: int | None, job_type: str, created: str) -> None:
        """Write the index entry (and any earlier ones that failed); never raises: the job is
        already committed, and a missing entry is repaired later (see module doc)."""
        with self._index_lock:
            self._index_pending[job_id] = (plan_id, job_type, created)
        self._flush_job_index()

    def _flush_job_index(self) -> None:
        with self._index_lock:
            pending = dict(self._index_pending)
        if not pending:
            return
        try:
            with self._registry() as conn, write(conn, self.config.main_db_path,
                                                 retries=self.config.write_retries):
                for job_id, (plan_id, job_type, created) in pending.items():
                    jobs.index_put(conn, job_id, plan_id, job_type, created)
        except PlanDBError as exc:
            log.warning("job index not updated yet (%d pending, retried later): %s",
                        len(pending), exc)
            return
        with self._index_lock:
            for job_id, value in pending.items():
                if self._index_pending.get(job_id) == value:
                    del self._index_pending[job_id]

    def update_decomposition_job_status(
        self, plan_id: int | None, *, job_id: str, status: str | None = None,
        error: str | None = None, started_at: Any = None, finished_at: Any = None,
        stats: Any = None, result: Any = None,
    ) -> Job:
        """Set the given fields (None = unchanged) and return the job. Timestamps accept
        datetimes, epoch seconds or ISO text. RecordNotFound if the file has no such job."""
        p = self.payloads
        job_id = record_id(job_id, "job id", p)
        values: dict[str, Any] = {}
        if status is not None:
            values["status"] = label(status, "status", p)
        if error is not None:
            values["error"] = p.text(error, "error")
        if started_at is not None:
            values["started_at"] = opt_stamp(started_at)
        if finished_at is not None:
            values["finished_at"] = opt_stamp(finished_at)
        if stats is not None:
            values["stats"] = p.json(stats)
        if result is not None:
            values["result"] = p.json(result)
        with self._jobs_write(plan_id) as tx:
            if values:
                found = jobs.update_job(tx, job_id, values, now())
            else:
                found = jobs.job_exists(tx.conn, job_id)
            if not found:
                raise self._job_not_found(job_id, plan_id)
            return jobs.get_job(tx.conn, job_id, plan_id)

    def _job_not_found(self, job_id: str, plan_id: int | None) -> RecordNotFound:
        """RecordNotFound naming where the index says the job is, when it says so."""
        hint = ""
        try:
            with self._registry() as conn:
                entry = jobs.index_get(conn, job_id)
            if entry is not None and entry.plan_id != plan_id:
                hint = f" (the job index places it in {_where(entry.plan_id)})"
        except PlanDBError:
            pass
        return RecordNotFound("job", job_id, _where(plan_id) + hint)

    def append_decomposition_job_log(
        self, plan_id: int | None, *, job_id: str, message: str, level: str = "info",
        timestamp: Any = None, metadata: dict[str, Any] | None = None,
    ) -> JobLog:
        """Append a log line to a job (RecordNotFound if the job is not in that file)."""
        p = self.payloads
        job_id = record_id(job_id, "job id", p)
        level = label(level, "level", p, 50)
        text = p.text(message, "message") or ""
        stamp = opt_stamp(timestamp) or now()
        meta_json = p.json_object(metadata)
        with self._jobs_write(plan_id) as tx:
            if not jobs.job_exists(tx.conn, job_id):
                raise self._job_not_found(job_id, plan_id)
            return jobs.append_log(tx, job_id=job_id, timestamp=stamp, level=level,
                                   message=text, metadata=meta_json)

    def load_decomposition_job(self, plan_id: int | None, job_id: str, *,
                               log_limit: int | None = None) -> Job:
        """A job with its logs in append order (with `log_limit`, the last ones only).

        `plan_id=None` looks in the system jobs file first, then wherever the job index says
        the job lives, so a job can be loaded by its id alone. RecordNotFound otherwise.
        """
        job_id = record_id(job_id, "job id", self.payloads)
        if log_limit is not None:
            log_limit = limit_arg(log_limit, "log_limit", 1_000_000)
        job = self._load_job(plan_id, job_id, log_limit)
        if job is not None:
            return job
        if plan_id is None:
            with self._registry() as conn:
                entry = jobs.index_get(conn, job_id)
            if entry is not None and entry.plan_id is not None:
                try:
                    job = self._load_job(entry.plan_id, job_id, log_limit)
                except PlanNotFound:
                    job = None
                if job is not None:
                    return job
        raise RecordNotFound("job", job_id, _where(plan_id))

    def _load_job(self, plan_id: int | None, job_id: str, log_limit: int | None) -> Job | None:
        with self._jobs_file(plan_id) as (conn, path), read(conn, path):
            job = jobs.get_job(conn, job_id, plan_id)
            if job is not None:
                job.logs = jobs.job_logs(conn, job_id, log_limit)
            return job

    def find_job(self, job_id: str, *, scan: bool = False) -> Job:
        """A job (with its logs) by id alone, through the registry's job index.

        With ``scan=True``, a job the index does not know is looked for in the system jobs
        file and every plan file (slow on big roots), and the index entry is repaired.
        """
        job_id = record_id(job_id, "job id", self.payloads)
        with self._registry() as conn:
            entry = jobs.index_get(conn, job_id)
        if entry is not None:
            try:
                job = self._load_job(entry.plan_id, job_id, None)
            except PlanNotFound:
                job = None
            if job is not None:
                return job
        if scan:
            for plan_id in [None, *(pid for pid, _ in self.config.plan_files())]:
                try:
                    job = self._load_job(plan_id, job_id, None)
                except PlanDBError:
                    continue
                if job is not None:
                    self._index_job(job_id, plan_id, job.job_type, job.created_at)
                    return job
        raise RecordNotFound("job", job_id, "the job index" + (
            "" if scan else "; find_job(..., scan=True) or reindex_jobs() repairs an entry "
            "lost in a crash"))

    def list_decomposition_jobs(
        self, plan_id: int | None = None, *, status: str | None = None,
        job_type: str | None = None, limit: int = 100, offset: int = 0,
    ) -> list[Job]:
        """Jobs of one file (None: the system jobs file), newest first, without logs."""
        limit, offset = limit_arg(limit), offset_arg(offset)
        with self._jobs_file(plan_id) as (conn, _path):
            return jobs.list_jobs(conn, plan_id, status=status, job_type=job_type,
                                  limit=limit, offset=offset)

    def list_job_index(
        self, *, plan_id: int | None = None, system_only: bool = False,
        job_type: str | None = None, limit: int = 100, offset: int = 0,
    ) -> list[JobIndexEntry]:
        """The registry's job index across all files, newest first (filters: one plan, the
        system file only, a job type)."""
        if plan_id is not None:
            check_plan_id(plan_id)
        limit, offset = limit_arg(limit), offset_arg(offset)
        with self._registry() as conn:
            return jobs.index_list(conn, plan_id=plan_id, system_only=system_only,
                                   job_type=job_type, limit=limit, offset=offset)

    def reindex_jobs(self, *, repair: bool = True) -> JobIndexReport:
        """Compare the job index with the jobs in every file; with `repair`, fix it.

        Safe to run while others write: the index is read before the files, so a job
        recorded meanwhile is at worst reported as missing and re-added, never dropped.
        """
        report = JobIndexReport()
        # The index first, the files after: an entry is written only once its job's file has
        # committed, so every job the index knows at this point is in the files we scan next.
        with self._registry() as conn:
            index = jobs.index_all(conn)
        found: dict[str, tuple[int | None, str, str]] = {}
        for plan_id in [None, *(pid for pid, _ in self.config.plan_files())]:
            try:
                with self._jobs_file(plan_id) as (conn, path), read(conn, path):
                    rows = jobs.all_jobs(conn)
            except PlanDBError as exc:
                report.unreadable.append(f"{_where(plan_id)}: {exc}")
                continue
            report.files_scanned += 1
            for job_id, job_type, created in rows:
                report.jobs_seen += 1
                if job_id in found:
                    report.duplicates.setdefault(job_id, [found[job_id][0]]).append(plan_id)
                    continue
                found[job_id] = (plan_id, job_type, created)
        puts, deletes = [], []
        for job_id, (plan_id, job_type, created) in found.items():
            entry = index.get(job_id)
            if entry is None:
                report.missing.append(job_id)
                puts.append((job_id, plan_id, job_type, created))
            elif job_id in report.duplicates:
                continue  # the index already names one holder; leave the choice to a person
            elif entry.plan_id != plan_id or entry.job_type != job_type:
                report.wrong.append(job_id)
                puts.append((job_id, plan_id, job_type, entry.created_at))
        for job_id in index:
            if job_id not in found:
                report.stale.append(job_id)
                deletes.append(job_id)
        if repair and (puts or deletes):
            with self._registry() as conn, write(conn, self.config.main_db_path,
                                                 retries=self.config.write_retries):
                for args in puts:
                    jobs.index_put(conn, *args)
                for job_id in deletes:
                    jobs.index_delete(conn, job_id)
            report.repaired = True
        return report

    # --- action logs -----------------------------------------------------------------------

    def append_action_log(
        self, *, plan_id: int | None, job_id: str, action_kind: str, action_name: str,
        status: str, job_type: str | None = None, session_id: str | None = None,
        user_message: str | None = None, success: bool | None = None,
        message: str | None = None, parameters: Any = None, details: Any = None,
        created_at: Any = None,
    ) -> ActionLogEntry:
        """Append one action log entry to `plan_id`'s file (None: the system jobs file).

        The entry's per-job `sequence` (1, 2, 3...) is assigned inside the write transaction:
        concurrent writers in any number of threads or processes never collide or skip.
        `created_at` (default now) lets importers keep original times.
        """
        p = self.payloads
        values = {
            "job_id": record_id(job_id, "job id", p),
            "job_type": opt_label(job_type, "job_type", p),
            "session_id": None if session_id is None else record_id(session_id, "session id", p),
            "user_message": p.text(user_message, "user_message"),
            "action_kind": label(action_kind, "action_kind", p),
            "action_name": label(action_name, "action_name", p),
            "status": label(status, "status", p),
            "success": None if opt_bool(success, "success") is None else int(success),
            "message": p.text(message, "message"),
            "parameters": p.json(parameters),
            "details": p.json(details),
            "created_at": opt_stamp(created_at) or now(),
        }
        with self._jobs_write(plan_id) as tx:
            return actions.append(tx, plan_id, values)

    def list_action_logs(
        self, plan_id: int | None, *, job_id: str | None = None, limit: int = 100,
        cursor: str | None = None, reverse: bool = False, status: str | None = None,
        action_name: str | None = None, since: Any = None, until: Any = None,
    ) -> tuple[list[ActionLogEntry], str | None]:
        """One page of action log entries and the cursor of the next page (None at the end).

        Oldest first; ``reverse=True`` newest first. Pass the returned cursor (with the same
        filters and `reverse`) to get the next page: paging visits every entry exactly once,
        even while entries are being appended (entries appended after a newest-first listing
        began are not in it; an oldest-first listing reaches them). Filters: one job, status,
        action name, and a time range ``since <= created_at < until``. A cursor from another
        listing or direction raises InvalidInput.
        """
        limit = limit_arg(limit)
        reverse = bool(reverse)
        after = None if cursor is None else cursors.decode(cursor, actions.SCOPE, reverse)
        if job_id is not None:
            job_id = record_id(job_id, "job id", self.payloads)
        since, until = opt_stamp(since), opt_stamp(until)
        with self._jobs_file(plan_id) as (conn, _path):
            return actions.page(conn, plan_id, after=after, descending=reverse, limit=limit,
                                job_id=job_id, status=status, action_name=action_name,
                                since=since, until=until)

    @staticmethod
    def action_log_cursor(after_id: int, *, reverse: bool = False) -> str:
        """A cursor that continues a listing after entry id `after_id` (e.g. to follow a log
        as it grows: keep the last entry's id, list again from here later)."""
        if isinstance(after_id, bool) or not isinstance(after_id, int) or after_id < 0:
            raise InvalidInput(f"after_id must be a non-negative integer, got {after_id!r}")
        return cursors.encode(actions.SCOPE, after_id, bool(reverse))

    def cleanup_action_logs(self, plan_id: int | None, *, older_than_days: float | None = None,
                            max_rows: int | None = None) -> int:
        """Delete entries older than `older_than_days` and/or all but the newest `max_rows`;
        returns how many were removed. Sequence numbers are never reused afterwards."""
        if older_than_days is None and max_rows is None:
            raise InvalidInput("give older_than_days and/or max_rows")
        before = None
        if older_than_days is not None:
            if (isinstance(older_than_days, bool) or not isinstance(older_than_days, int | float)
                    or not 0 <= older_than_days < 1e6):
                raise InvalidInput(f"older_than_days must be a number >= 0, "
                                   f"got {older_than_days!r}")
            before = ago(older_than_days)
        if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int)
                                     or max_rows < 0):
            raise InvalidInput(f"max_rows must be a non-negative integer, got {max_rows!r}")
        with self._jobs_write(plan_id) as tx:
            return actions.cleanup(tx, before=before, keep_newest=max_rows)

    def aggregate_action_stats(self, plan_id: int | None = None, *,
                               job_id: str | None = None) -> ActionStats:
        """Totals, successes, failures, success rate and counts by action name and status
        over `plan_id`'s action logs (None: the system jobs file), optionally one job's."""
        if job_id is not None:
            job_id = record_id(job_id, "job id", self.payloads)
        with self._jobs_file(plan_id) as (conn, path), read(conn, path):
            return actions.stats(conn, plan_id, job_id)
