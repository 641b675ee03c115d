"""Upgrading an older DB_ROOT in place: survey every file, then plan the steps that bring it to
the current layout and schemas, keeping every row and id.

Survey (read-only, `Reader`): each database file under main/, plans/, jobs/, sessions/,
cache/ is classified against the kind its place implies:

=============  ==============================================================================
status         step(s) planned
=============  ==============================================================================
current        none (a session file at an unsafe name is still renamed)
adopt/upgrade  backup, then the schema runner (`schema.ensure_schema`, one transaction)
legacy_cache   backup, then `convert_cache` (old embedding/llm tables -> cache_entries)
corrupt        quarantine (moved with its side files into backups/quarantine/)
foreign        quarantine (a readable database of another kind in plandb's place)
too_new        none: reported, never touched
stray          none: a database file of no known name in a data folder; reported
=============  ==============================================================================

Then, across files: plan_meta of adopted plan files is filled from their registry row (the
older code kept titles and owners only in the registry); `reconcile(repair=True)` registers
orphan plan files from their own plan_meta (same id) and recomputes counts; the job index gets
an entry for every job found in a file; and the registry's plan id sequence is raised above
every id any file ever used (`reserve_ids`, planned by `legacy.py` after the flat import).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw

from .. import jsonutil, schema
from ..config import check_plan_id, make_private
from ..connection import configure_connection, open_connection
from ..errors import (
    CorruptDatabase,
    PlanDBError,
    SchemaTooNew,
    StorageError,
    WrongDatabaseKind,
    translate,
)
from ..transaction import read, write
from .legacy_files import fingerprint, finish_quarantines, fsync_path, quarantine, read_json
from .scan import DbFile, database_files

if TYPE_CHECKING:
    from .legacy import Run

# Old cache shapes (the older planner's cache files): table -> the columns that hold the input.
LEGACY_CACHE_TABLES = ("embedding_cache", "llm_cache")
_PLAN_REL = re.compile(r"plans__plan_([1-9][0-9]{0,18})\.sqlite$")
# Columns the older registry's plans table may have, in the order read.
_REG_COLS = ("id", "title", "owner", "description", "metadata", "metadata_json", "state",
             "created_at", "updated_at")
META_FROM_ROW = ("title", "description", "owner", "metadata")


# --- reading a file --------------------------------------------------------------------------


@dataclass(slots=True)
class Table:
    columns: list[str]
    rows: int


@dataclass(slots=True)
class Facts:
    """What one database file holds, read without writing anything."""

    user_version: int
    kind: str | None
    meta_version: str | None
    tables: dict[str, Table]
    meta: dict[str, str]
    sequences: dict[str, int]
    registry_rows: list[dict[str, Any]] = field(default_factory=list)
    job_index: set[str] = field(default_factory=set)
    jobs: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    def state(self) -> schema.FileState:
        return schema.FileState(self.user_version, self.kind, self.meta_version,
                                frozenset(self.tables))

    def rows(self, table: str) -> int:
        t = self.tables.get(table)
        return t.rows if t else 0


def _ident(name: str) -> str:
    """Quote an identifier read from sqlite_schema (never user input)."""
    return '"' + name.replace('"', '""') + '"'


def read_facts(conn: apsw.Connection) -> Facts:
    """Version, kind, tables with their columns and row counts, plan_meta, sequences; plus the
    plans rows and job index of a registry and the job ids of a plan or jobs file."""
    state = schema.read_state(conn)
    tables: dict[str, Table] = {}
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    for name in names:
        cols = [r[1] for r in conn.execute("SELECT * FROM pragma_table_info(?)", (name,))]
        try:
            count = conn.execute(f"SELECT count(*) FROM {_ident(name)}").fetchall()[0][0]
        except apsw.SQLError:  # a virtual table whose module is missing: not ours to count
            count = -1
        tables[name] = Table(cols, count)
    meta: dict[str, str] = {}
    if "plan_meta" in tables and {"key", "value"} <= set(tables["plan_meta"].columns):
        meta = {str(k): v for k, v in conn.execute("SELECT key, value FROM plan_meta")}
    seqs = {}
    if conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'").fetchall():
        seqs = dict(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    facts = Facts(state.user_version, state.kind, state.meta_version, tables, meta, seqs)
    if "plans" in tables and "id" in tables["plans"].columns:
        have = [c for c in _REG_COLS if c in tables["plans"].columns]
        for row in conn.execute(f"SELECT {', '.join(have)} FROM plans ORDER BY id"):
            d = dict(zip(have, row, strict=True))
            if "metadata" not in d:
                d["metadata"] = d.pop("metadata_json", None)
            facts.registry_rows.append(d)
    if "plan_decomposition_job_index" in tables:
        facts.job_index = {r[0] for r in conn.execute(
            "SELECT job_id FROM plan_decomposition_job_index")}
    if "decomposition_jobs" in tables:
        have = set(tables["decomposition_jobs"].columns)
        jt = "job_type" if "job_type" in have else "NULL"
        ca = "created_at" if "created_at" in have else "NULL"
        facts.jobs = conn.execute(
            f"SELECT job_id, {jt}, {ca} FROM decomposition_jobs ORDER BY job_id").fetchall()
    return facts


@cache
def shape(kind: str) -> dict[str, tuple[str, ...]]:
    """The current schema's tables and their columns, for one kind."""
    conn = apsw.Connection(":memory:")
    try:
        for step in schema.steps(kind):
            conn.execute(step.sql)
        out = {}
        for (name,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' AND "
                                    "name NOT LIKE 'sqlite_%'").fetchall():
            out[name] = tuple(r[1] for r in conn.execute(
                "SELECT * FROM pragma_table_info(?)", (name,)))
        return out
    finally:
        conn.close()


