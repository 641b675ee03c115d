"""`plandb inspect`: one look at every database file under a DB_ROOT, changing nothing.

Each file is read through `scan.read_snapshot` (no schema upgrade, no side files, one file open
at a time, no connection pool), so inspecting a root of 10,000 plans costs 10,000 short
read-only opens and nothing else. Example::

    report = inspect_root(Path("/var/lib/planner/db"))
    for p in report.problems:
        print(p.kind, p.path, p.detail)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apsw

from .. import schema
from ..errors import CorruptDatabase, PlanDBError, RootNotFound, SchemaTooNew, WrongDatabaseKind
from ..timestamps import normalize
from ..transaction import read
from .scan import (
    DATA_FOLDERS,
    DbFile,
    NeedsRecovery,
    database_files,
    file_sizes,
    folder_usage,
    read_snapshot,
)

Progress = Callable[[Iterable[Any], str], Iterable[Any]]

CHECKS = {"quick": "quick_check", "integrity": "integrity_check"}
MAX_CHECK_LINES = 20


def no_progress(items: Iterable[Any], label: str) -> Iterable[Any]:
    return items


@dataclass(slots=True)
class Problem:
    """Something wrong under the root. `kind` is a stable name (see `PROBLEM_KINDS`)."""

    kind: str
    path: str | None
    detail: str
    plan_id: int | None = None
    repaired: bool = False
    action: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROBLEM_KINDS = {
    "missing_file": "a registry row points at a plan file that does not exist",
    "orphan_file": "a plan file no registry row points at",
    "creating_row": "a registry row left in state 'creating' (a create cut short)",
    "deleting_row": "a registry row left in state 'deleting' (a delete cut short)",
    "corrupt": "not a SQLite database, truncated, or damaged",
    "empty_plan_file": "a plan file with no tables: its data is gone",
    "check_failed": "quick_check / integrity_check reported errors",
    "needs_recovery": "a -wal without its -shm: reading needs a write (doctor --repair)",
    "unreadable": "the file could not be opened or read",
    "schema_too_new": "written by a newer plandb",
    "wrong_kind": "the file's recorded kind differs from what its place implies",
    "unexpected_file": "a database file the layout does not name",
    "registry_unreadable": "registry rows could not be read; missing/orphan checks skipped",
    # raised by other maintenance commands
    "backup_failed": "a file could not be copied into the backup",
    "vacuum_failed": "VACUUM failed on a file",
    "migrate_failed": "a file could not be upgraded to the current schema",
}


@dataclass(slots=True)
class FileReport:
    """One database file as inspect saw it."""

    path: str
    folder: str
    kind: str | None
    expected_kind: str | None
    plan_id: int | None
    schema_version: int | None
    latest_version: int | None
    schema_status: str  # current | older | too_new | unknown
    legacy: bool
    size_bytes: int
    wal_bytes: int
    modified_at: str | None
    tables: dict[str, int | None] = field(default_factory=dict)
    rows: int = 0
    check: str = "skipped"  # ok | failed | skipped | not_run (unreadable)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class InspectReport:
    db_root: str
    files: list[FileReport]
    folders: dict[str, dict[str, int | None]]
    totals: dict[str, int]
    problems: list[Problem]
    registry_rows: list[tuple[int, str, str]] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "db_root": self.db_root,
            "files": [f.to_dict() for f in self.files],
            "folders": self.folders,
            "totals": self.totals,
            "problems": [p.to_dict() for p in self.problems],
        }


# --- one file --------------------------------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'  # a name read from sqlite_schema, not input


def _count_rows(conn: apsw.Connection, names: list[str]) -> dict[str, int | None]:
    """Rows per table, in one statement (one prepare per file matters at 10,000 files)."""
    if not names:
        return {}
    try:
        sql = " UNION ALL ".join(f"SELECT count(*) FROM {_quote(n)}" for n in names)
        return dict(zip(names, (r[0] for r in conn.execute(sql)), strict=True))
    except apsw.SQLError:  # a virtual table whose module this build lacks: one by one
        counts: dict[str, int | None] = {}
        for name in names:
            try:
                counts[name] = conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchall()[0][0]
            except apsw.SQLError:
                counts[name] = None
        return counts


def _read(conn: apsw.Connection, path: Path, check: str | None,
          want_registry: bool) -> dict[str, Any]:
    with read(conn, path):
        state = schema.read_state(conn)
        names = sorted(r[0] for r in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table'"))
        counts = _count_rows(conn, names)
        rows = None
        if want_registry and "plans" in state.tables:
            try:
                rows = conn.execute("SELECT id, state, plan_file FROM plans ORDER BY id").fetchall()
            except apsw.SQLError:
                rows = None
        lines = None
        if check:
            lines = [r[0] for r in conn.execute(f"PRAGMA {CHECKS[check]}({MAX_CHECK_LINES})")]
    return {"state": state, "counts": counts, "registry": rows, "check": lines}


def _schema_status(state: schema.FileState, f: DbFile, problems: list[Problem]):
    """(kind, version, latest, status, legacy) and any schema problem of one file."""
    kind = state.kind or f.expected_kind
    if f.expected_kind == "plan" and state.is_empty:
        # Plan files are built whole and renamed into place, never empty: an empty one has
        # lost its data (truncated), and opening it would only hide that.
        problems.append(Problem("empty_plan_file", f.rel, "the plan file holds no tables "
                                "(0 bytes or truncated): its data is gone", f.plan_id))
        return None, 0, schema.latest_version("plan"), "unknown", False
    if kind not in schema.KINDS:
        if f.expected_kind is None:
            problems.append(Problem("unexpected_file", f.rel, "not a plandb database file"))
        return state.kind, state.version() or None, None, "unknown", False
    if f.expected_kind and state.kind and state.kind != f.expected_kind:
        problems.append(Problem("wrong_kind", f.rel, f"records kind {state.kind!r}, but its "
                                f"place means {f.expected_kind!r}", f.plan_id))
    if f.expected_kind is None:
        problems.append(Problem("unexpected_file", f.rel,
                                f"a {kind} database at a place the layout does not name"))
    latest = schema.latest_version(kind)
    if state.is_empty and f.expected_kind == "plan":
        # Plan files are built whole and renamed into place: an empty one was truncated and
        # its data is gone (the repository refuses to open it too).
        problems.append(Problem("corrupt", f.rel, "an empty plan file (0 bytes): its data "
                                "is gone; restore it from a backup", f.plan_id))
        return kind, None, latest, "unknown", False
    try:
        action = schema.classify(state, kind, f.path)
    except SchemaTooNew as exc:
        problems.append(Problem("schema_too_new", f.rel, str(exc), f.plan_id))
        return kind, exc.found, latest, "too_new", False
    except WrongDatabaseKind:
        return state.kind, state.version() or None, latest, "unknown", False
    status = "current" if action == "current" else "older"
    return kind, state.version(), latest, status, action == "adopt"


def inspect_file(f: DbFile, check: str | None = "quick",
                 problems: list[Problem] | None = None) -> tuple[FileReport, Any]:
    """Read one file; append its problems; return (report, registry rows or None)."""
    problems = problems if problems is not None else []
    size, wal, mtime = file_sizes(f.path)
    report = FileReport(f.rel, f.folder, f.expected_kind, f.expected_kind, f.plan_id, None,
                        None, "unknown", False, size, wal,
                        normalize(mtime) if mtime else None, check="not_run")
    try:
        got = read_snapshot(f.path, lambda c: _read(c, f.path, check, f.expected_kind == "registry"))
    except FileNotFoundError:
        report.error = "vanished while inspecting"
        return report, None
    except NeedsRecovery as exc:
        report.error = str(exc)
        problems.append(Problem("needs_recovery", f.rel, str(exc), f.plan_id))
        return report, None
    except CorruptDatabase as exc:
        report.error = str(exc)
        problems.append(Problem("corrupt", f.rel, str(exc), f.plan_id))
        return report, None
    except PlanDBError as exc:
        report.error = str(exc)
        problems.append(Problem("unreadable", f.rel, str(exc), f.plan_id))
        return report, None
    (report.kind, report.schema_version, report.latest_version, report.schema_status,
     report.legacy) = _schema_status(got["state"], f, problems)
    report.tables = got["counts"]
    report.rows = sum(v for v in got["counts"].values() if v)
    if got["check"] is None:
        report.check = "skipped"
    elif got["check"] == ["ok"]:
        report.check = "ok"
    else:
        report.check = "failed"
        report.error = "; ".join(got["check"][:5])
        problems.append(Problem("check_failed", f.rel, report.error, f.plan_id))
    return report, got["registry"]


# --- the root --------------------------------------------------------------------------------


def _creation_in_progress(root: Path, plan_id: int) -> bool:
    try:
        from .reconcile import lock_held
    except ImportError:  # pragma: no cover - reconcile ships with plandb
        return False
    return lock_held(root / "temp" / f"plan_{plan_id}.lock")


def _cross_check(root: Path, files: list[DbFile], rows, problems: list[Problem]) -> None:
    """Registry rows vs plan files on disk: missing files, orphans, unfinished steps."""
    on_disk = {f.plan_id: f for f in files if f.plan_id is not None}
    for plan_id, state, plan_file in rows:
        path = root / plan_file if plan_file else root / "plans" / f"plan_{plan_id}.sqlite"
        rel = plan_file or f"plans/plan_{plan_id}.sqlite"
        exists = path.exists()
        if state == "creating":
            if _creation_in_progress(root, plan_id):
                continue  # a live create_plan holds its lock: not a problem
            problems.append(Problem("creating_row", rel, "registry row in state 'creating'"
                                    + (" (file in place)" if exists else " (no file)"), plan_id))
        elif state == "deleting":
            problems.append(Problem("deleting_row", rel, "registry row in state 'deleting'"
                                    + (" (file still there)" if exists else ""), plan_id))
        elif not exists:
            problems.append(Problem("missing_file", rel, "registry row points at a missing file",
                                    plan_id))
    known = {r[0] for r in rows}
    for plan_id, f in sorted(on_disk.items()):
        if plan_id not in known:
            problems.append(Problem("orphan_file", f.rel, "no registry row points at it",
                                    plan_id))


def inspect_root(root: Path, *, check: str | None = "quick",
                 progress: Progress = no_progress) -> InspectReport:
    """Inspect every database file under `root` without creating or changing any file.

    `check` is ``"quick"`` (PRAGMA quick_check), ``"integrity"`` (integrity_check) or None.
    Raises `RootNotFound` if `root` does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise RootNotFound(root)
    files = database_files(root)
    problems: list[Problem] = []
    reports: list[FileReport] = []
    registry_rows = None
    registry_seen = False
    for f in progress(files, "inspecting"):
        rep, rows = inspect_file(f, check, problems)
        reports.append(rep)
        if f.expected_kind == "registry":
            registry_seen = True
            registry_rows = rows
    if registry_rows is not None:
        _cross_check(root, files, registry_rows, problems)
    elif registry_seen:
        problems.append(Problem("registry_unreadable", "main/plan_registry.db",
                                "registry rows could not be read; missing/orphan checks skipped"))
    else:  # no registry at all: every plan file is an orphan
        _cross_check(root, files, [], problems)
    folders: dict[str, dict[str, int | None]] = {
        name: {"files": 0, "bytes": 0, "rows": 0} for name in DATA_FOLDERS}
    for rep in reports:
        agg = folders[rep.folder]
        agg["files"] += 1
        agg["bytes"] += rep.size_bytes
        agg["rows"] += rep.rows
    for name in ("temp", "backups"):
        n, size = folder_usage(root / name)
        folders[name] = {"files": n, "bytes": size, "rows": None}
    totals = {
        "files": len(reports),
        "bytes": sum(r.size_bytes for r in reports),
        "rows": sum(r.rows for r in reports),
        "problems": len(problems),
    }
    return InspectReport(str(root), reports, folders, totals, problems, registry_rows)
