"""Adapters to the parts of plandb that land in other issues (action logs, caches, backup,
reconcile), so the drivers use them when present and skip them cleanly when not."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def has_action_logs(repo: Any) -> bool:
    return hasattr(repo, "append_action_log") and hasattr(repo, "list_action_logs")


def create_job(repo: Any, plan_id: int | None, job_id: str) -> None:
    if hasattr(repo, "record_decomposition_job"):
        repo.record_decomposition_job(plan_id, job_id=job_id, job_type="plan_decompose",
                                      mode="auto", target_task_id=None, status="running")


def append_log(repo: Any, plan_id: int | None, job_id: str, message: str) -> Any:
    return repo.append_action_log(
        plan_id=plan_id, job_id=job_id, job_type="plan_decompose", action_kind="tool",
        action_name="reliability", status="ok", success=True, message=message,
        parameters={"m": message})


def page_logs(repo: Any, plan_id: int | None, job_id: str, limit: int = 50) -> list[Any]:
    entries, _cursor = repo.list_action_logs(plan_id, job_id=job_id, limit=limit)
    return entries


def all_log_entries(repo: Any, plan_id: int | None, job_id: str) -> list[tuple[int, str]]:
    """(sequence, message) of every entry of the job, paging with the cursor."""
    out: list[tuple[int, str]] = []
    cursor = None
    while True:
        entries, cursor = repo.list_action_logs(plan_id, job_id=job_id, limit=500, cursor=cursor)
        out.extend((e.sequence, e.message) for e in entries)
        if not cursor or not entries:
            break
    return sorted(out)


def logs_by_job(repo: Any, plan_id: int | None) -> dict[str, dict[int, str]]:
    """{job id: {sequence: message}} of every action-log entry in the plan's file."""
    out: dict[str, dict[int, str]] = {}
    cursor = None
    while True:
        entries, cursor = repo.list_action_logs(plan_id, limit=500, cursor=cursor)
        for e in entries:
            out.setdefault(e.job_id, {})[e.sequence] = e.message
        if not cursor or not entries:
            break
    return out


def has_backup() -> bool:
    try:
        from plandb.maintenance.backup import backup_root  # noqa: F401
    except ImportError:
        return False
    return True


def backup(root: Path, dest: Path) -> Any:
    from plandb.maintenance.backup import backup_root

    result = backup_root(root, dest)
    if not result.ok:
        raise AssertionError(f"backup reported problems: {result.problems}")
    return result


def backup_problems(dest: Path, titles: list[str]) -> list[str]:
    """What is wrong with a finished backup that should hold the plans `titles`."""
    from plandb.maintenance.backup import verify_backup

    problems = []
    try:
        verify_backup(dest)
    except Exception as exc:  # noqa: BLE001
        return [f"does not verify: {type(exc).__name__}: {exc}"]
    from .checks import _ro, integrity_problems

    problems.extend(integrity_problems(dest))
    found: set[str] = set()
    reg = dest / "main" / "plan_registry.db"
    if reg.exists():
        con = _ro(reg)
        try:
            found.update(r[0] for r in con.execute("SELECT title FROM plans"))
        finally:
            con.close()
    for p in (dest / "plans").glob("plan_*.sqlite"):  # orphans doctor would re-register
        con = _ro(p)
        try:
            found.update(r[0] for r in con.execute(
                "SELECT value FROM plan_meta WHERE key = 'title'"))
        finally:
            con.close()
    problems.extend(f"plan {t!r} acknowledged before the backup began, not in it"
                    for t in titles if t not in found)
    return problems


def has_caches(repo: Any) -> bool:
    return hasattr(repo, "cache")


CACHE_MODEL = "reliability-model"


def cache_put(repo: Any, key: str, value: str) -> bool:
    """Put into the llm cache; True if stored (False: the cache declined it)."""
    return repo.cache("llm").put(CACHE_MODEL, key, value, ttl=None)


def cache_get(repo: Any, key: str) -> Any:
    """The cached value, or None on a miss (eviction is allowed; a stale value is not)."""
    return repo.cache("llm").get(CACHE_MODEL, key)