# --- the survey ------------------------------------------------------------------------------


@dataclass(slots=True)
class RootFile:
    """One database file under the root and what it needs."""

    db: DbFile
    status: str
    facts: Facts | None = None
    error: str | None = None
    session_id: str | None = None
    target: Path | None = None   # sessions: where the file belongs (safe name)

    @property
    def kind(self) -> str | None:
        return self.db.expected_kind

    @property
    def path(self) -> Path:
        return self.db.path

    @property
    def rel(self) -> str:
        return self.db.rel


def unreadable_reason(exc: BaseException) -> str:
    """A short reason a file could not be read (the SQLite message, without advice)."""
    cause = exc.__cause__ if isinstance(exc, CorruptDatabase) and exc.__cause__ else exc
    if isinstance(cause, apsw.Error):
        return f"{type(cause).__name__}: {cause}"
    return str(exc)


def _status(db: DbFile, facts: Facts) -> str:
    if db.expected_kind is None:
        return "stray"
    if db.expected_kind == "cache" and "cache_entries" not in facts.tables and any(
            t in facts.tables for t in LEGACY_CACHE_TABLES):
        return "legacy_cache"
    try:
        action = schema.classify(facts.state(), db.expected_kind, db.path)
    except WrongDatabaseKind:
        return "foreign"
    except SchemaTooNew:
        return "too_new"
    return {"create": "empty"}.get(action, action)


def survey_root(run: Run) -> list[RootFile]:
    """Every database file under the root, read-only, with its status."""
    root = run.config.root
    if not root.exists():
        return []
    out = []
    for db in database_files(root):
        try:
            facts = run.reader.read(db.path, read_facts)
        except (PlanDBError, apsw.Error) as exc:
            out.append(RootFile(db, "corrupt", error=unreadable_reason(exc)))
            continue
        f = RootFile(db, _status(db, facts), facts)
        if db.expected_kind == "session":
            _session_target(run, f)
        out.append(f)
    return out


