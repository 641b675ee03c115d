"""Migrate existing (legacy) databases into a DB_ROOT, losing nothing.

Two older shapes are brought in (see `legacy_root` and `legacy_flat` for the details):

1. an older DB_ROOT (the root itself): its registry, plan files with schema_version "2"/"1"/
   none and no kind, system jobs, session files, caches: upgraded in place, every row and id
   kept;
2. a flat working directory from before DB_ROOT existed (``--legacy-dir``, default the current
   directory): ``tasks.db`` (plans, task trees, links, chat), ``embedding_cache.db``,
   ``llm_cache.db`` and scratch databases: imported through the public repository API, the
   legacy directory itself never changed.

Example::

    from plandb import DatabaseConfig
    report = DatabaseConfig("/srv/planner/db").migrate_existing_databases(
        legacy_dir="/srv/planner", dry_run=True)
    print(report.to_text())

How a run goes:

1. **Survey** every file read-only (no byte on disk changes, no side file is created) and
   **plan** the steps. ``dry_run=True`` stops here and returns the plan: nothing is created,
   not even DB_ROOT.
2. **Back up**: each file a step will touch or import from is copied consistently into
   ``backups/legacy/<run>/`` (SQLite backup API, -wal content included) before anything touches
   it; the report names every copy. Identical content already copied by an earlier run is not
   copied again.
3. **Execute** the steps in order: root files first (quarantine, renames, schema adoption,
   plan_meta, reconcile, job index, id reservation), then the flat imports and, with
   ``redact=True``, re-scrubbing legacy log payloads. A step that fails is reported and the rest
   go on; the next run retries it.

Idempotent: every step is planned only if the survey shows work left, so a second run plans
nothing and says "nothing to do". Interrupted (killed) at any point, a rerun finishes the job:
each step is one transaction or an atomic rename, and flat plan imports are found again by the
import reference recorded in the plan's metadata.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import DatabaseConfig, ensure_private_dir
from ..errors import LockTimeout, PlanDBError
from ..redaction import Redactor
from ..timestamps import now
from .legacy_files import Backups, Reader, write_json_atomic
from .legacy_report import MigrationReport, Step

Progress = Callable[[int, int, Step], None]


class Run:
    """One migration run: the config, the report, the planned steps and how to run them."""

    def __init__(self, config: DatabaseConfig, *, legacy_dir: Path | None, dry_run: bool,
                 redact: bool, redactor: Redactor | None):
        self.config = config
        self.legacy_dir = legacy_dir
        self.dry_run = dry_run
        self.redact = redact
        self.redactor = redactor
        self.stamp = now()
        self.report = MigrationReport(
            db_root=str(config.root), legacy_dir=None if legacy_dir is None else str(legacy_dir),
            dry_run=dry_run, redact=redact, started_at=self.stamp)
        self.reader = Reader(config.busy_timeout_ms)
        # In a dry run only its ledger is read (what earlier runs copied); nothing is taken.
        self.backups = Backups(config.root, self.reader, self.report, self.stamp)
        self._steps: list[tuple[Step, Callable[[], Any], tuple[Step, ...]]] = []
        self._repo = None
        self.memo: dict[Any, Any] = {}  # data loaded once per run (e.g. an old store)

    # --- planning --------------------------------------------------------------------------

    def add(self, action: str, target: str, detail: str, fn: Callable[[], Any],
            needs: tuple[Step, ...] = (), **data: Any) -> Step:
        """Plan a step; it runs only if every step in `needs` completed."""
        step = self.report.step(action, target, detail, **data)
        self._steps.append((step, fn, tuple(n for n in needs if n is not None)))
        return step

    def rel(self, path: Path) -> str:
        """A path relative to DB_ROOT when it is inside it, else absolute."""
        try:
            return Path(path).relative_to(self.config.root).as_posix()
        except ValueError:
            return str(path)

    @property
    def repo(self):
        """The repository steps use once the root's files are current (opened on first use)."""
        if self.dry_run:
            raise PlanDBError("internal: a dry run must not open the repository")
        if self._repo is None:
            from ..repository import PlanRepository

            self._repo = PlanRepository(self.config, redactor=self.redactor)
        return self._repo

    # --- running ---------------------------------------------------------------------------

    def execute(self, progress: Progress | None = None) -> None:
        total = len(self._steps)
        for i, (step, fn, needs) in enumerate(self._steps, 1):
            blocked = [n for n in needs if n.status != "done"]
            if blocked:
                step.status = "skipped"
                step.error = (f"needs the {blocked[0].action} of {blocked[0].target}, which "
                              "did not complete; run again")
            else:
                try:
                    result = fn()
                except (PlanDBError, OSError) as exc:
                    step.status, step.error = "failed", str(exc)
                except Exception as exc:  # noqa: BLE001 - one broken file never stops a run
                    step.status, step.error = "failed", f"{type(exc).__name__}: {exc}"
                else:
                    step.status = "done"
                    if isinstance(result, dict):
                        step.data.update(result)
            if progress is not None:
                progress(i, total, step)

    def close(self) -> None:
        try:
            if self._repo is not None:
                self._repo.close()
        finally:
            self.reader.close()


