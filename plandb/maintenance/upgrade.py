"""`plandb migrate`: bring every database file under a DB_ROOT to the current schema.

Each file goes through the schema layer (`schema.ensure_schema`), which takes the file's lock,
backs the file up into ``backups/`` first and runs every pending step in one transaction. This
module only walks the files, one open at a time, and reports what happened to each.

The dry run computes what `schema.pending_steps` would list, but reads each file through
`scan.read_snapshot` so that it creates no side file either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import schema
from ..connection import open_connection
from ..errors import PlanDBError, RootNotFound, SchemaTooNew
from .inspect import Problem, Progress, no_progress
from .scan import DbFile, database_files, read_snapshot


def _pending(f: DbFile) -> tuple[int, str, list[schema.Step]]:
    """(current version, action, pending steps) of one file, read-only."""
    state = read_snapshot(f.path, schema.read_state)
    action = schema.classify(state, f.expected_kind, f.path)
    if action == "current":
        return state.version(), action, []
    if action in ("create", "adopt"):
        return state.version(), action, list(schema.steps(f.expected_kind))
    return state.version(), action, [
        s for s in schema.steps(f.expected_kind) if s.version > state.version()]


def _backup_made(backups: Path, f: DbFile, before: set[str]) -> str | None:
    made = sorted(p.name for p in backups.glob(f"{f.path.name}.v*.bak") if p.name not in before)
    return f"backups/{made[-1]}" if made else None


def _upgrade_file(f: DbFile, backups: Path, busy_timeout_ms: int) -> tuple[int, str]:
    """Open read-write and let the schema layer upgrade; returns (version before, action)."""
    version, action, _todo = _pending(f)  # refuses too-new / wrong-kind before any write
    if action == "current":
        return version, action
    conn = open_connection(f.path, create=False, busy_timeout_ms=busy_timeout_ms)
    try:
        return version, schema.ensure_schema(conn, f.path, f.expected_kind, backup_dir=backups)
    finally:
        conn.close()


def upgrade_root(root: Path, *, dry_run: bool = False, progress: Progress = no_progress,
                 busy_timeout_ms: int = 10_000) -> dict[str, Any]:
    """Upgrade (or, with `dry_run`, list the pending steps of) every file of the layout.

    Files the layout does not name are skipped and listed. Files that cannot be upgraded
    (too new, corrupt, wrong kind) are reported as problems and left untouched.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise RootNotFound(root)
    backups = root / "backups"
    files: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for f in progress(database_files(root), "migrating" if not dry_run else "checking"):
        row: dict[str, Any] = {"path": f.rel, "kind": f.expected_kind, "from_version": None,
                               "to_version": None, "action": "skipped", "steps": [],
                               "backup": None, "error": None}
        files.append(row)
        if f.expected_kind is None:
            row["error"] = "not a file of the layout; left alone"
            continue
        latest = schema.latest_version(f.expected_kind)
        try:
            version, action, todo = _pending(f)
            row.update(from_version=version, steps=[f"{s.version:04d}_{s.name}" for s in todo])
            if dry_run:
                row.update(action="current" if action == "current" else "pending",
                           to_version=latest if todo else version)
                continue
            before = {p.name for p in backups.glob(f"{f.path.name}.v*.bak")}
            _version, done = _upgrade_file(f, backups, busy_timeout_ms)
            row.update(action=done, to_version=latest,
                       backup=_backup_made(backups, f, before) if done != "current" else None)
        except FileNotFoundError:
            row["error"] = "vanished while migrating"
        except SchemaTooNew as exc:
            row.update(from_version=exc.found, error=str(exc))
            problems.append(Problem("schema_too_new", f.rel, str(exc), f.plan_id))
        except PlanDBError as exc:
            row["error"] = str(exc)
            problems.append(Problem("migrate_failed", f.rel, str(exc), f.plan_id))
    changed = sum(1 for r in files if r["action"] in ("upgrade", "adopt", "create"))
    pending = sum(1 for r in files if r["action"] == "pending")
    return {
        "ok": not problems,
        "db_root": str(root),
        "dry_run": dry_run,
        "files": files,
        "totals": {"files": len(files), "changed": changed, "pending": pending},
        "problems": [p.to_dict() for p in problems],
    }