def _session_target(run: Run, f: RootFile) -> None:
    """The session id a session file holds, and the file name plandb gives that id."""
    meta_id = f.facts.meta.get("session_id") if f.facts else None
    legacy = f.status in ("adopt", "upgrade")
    if meta_id is None and not legacy:
        return  # a plandb file: its name is already the mapping of its id
    stem = f.path.name[len("session_"):-len(".sqlite")]
    sid = str(meta_id) if meta_id is not None else stem
    f.session_id = sid
    f.target = run.config.session_db_path(sid)


# --- planning --------------------------------------------------------------------------------


@dataclass(slots=True)
class RootPlan:
    files: list[RootFile]
    registry: RootFile | None
    rows: dict[int, dict[str, Any]]
    plan_files: dict[int, RootFile]
    quarantined_ids: set[int]
    sequence: int
    convert_steps: dict[str, Any] = field(default_factory=dict)  # rel path -> convert_cache
    adopt_steps: dict[str, Any] = field(default_factory=dict)    # rel path -> adopt/upgrade

    def max_plan_id(self) -> int:
        ids = set(self.rows) | set(self.plan_files) | self.quarantined_ids
        return max(ids, default=0)


def plan_root(run: Run) -> RootPlan:
    """Survey the root and add every step it needs to `run` (in execution order)."""
    report = run.report
    root = run.config.root
    pending_q = _pending_quarantines(root)
    if pending_q:
        run.add("finish_quarantine", "backups/quarantine",
                f"complete {len(pending_q)} quarantine move(s) an earlier run was cut in",
                lambda: {"finished": finish_quarantines(root)}, folders=pending_q)
    files = survey_root(run)
    registry = next((f for f in files if f.kind == "registry"), None)
    rows = {r["id"]: r for r in (registry.facts.registry_rows if registry and registry.facts
                                 else []) if isinstance(r.get("id"), int)}
    plan_files = {f.db.plan_id: f for f in files if f.kind == "plan"}
    plan = RootPlan(files, registry, rows, plan_files, _quarantined_plan_ids(root),
                    (registry.facts.sequences.get("plans", 0)
                     if registry and registry.facts else 0))
    order = {"registry": 0, "plan": 1, "jobs": 2, "session": 3, "cache": 4, None: 5}
    migrated: list[RootFile] = []
    for f in sorted(files, key=lambda f: (order[f.kind], f.db.plan_id or 0, f.rel)):
        if f.status in ("corrupt", "foreign"):
            why = (f"unreadable ({f.error or 'not a SQLite database'})" if f.status == "corrupt"
                   else f"a {f.facts.kind or 'foreign'} database, not a {f.kind} file")
            report.problem("unreadable_file", f.rel, f"{why}; moved to backups/quarantine/",
                           status=f.status)
            run.add("quarantine", f.rel, "move it (with any -wal/-shm) into backups/quarantine/",
                    _quarantine_fn(run, f, why))
            continue
        if f.status == "too_new":
            report.problem("schema_too_new", f.rel, "written by a newer plandb; left untouched")
            continue
        if f.status == "stray":
            report.problem("stray_file", f.rel, "a database file plandb does not know by name; "
                           "left where it is")
            continue
        if f.status == "empty":
            continue
        rename = f.target is not None and f.target != f.path
        if f.status not in ("adopt", "upgrade", "legacy_cache") and not rename:
            continue
        backup = run.add("backup", f.rel, "consistent copy before anything touches it",
                         _backup_fn(run, f))
        _leftovers(run, f)
        path = f.path
        if rename:
            if f.target.exists():
                report.problem("session_conflict", f.rel,
                               f"session id {f.session_id!r} belongs at "
                               f"{run.rel(f.target)}, which already exists; left as it is")
                continue
            if f.session_id != f.path.name[len("session_"):-len(".sqlite")]:
                why = "its file name does not match the session id it holds"
            else:
                why = "its id has characters that are not safe in a file name"
            report.problem("unsafe_session_id", f.rel,
                           f"session {f.session_id!r}: {why}; renamed to {run.rel(f.target)}",
                           session_id=f.session_id, new_path=run.rel(f.target))
            run.add("rename_session", f.rel, f"fold its -wal, rename to {run.rel(f.target)}",
                    _rename_fn(run, f), needs=(backup,), session_id=f.session_id,
                    new_path=run.rel(f.target))
            path = f.target
        if f.status == "legacy_cache":
            plan.convert_steps[f.rel] = run.add(
                "convert_cache", f.rel, "old cache tables -> cache_entries (every entry)",
                _convert_cache_fn(run, f, backup), needs=(backup,),
                entries=sum(f.facts.rows(t) for t in LEGACY_CACHE_TABLES))
        elif f.status in ("adopt", "upgrade") or (rename and f.facts.kind is None):
            what = ("adopt legacy file (schema_version "
                    f"{f.facts.meta_version or 'none'}): rebuild tables, rows copied by column"
                    if f.status == "adopt" else f"upgrade from v{f.facts.state().version()}")
            plan.adopt_steps[f.rel] = run.add(
                f.status, run.rel(path), what, _adopt_fn(run, f, path), needs=(backup,),
                rows={t: v.rows for t, v in f.facts.tables.items()})
        migrated.append(f)
    for pid, row in sorted(rows.items()):
        f = plan_files.get(pid)
        if f is None or f.status in ("corrupt", "foreign"):
            report.problem("missing_plan_file", f"plans/plan_{pid}.sqlite",
                           "the registry lists this plan but its file is "
                           + ("missing" if f is None else "unreadable (quarantined)")
                           + "; the row is kept", plan_id=pid, title=row.get("title"))
    _plan_fill_meta(run, plan)
    _plan_reconcile(run, plan, migrated)
    _plan_job_index(run, plan)
    return plan


