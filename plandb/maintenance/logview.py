"""`plandb logs`: the action log (and one job's own log) of a plan or of the system jobs file,
as stored (payloads were redacted on the way in), with a follow mode that polls for more.

Everything goes through the repository's public calls: `list_action_logs` (newest N, then
onwards from a cursor made by `action_log_cursor(last_id)`) and `load_decomposition_job`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

from ..errors import RecordNotFound
from ..jsonutil import dumps

POLL_PAGE = 1000  # entries fetched per page while following


@dataclass(slots=True)
class LogView:
    """What has been shown so far of one log (so a poll returns only what is new)."""

    plan_id: int | None
    job_id: str | None
    limit: int
    last_action_id: int = 0
    last_job_log_id: int = 0
    job: dict[str, Any] | None = None

    def first(self, repo) -> tuple[list[Any], list[Any]]:
        """(job logs, action log entries): the newest `limit` of each, oldest first."""
        entries, _next = repo.list_action_logs(self.plan_id, job_id=self.job_id,
                                               limit=self.limit, reverse=True)
        entries.reverse()
        if entries:
            self.last_action_id = entries[-1].id
        return self._job_logs(repo, self.limit), entries

    def poll(self, repo) -> tuple[list[Any], list[Any]]:
        """Job logs and action log entries appended since the last call."""
        new = []
        while True:
            cursor = repo.action_log_cursor(self.last_action_id)
            page, _next = repo.list_action_logs(self.plan_id, job_id=self.job_id,
                                                limit=POLL_PAGE, cursor=cursor)
            new.extend(page)
            if page:
                self.last_action_id = page[-1].id
            if len(page) < POLL_PAGE:
                break
        return self._job_logs(repo, POLL_PAGE), new

    def _job_logs(self, repo, limit: int) -> list[Any]:
        if self.job_id is None:
            return []
        try:
            job = repo.load_decomposition_job(self.plan_id, self.job_id, log_limit=limit)
        except RecordNotFound:
            return []  # not a decomposition job (or not yet): action logs only
        self.job = {k: v for k, v in job.to_dict().items() if k != "logs"}
        logs = [log for log in job.logs if log.id > self.last_job_log_id]
        if logs:
            self.last_job_log_id = logs[-1].id
        return logs


def follow(view: LogView, open_repo: Callable[[], AbstractContextManager[Any]],
           show: Callable[[list[Any], list[Any]], None], *, ready: Callable[[], bool],
           interval: float, seconds: float | None = None) -> None:
    """Show the newest entries, then poll for new ones every `interval` seconds until Ctrl-C
    (or for `seconds`, which tests use). `ready()` says whether the file exists yet: a log
    that was never written is waited for, not created."""
    deadline = None if seconds is None else time.monotonic() + seconds
    repo = None
    try:
        with ExitStack() as stack:
            while True:
                if repo is None and ready():
                    repo = stack.enter_context(open_repo())
                    show(*view.first(repo))
                elif repo is not None:
                    show(*view.poll(repo))
                if deadline is not None and time.monotonic() >= deadline:
                    return
                pause = interval if deadline is None else min(interval,
                                                              deadline - time.monotonic())
                time.sleep(max(0.0, pause))
    except KeyboardInterrupt:
        return  # Ctrl-C is how a follow ends: not an error


def _compact(value: Any) -> str:
    if value in (None, {}, []):
        return ""
    return dumps(value) or ""


def action_line(e: Any) -> str:
    """One action log entry on one line."""
    outcome = {True: "ok", False: "FAILED"}.get(e.success, "")
    parts = [e.created_at, f"{e.job_id or '-'}#{e.sequence}",
             f"{e.action_kind or '-'}/{e.action_name or '-'}", e.status or "-", outcome,
             e.message or ""]
    params, details = _compact(e.parameters), _compact(e.details)
    if params:
        parts.append(f"params={params}")
    if details:
        parts.append(f"details={details}")
    return "  ".join(p for p in parts if p)


def job_log_line(log: Any) -> str:
    meta = _compact(log.metadata)
    return "  ".join(p for p in (log.timestamp, f"[{log.level}]", log.message,
                                 f"meta={meta}" if meta else "") if p)


def job_header(job: dict[str, Any]) -> str:
    return (f"job {job['job_id']} ({job['job_type']}, {job['status']})"
            f" created {job['created_at']}" + (f", error: {job['error']}" if job["error"] else ""))
