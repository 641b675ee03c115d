"""`plandb doctor`: check every file, reconcile the registry with the plan files, and repair.

Without ``repair`` nothing is written: every file gets a full ``integrity_check`` through the
read-only path of `inspect`, and registry <-> file problems come from `reconcile` (or, when the
registry is missing or unreadable, from inspect's own cross-check). With ``repair``:

1. a WAL file left without its ``-shm`` is opened normally once, which replays its ``-wal``;
2. files that cannot be opened or fail the integrity check are moved, with their ``-wal`` and
   ``-shm``, into ``backups/quarantine/<stamp>/`` beside a ``<name>.note.json`` (original
   path, reason, time); nothing is ever deleted;
3. `reconcile(repo, repair=True)` re-registers orphan plan files, finishes or rolls back plans
   cut short while being created or deleted, and refreshes the registry's mirrors;
4. `repo.reindex_jobs(repair=True)` brings the registry's job index in step with the job files.

Files written by a newer plandb, of the wrong kind, or unknown to the layout are reported and
left alone. Stop writers before repairing: a quarantined file that a process still holds open
keeps receiving its writes at the new place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from ..config import DatabaseConfig, ensure_private_dir
from ..connection import open_connection
from ..errors import PlanDBError, RootNotFound, translate
from ..timestamps import now
from .backup import _write_json, stamp
from .inspect import Problem, Progress, inspect_file, inspect_root, no_progress
from .scan import database_files

# Problems about one file, found by the integrity pass; the rest come from reconcile.
FILE_PROBLEMS = {"corrupt", "check_failed", "needs_recovery", "unreadable", "schema_too_new",
                 "wrong_kind", "unexpected_file", "empty_plan_file"}
QUARANTINE = {"corrupt", "check_failed", "unreadable", "empty_plan_file"}
LEFT_ALONE = {
    "schema_too_new": "left alone: upgrade plandb to read it",
    "wrong_kind": "left alone: move it where its kind belongs, or away from the root",
    "unexpected_file": "left alone: not a file of the layout",
}


@dataclass(slots=True)
class DoctorReport:
    db_root: str
    repair: bool
    files_checked: int
    problems: list[Problem]
    reconcile: dict[str, Any] | None = None
    quarantine: str | None = None
    job_index: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.repaired for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "db_root": self.db_root,
            "repair": self.repair,
            "files_checked": self.files_checked,
            "problems": [p.to_dict() for p in self.problems],
            "counts": {"problems": len(self.problems),
                       "repaired": sum(p.repaired for p in self.problems),
                       "remaining": sum(not p.repaired for p in self.problems)},
            "reconcile": self.reconcile,
            "job_index": self.job_index,
            "quarantine": self.quarantine,
            "notes": self.notes,
        }


def quarantine_file(root: Path, rel: str, reason: str, folder: Path) -> Path:
    """Move ``root/rel`` and its side files into `folder` (same relative path) with a note."""
    src = root / rel
    dest = folder / rel
    ensure_private_dir(dest.parent)
    moved = []
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(f"{src}{suffix}")
        if p.exists():
            os.rename(p, f"{dest}{suffix}")  # rename: same filesystem, nothing copied or lost
            moved.append(f"{rel}{suffix}")
    _write_json(Path(f"{dest}.note.json"), {
        "original_path": str(src), "relative_path": rel, "reason": reason,
        "quarantined_at": now(), "files": moved,
    })
    return dest


def recover_file(path: Path, busy_timeout_ms: int = 10_000) -> None:
    """Open a WAL file read-write once so SQLite replays its -wal (WAL recovery)."""
    conn = open_connection(path, create=False, configure=False, busy_timeout_ms=busy_timeout_ms)
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    except apsw.Error as exc:
        raise translate(exc, path) from exc
    finally:
        conn.close()


def confirm_damage(path: Path, busy_timeout_ms: int = 10_000) -> str | None:
    """Check a file again through a normal connection before it is moved: what is wrong with
    it, or None if it is healthy after all.

    The first pass reads without writing anything (no read mark in the -shm), which a
    checkpoint racing that read can confuse; this read takes part in the WAL locking like any
    reader, so a file is quarantined only when a proper integrity_check fails too.
    Raises `DatabaseBusy` when a writer keeps the file locked.
    """
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
    except apsw.Error as exc:
        return f"cannot be opened: {exc}"
    try:
        conn.set_busy_timeout(busy_timeout_ms)
        lines = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
    except (apsw.BusyError, apsw.LockedError) as exc:
        raise translate(exc, path) from exc
    except apsw.Error as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return None if lines == ["ok"] else "; ".join(lines[:5])


def _repair_files(root: Path, problems: list[Problem], report: DoctorReport) -> None:
    qdir = root / "backups" / "quarantine" / stamp()
    by_path = {f.rel: f for f in database_files(root)}
    done: set[str] = set()
    for p in problems:
        if p.kind in LEFT_ALONE:
            p.action = LEFT_ALONE[p.kind]
            continue
        if p.path in done:  # one file can carry two problems; it is moved once
            p.repaired, p.action = True, "quarantined with the problem above"
            continue
        if p.kind == "needs_recovery":
            try:
                recover_file(root / p.path)
                again: list[Problem] = []
                if p.path in by_path:
                    inspect_file(by_path[p.path], "integrity", again)
                if not again:
                    p.repaired, p.action = True, "recovered: the -wal was replayed"
                    continue
                p.detail += "; after recovery: " + again[0].detail
            except PlanDBError as exc:
                p.detail += f"; recovery failed: {exc}"
        if p.kind in QUARANTINE or p.kind == "needs_recovery":
            try:  # (an empty plan file passes integrity_check: emptiness is its damage)
                damage = p.detail if p.kind == "empty_plan_file" else confirm_damage(
                    root / p.path)
            except PlanDBError:
                p.action = "left alone: busy, try again when writers are idle"
                continue
            if damage is None:
                p.repaired, p.action = True, "rechecked: healthy (the first read raced a writer)"
                continue
            dest = quarantine_file(root, p.path, f"{p.kind}: {p.detail}", qdir)
            report.quarantine = str(qdir)
            done.add(p.path)
            p.repaired = True
            p.action = f"quarantined to {dest.relative_to(root)}"


def _from_reconcile(rep: Any, root: Path) -> list[Problem]:
    out = []
    for x in rep.problems:
        path = x.path
        if path is not None and Path(path).is_absolute() and root in Path(path).parents:
            path = Path(path).relative_to(root).as_posix()
        out.append(Problem(x.kind, path, x.detail, x.plan_id, x.repaired,
                           "repaired by reconcile" if x.repaired else None))
    return out


def _reconcile(config: DatabaseConfig, repair: bool, reindex: bool):
    """Run reconcile (and the job index check) on one repository.

    Returns (reconcile report or None if reconcile is not installed, job index report or None).
    """
    from ..repository import PlanRepository

    try:
        from .reconcile import reconcile
    except ImportError:  # pragma: no cover - reconcile ships with plandb
        reconcile = None
    with PlanRepository(config) as repo:
        rec = reconcile(repo, repair=repair) if reconcile is not None else None
        jobs = None
        if reindex and hasattr(repo, "reindex_jobs"):
            jobs = repo.reindex_jobs(repair=repair)
        return rec, jobs


JOB_INDEX_PROBLEMS = (
    ("missing", "job_index_missing", "in a job file but not in the registry's job index"),
    ("wrong", "job_index_wrong", "indexed with another plan or job type"),
    ("stale", "job_index_stale", "indexed, but no job file holds it"),
)


def _from_job_index(rep: Any) -> list[Problem]:
    out = [Problem(kind, None, f"job {job_id!r}: {what}", None, rep.repaired,
                   "job index repaired" if rep.repaired else None)
           for attr, kind, what in JOB_INDEX_PROBLEMS for job_id in getattr(rep, attr)]
    for job_id, holders in rep.duplicates.items():
        where = ", ".join("system jobs" if h is None else f"plan {h}" for h in holders)
        out.append(Problem("job_duplicate", None, f"job {job_id!r} is held by {where}",
                           action="left alone: choose which copy to keep"))
    return out


def doctor_root(config: DatabaseConfig, *, repair: bool = False,
                progress: Progress = no_progress) -> DoctorReport:
    """Check (and with `repair`, fix) the root `config` names; see the module doc."""
    root = config.root
    if not root.is_dir():
        raise RootNotFound(root)
    insp = inspect_root(root, check="integrity", progress=progress)
    file_problems = [p for p in insp.problems if p.kind in FILE_PROBLEMS]
    cross_problems = [p for p in insp.problems if p.kind not in FILE_PROBLEMS]
    report = DoctorReport(str(root), repair, len(insp.files), file_problems)
    if repair:
        _repair_files(root, file_problems, report)
    registry = next((f for f in insp.files if f.expected_kind == "registry"), None)
    registry_bad = registry is not None and (registry.error is not None
                                             or registry.schema_status == "too_new")
    quarantined_registry = any(p.repaired and p.path == "main/plan_registry.db"
                               for p in file_problems)
    rec = jobs = None
    if registry_bad and not quarantined_registry:
        report.notes.append("the registry cannot be read: registry checks come from inspect")
    else:
        # Without --repair, the job index check opens files read-write (never changing them),
        # so it runs only when that cannot upgrade or create a file.
        has_jobs_file = config.system_jobs_db_path.exists()
        all_current = all(f.schema_status == "current" for f in insp.files if f.expected_kind)
        reindex = repair or (has_jobs_file and all_current)
        try:
            rec, jobs = _reconcile(config, repair, reindex)
            if not reindex:
                why = ("jobs/system_jobs.sqlite does not exist and the check would create it"
                       if not has_jobs_file else "some files need a schema upgrade first")
                report.notes.append(f"job index not checked without --repair: {why}")
        except PlanDBError as exc:
            report.notes.append(f"reconcile failed: {exc}")
            report.problems.append(Problem("reconcile_failed", None, str(exc)))
    if rec is None:
        report.problems.extend(cross_problems)
    else:
        report.reconcile = rec.to_dict()
        seen = {p.path for p in file_problems}
        for p in _from_reconcile(rec, root):
            # A file the integrity pass already reported (and maybe quarantined) is not
            # reported twice as unreadable.
            if not (p.kind == "unreadable_file" and p.path in seen):
                report.problems.append(p)
    if jobs is not None:
        report.job_index = jobs.to_dict()
        report.problems.extend(_from_job_index(jobs))
    return report