def _pending_quarantines(root: Path) -> list[str]:
    base = root / "backups" / "quarantine"
    out = []
    if base.is_dir():
        for qdir in sorted(base.iterdir()):
            note = read_json(qdir / "note.json", None)
            if isinstance(note, dict) and note.get("state") == "moving":
                out.append(qdir.name)
    return out


def _quarantined_plan_ids(root: Path) -> set[int]:
    """Plan ids of files quarantined by any run (they stay reserved: never handed out again)."""
    base = root / "backups" / "quarantine"
    ids = set()
    if base.is_dir():
        for qdir in base.iterdir():
            m = _PLAN_REL.search(qdir.name)
            if m:
                ids.add(int(m.group(1)))
    return ids


def _leftovers(run: Run, f: RootFile) -> None:
    """Columns and tables of a legacy file the current shape has no place for."""
    if f.facts is None or f.status not in ("adopt", "upgrade", "legacy_cache"):
        return
    if f.status == "legacy_cache":
        return  # every column of the old cache tables is converted
    current = shape(f.kind)
    renames = schema.LEGACY_RENAMES.get(f.kind, {})
    for table, t in f.facts.tables.items():
        if table == "plan_meta" or table.startswith("sqlite_"):
            continue
        if table not in current:
            run.report.leftover(f.rel, "table", table, t.rows, f"kept in {f.rel} and its backup")
            continue
        homeless = [c for c in t.columns if c not in current[table]
                    and renames.get(table, {}).get(c) not in current[table]]
        for c in homeless:
            run.report.leftover(f.rel, "column", f"{table}.{c}", t.rows, "backup copy")


# --- plan_meta, reconcile, job index -------------------------------------------------------------


def _plan_fill_meta(run: Run, plan: RootPlan) -> None:
    for pid, f in sorted(plan.plan_files.items()):
        row = plan.rows.get(pid)
        if row is None or f.facts is None or f.status in ("corrupt", "foreign", "too_new"):
            continue
        meta = f.facts.meta
        adopted_now = f.status in ("adopt", "upgrade") and f.facts.kind is None
        # Adopted by an earlier run that was cut before this step (an orphan registered from
        # its own plan_meta agrees with its row already).
        adopted_before = "adopted_from_version" in meta and "legacy_meta_filled" not in meta \
            and any(row.get(k) is not None and meta.get(k) != row.get(k) for k in META_FROM_ROW)
        if adopted_now or adopted_before:
            needs = tuple(s for s in (plan.adopt_steps.get(f.rel),
                                      plan.adopt_steps.get("main/plan_registry.db")) if s)
            run.add("fill_plan_meta", f.rel, "copy title/owner/description/metadata from the "
                    "registry row into the file's plan_meta (the file becomes the truth)",
                    _fill_meta_fn(run, pid, f.path), needs=needs)