def _lock(folder: Path) -> int:
    """An exclusive flock on the backups/legacy folder itself (no lock file to leave behind or
    touch, so a run with nothing to do changes no byte); the kernel drops it if we die."""
    ensure_private_dir(folder)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockTimeout(f"{folder.parent.parent}: another legacy migration of this root is "
                          "running; wait for it to finish") from None
    return fd


def _resolve(config: DatabaseConfig | str | os.PathLike | None, dry_run: bool) -> DatabaseConfig:
    if isinstance(config, DatabaseConfig):
        return config
    return DatabaseConfig(config, create=not dry_run)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def migrate_existing_databases(
    config: DatabaseConfig | str | os.PathLike | None = None,
    *,
    legacy_dir: str | os.PathLike | None = None,
    dry_run: bool = False,
    redact: bool = False,
    redactor: Redactor | None = None,
    progress: Progress | None = None,
) -> MigrationReport:
    """Bring legacy files into the DB_ROOT of `config`; return the report.

    :param config: the DB_ROOT (a `DatabaseConfig`, a path, or None for env ``DB_ROOT`` /
        the default); it is upgraded in place, and created if absent (not in a dry run).
    :param legacy_dir: the flat legacy directory to import (default: the current directory).
        It is only read, never changed.
    :param dry_run: survey and plan only; nothing is created or changed anywhere.
    :param redact: also re-scrub legacy job/action log and chat payloads already in the root
        with the redaction layer (flat imports are always redacted: they go through the
        repository's API).
    :param redactor: the `Redactor` to use (default: plandb's).
    :param progress: called as ``progress(done, total, step)`` after each step.
    :raises LockTimeout: another migration of this root is running.

    Broken cases never raise: they are listed in ``report.problems``; failed steps in
    ``report.steps`` (``report.ok`` is False) and the next run retries them.
    """
    from .legacy_flat import plan_flat
    from .legacy_redact import plan_redact
    from .legacy_root import plan_reserve_ids, plan_root

    config = _resolve(config, dry_run)
    flat = Path(legacy_dir if legacy_dir is not None else os.getcwd()).expanduser().resolve()
    run = Run(config, legacy_dir=flat, dry_run=dry_run, redact=redact, redactor=redactor)
    lock = None
    try:
        if not dry_run:
            lock = _lock(config.root / "backups" / "legacy")
        root_plan = plan_root(run)
        # Before any import creates a plan: no new plan may take an id a file (or a
        # quarantined file) already uses.
        plan_reserve_ids(run, root_plan)
        if _inside(flat, config.root):
            run.report.problem("legacy_dir_inside_root", str(flat),
                               "the legacy directory is DB_ROOT or inside it; flat import "
                               "skipped (pass --legacy-dir)")
        else:
            plan_flat(run, root_plan)
        if redact:
            plan_redact(run, root_plan)
        if not dry_run:
            run.execute(progress)
            if run.report.steps:
                run.report.run_folder = run.rel(run.backups.run_dir)
        run.report.finished_at = now()
        if not dry_run and run.report.steps:
            ensure_private_dir(run.backups.run_dir)
            write_json_atomic(run.backups.run_dir / "report.json", run.report.to_dict())
        return run.report
    finally:
        try:
            run.close()
        finally:
            if lock is not None:
                os.close(lock)  # releases the flock