def _plan_reconcile(run: Run, plan: RootPlan, migrated: list[RootFile]) -> None:
    orphans = [pid for pid, f in plan.plan_files.items()
               if pid not in plan.rows and f.status not in ("corrupt", "foreign", "too_new")]
    for pid in sorted(orphans):
        f = plan.plan_files[pid]
        title = f.facts.meta.get("title") if f.facts else None
        run.report.problem("orphan_plan_file", f.rel,
                           "a plan file with no registry row: registered from its own "
                           f"plan_meta with its own id {pid}", plan_id=pid, title=title)
    stale = [pid for pid, f in plan.plan_files.items()
             if pid in plan.rows and f.status == "current" and f.facts
             and f.facts.rows("tasks") != plan.rows[pid].get("task_count", 0)
             and "task_count" in plan.rows[pid]]
    unfinished = [pid for pid, r in plan.rows.items() if r.get("state") not in (None, "ready")]
    if migrated or orphans or stale or unfinished:
        run.add("reconcile", "main/plan_registry.db",
                "registry <-> plan files: register orphans, recompute task counts",
                _reconcile_fn(run), orphans=sorted(orphans))


def _plan_job_index(run: Run, plan: RootPlan) -> None:
    indexed = plan.registry.facts.job_index if plan.registry and plan.registry.facts else set()
    missing: list[tuple[str, int | None, str | None, str | None]] = []
    for f in plan.files:
        if f.kind not in ("plan", "jobs") or f.facts is None or f.status in (
                "corrupt", "foreign", "too_new"):
            continue
        pid = f.db.plan_id if f.kind == "plan" else None
        for job_id, job_type, created in f.facts.jobs:
            if job_id not in indexed:
                missing.append((job_id, pid, job_type, created))
    if missing:
        run.add("index_jobs", "main/plan_registry.db",
                f"add {len(missing)} job(s) found in files to the registry's job index",
                _index_jobs_fn(run, missing), jobs=[m[0] for m in missing])


def plan_reserve_ids(run: Run, plan: RootPlan) -> None:
    """Raise the registry's plan id sequence above every id a file or row ever used."""
    top = plan.max_plan_id()
    if top > plan.sequence:
        run.add("reserve_ids", "main/plan_registry.db",
                f"plan id sequence {plan.sequence} -> at least {top}: no new plan may take an "
                "id a file (or a quarantined file) already uses", _reserve_fn(run, top),
                sequence=plan.sequence, reserved=top)


# --- the steps -------------------------------------------------------------------------------


def _backup_fn(run: Run, f: RootFile):
    def go() -> dict:
        b = run.backups.take(f.path, f"root/{f.rel}", fingerprint(f.path))
        return {"copy": b.copy, "reused": b.reused}
    return go


def _quarantine_fn(run: Run, f: RootFile, why: str):
    def go() -> dict:
        qdir = quarantine(run.config.root, f.path, f.rel, why, move=True)
        return {"moved_to": run.rel(qdir)}
    return go


def _open_legacy(run: Run, path: Path) -> apsw.Connection:
    return open_connection(path, create=False, configure=False,
                           busy_timeout_ms=run.config.busy_timeout_ms)


def _fold_wal(run: Run, path: Path) -> None:
    """Fold a database's -wal into the main file and remove it (SQLite does, on last close)."""
    conn = _open_legacy(run, path)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0]
        if str(mode).lower() == "wal":
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
            if busy:
                raise StorageError(f"{path}: in use by another process; cannot fold its -wal")
    except apsw.Error as exc:
        raise translate(exc, path) from exc
    finally:
        conn.close()
    for side in ("-wal", "-journal"):
        p = Path(f"{path}{side}")
        if p.exists() and p.stat().st_size > 0:
            raise StorageError(f"{p} is still there after a clean close; another process has "
                               "the database open. Stop it and run again.")
        p.unlink(missing_ok=True)  # empty: holds no transaction


def _record_session_id(run: Run, path: Path, session_id: str) -> None:
    """Write the session's original id (and file name) into its plan_meta, so that once it
    has its hashed name a rerun still knows which id it holds."""
    conn = _open_legacy(run, path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS plan_meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT OR IGNORE INTO plan_meta (key, value) VALUES ('session_id', ?)",
                     (session_id,))
        conn.execute("INSERT OR IGNORE INTO plan_meta (key, value) VALUES "
                     "('legacy_file_name', ?)", (path.name,))
        conn.execute("COMMIT")
    except apsw.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise translate(exc, path) from exc
    finally:
        conn.close()


def _rename_fn(run: Run, f: RootFile):
    """Record the id in the file, fold its -wal, then rename it (crash-safe in that order: a
    rerun finds either the old name holding its id, or the new name)."""
    def go() -> dict:
        target = f.target
        if not f.path.exists() and target.exists():
            return {"already": True}  # an earlier run renamed it and was cut afterwards
        _record_session_id(run, f.path, f.session_id)
        _fold_wal(run, f.path)
        if target.exists():
            raise StorageError(f"{target} appeared meanwhile; not overwriting it")
        Path(f"{f.path}-shm").unlink(missing_ok=True)  # an index only, rebuilt on open
        os.rename(f.path, target)
        fsync_path(target.parent)
        make_private(target)
        return {"new_path": run.rel(target)}
    return go


def _adopt_fn(run: Run, f: RootFile, path_after_rename: Path):
    kind = f.kind

    def go() -> dict:
        path = path_after_rename if path_after_rename.exists() else f.path
        conn = _open_legacy(run, path)
        try:
            action = schema.ensure_schema(
                conn, path, kind, backup_dir=None,  # the migration took its own backup
                configure=lambda: configure_connection(conn, path, run.config.busy_timeout_ms))
            if kind in ("session", "registry"):
                _fix_embedding_norms(conn, path)
            after = read_facts(conn)
        except apsw.Error as exc:
            raise translate(exc, path) from exc
        finally:
            conn.close()
        make_private(path)
        return {"result": action, "rows_after": _verify_rows(run, f, after)}
    return go


def _verify_rows(run: Run, f: RootFile, after: Facts) -> dict[str, int]:
    """Every row of every table of the kind is still there (dangling edges moved to meta)."""
    out = {}
    for table, t in f.facts.tables.items():
        if table == "plan_meta" or table not in after.tables:
            continue
        now_rows = after.rows(table)
        out[table] = now_rows
        expected = t.rows
        if table == "task_dependencies":
            dangling = jsonutil.loads(after.meta.get("legacy_dangling_edges"), []) or []
            expected -= len(dangling) if isinstance(dangling, list) else 0
            if dangling:
                run.report.problem("dangling_dependency", f.rel,
                                   f"{len(dangling)} dependency edge(s) name tasks that do not "
                                   "exist; kept in plan_meta 'legacy_dangling_edges'",
                                   edges=dangling)
        if now_rows < expected:
            run.report.problem("rows_missing_after_adoption", f.rel,
                               f"{table}: {t.rows} rows before, {now_rows} after",
                               table=table)
    return out


def _fix_embedding_norms(conn: apsw.Connection, path: Path) -> None:
    """Adopted embeddings arrive with norm 0 (the old code did not store it); similarity search
    skips a zero norm, so compute each one from its vector."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
    if "memory_embeddings" not in tables:
        return
    from ..stores.memory import from_blob, norm

    rows = conn.execute("SELECT memory_id, model, vector FROM memory_embeddings "
                        "WHERE norm = 0 AND vector IS NOT NULL").fetchall()
    if not rows:
        return
    with write(conn, path):
        for memory_id, model, blob in rows:
            try:
                value = norm(from_blob(blob))
            except (ValueError, TypeError, PlanDBError):
                continue
            conn.execute("UPDATE memory_embeddings SET norm = ? WHERE memory_id = ? AND "
                         "model = ?", (value, memory_id, model))


def _fill_meta_fn(run: Run, plan_id: int, path: Path):
    def go() -> dict:
        reg_path = run.config.main_db_path
        rconn = _open_legacy(run, reg_path)
        try:
            with read(rconn, reg_path):
                got = rconn.execute(
                    "SELECT title, description, owner, metadata, created_at, updated_at "
                    "FROM plans WHERE id = ?", (plan_id,)).fetchall()
        finally:
            rconn.close()
        if not got:
            return {"skipped": "no registry row"}
        title, description, owner, metadata, created, updated = got[0]
        conn = _open_legacy(run, path)
        changed = {}
        try:
            configure_connection(conn, path, run.config.busy_timeout_ms)
            with write(conn, path) as tx:
                meta = dict(tx.execute("SELECT key, value FROM plan_meta").fetchall())
                want = {"plan_id": str(plan_id), "title": title, "description": description,
                        "owner": owner, "metadata": metadata, "created_at": created,
                        "updated_at": max(updated or "", meta.get("updated_at") or "") or None}
                for key, value in want.items():
                    old = meta.get(key)
                    if old == value or value is None:
                        continue
                    if old is not None and key not in ("updated_at", "created_at", "plan_id"):
                        # The registry's value wins (the older code edited it there); the
                        # file's own value is kept beside it.
                        tx.execute("INSERT OR REPLACE INTO plan_meta (key, value) VALUES "
                                   "(?, ?)", (f"legacy_file_{key}", old))
                    tx.execute("INSERT INTO plan_meta (key, value) VALUES (?, ?) ON CONFLICT "
                               "(key) DO UPDATE SET value = excluded.value", (key, value))
                    changed[key] = value
                tx.execute("INSERT OR REPLACE INTO plan_meta (key, value) VALUES "
                           "('legacy_meta_filled', ?)", (run.stamp,))
        finally:
            conn.close()
        return {"set": sorted(changed)}
    return go


def _reconcile_fn(run: Run):
    def go() -> dict:
        from .reconcile import reconcile

        result = reconcile(run.repo, repair=True)
        kinds: dict[str, int] = {}
        for p in result.problems:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
            if p.kind in ("unreadable_file", "misplaced_file") or (
                    not p.repaired and p.kind != "missing_file"):
                run.report.problem(p.kind, p.path, p.detail, plan_id=p.plan_id)
        return {"found": kinds}
    return go


def _index_jobs_fn(run: Run, missing):
    """Add index entries for jobs found in files. Only additions: an old index row whose job
    file is gone stays (it is the only record of where that job lived)."""
    def go() -> dict:
        from ..stores import jobs
        from ..timestamps import now

        added = 0
        with run.repo._registry() as conn, write(conn, run.config.main_db_path):
            for job_id, pid, job_type, created in missing:
                if jobs.index_get(conn, job_id) is not None:
                    continue
                stamp = schema._legacy_ts(created) if created else None
                jobs.index_put(conn, job_id, pid, job_type or "plan_decompose", stamp or now())
                added += 1
        return {"added": added}
    return go


def _reserve_fn(run: Run, top: int):
    def go() -> dict:
        check_plan_id(top)
        with run.repo._registry() as conn, write(conn, run.config.main_db_path):
            conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'plans'",
                         (top,))
            conn.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'plans', ? WHERE NOT "
                         "EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'plans')", (top,))
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'plans'").fetchall()
        return {"sequence": seq[0][0]}
    return go


def _convert_cache_fn(run: Run, f: RootFile, backup):
    def go() -> dict:
        from .legacy_cache import convert_root_cache

        return convert_root_cache(run, f.path, run.config.root / backup.data["copy"])
    return go
