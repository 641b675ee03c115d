"""Schema versions: plan_meta, the migration runner over ``schemas/<kind>/NNNN_*.sql``.

Every file plandb manages records ``kind`` and ``schema_version`` in its own ``plan_meta``
table, mirrored in ``PRAGMA user_version`` so that the open path checks one integer.

`ensure_schema` runs on each physical open:

- version current and kind right: nothing to do (two cheap reads);
- newer than this code, or another kind: refused with `SchemaTooNew` / `WrongDatabaseKind`,
  the file untouched;
- new or older: under a cross-process `filelock` beside the file, re-checked, backed up with
  SQLite's backup API into ``backups/`` if it holds data, then every pending step plus its
  version bump runs in ONE transaction. A failure rolls the file back to exactly how it was.
- a file written by the older planner code (tables of this kind, no ``kind`` recorded) is
  *adopted*: its tables are rebuilt in the current shape, copying columns by name, in the same
  single transaction (see `adopt_legacy`).

`pending_steps(path, kind)` answers "what would run" read-only, creating no file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import apsw
import filelock

from .config import FILE_MODE
from .errors import (
    CorruptDatabase,
    LockTimeout,
    MigrationFailed,
    PlanDBError,
    SchemaTooNew,
    WrongDatabaseKind,
    translate,
)
from .timestamps import now

KINDS = ("registry", "plan", "jobs", "session", "cache")
LOCK_TIMEOUT_S = 60.0

_STEP = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_INCLUDE = re.compile(r"^--\s*@include\s+([a-z0-9_/]+\.sql)\s*$", re.M)

# Per-kind fix-ups run inside the adoption transaction, after rows were copied by column name.
# Stores register them (the plan store recomputes tree paths, for instance).
ADOPT_HOOKS: dict[str, list[Callable[[apsw.Connection], None]]] = {k: [] for k in KINDS}
# Legacy column names that changed: {kind: {table: {old_name: new_name}}}.
LEGACY_RENAMES: dict[str, dict[str, dict[str, str]]] = {
    "plan": {
        "tasks": {"metadata_json": "metadata", "context_sections_json": "context_sections",
                  "context_meta_json": "context_meta"},
        "decomposition_jobs": {"params_json": "params", "metadata_json": "metadata",
                               "stats_json": "stats", "result_json": "result"},
        "decomposition_job_logs": {"metadata_json": "metadata"},
        "plan_action_logs": {"parameters_json": "parameters", "details_json": "details"},
        "snapshots": {"snapshot_json": "snapshot"},
    },
    "registry": {
        "plans": {"metadata_json": "metadata"},
        "chat_sessions": {"metadata_json": "metadata"},
        "chat_messages": {"metadata_json": "metadata"},
        "chat_action_runs": {"context_json": "context", "history_json": "history",
                             "structured_json": "structured", "result_json": "result",
                             "errors_json": "errors"},
        "memories": {"metadata_json": "metadata"},
        "memory_embeddings": {"embedding": "vector"},
    },
    "session": {
        "memories": {"metadata_json": "metadata"},
        "memory_embeddings": {"embedding": "vector"},
    },
}
LEGACY_RENAMES["jobs"] = LEGACY_RENAMES["plan"]
# Values computed while copying legacy rows, {kind: {table: {column: (sql, when)}}}; `when` is
# "missing" (only if the legacy table lacks the column) or "always". The SQL may name legacy
# columns that every legacy shape of the table has. Fixed strings, never input.
LEGACY_EXPRS: dict[str, dict[str, dict[str, tuple[str, str]]]] = {
    "plan": {
        # Paths are recomputed from parent links by the tree hook; a unique placeholder first
        # (legacy paths may be NULL, in another format, or duplicated).
        "tasks": {"path": ("'#' || \"id\"", "always")},
        "plan_action_logs": {
            "sequence": ("row_number() OVER (PARTITION BY \"job_id\" ORDER BY \"id\")",
                         "missing")},
    },
    "registry": {
        "plans": {"plan_file": ("'plans/plan_' || \"id\" || '.sqlite'", "missing")},
    },
}
LEGACY_EXPRS["jobs"] = {"plan_action_logs": LEGACY_EXPRS["plan"]["plan_action_logs"]}


def schemas_dir() -> Path:
    """The installed copy (``plandb/schemas`` in a wheel) or the source tree's ``schemas/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "schemas", here.parent / "schemas"):
        if (candidate / "plan").is_dir():
            return candidate
    raise PlanDBError(f"schema files not found next to {here}; reinstall plandb")


@dataclass(frozen=True, slots=True)
class Step:
    """One numbered schema step of one kind."""

    kind: str
    version: int
    name: str
    sql: str


def _expand(sql: str, root: Path) -> str:
    return _INCLUDE.sub(lambda m: (root / m.group(1)).read_text(), sql)


@cache
def steps(kind: str) -> tuple[Step, ...]:
    """Every step of `kind`, in order; versions must be 1..N without gaps."""
    if kind not in KINDS:
        raise ValueError(f"unknown database kind {kind!r}")
    root = schemas_dir()
    found = []
    for p in sorted((root / kind).iterdir()):
        m = _STEP.fullmatch(p.name)
        if m:
            found.append(Step(kind, int(m.group(1)), m.group(2), _expand(p.read_text(), root)))
    for i, step in enumerate(found, 1):
        if step.version != i:
            raise PlanDBError(f"schemas/{kind}: step {i:04d} missing (found {step.version:04d})")
    return tuple(found)


def latest_version(kind: str) -> int:
    return len(steps(kind))


# --- reading a file's state ------------------------------------------------------------------


@dataclass(slots=True)
class FileState:
    """What a database file says about itself."""

    user_version: int
    kind: str | None
    meta_version: str | None
    tables: frozenset[str]

    @property
    def is_empty(self) -> bool:
        return not self.tables

    def version(self) -> int:
        """The schema version: user_version, else plan_meta's (legacy files), else 0."""
        if self.user_version:
            return self.user_version
        try:
            return int(self.meta_version or 0)
        except ValueError:
            return 0


def read_state(conn: apsw.Connection) -> FileState:
    """Read version, kind and table names; raises apsw errors for unreadable files."""
    uv = conn.execute("PRAGMA user_version").fetchall()[0][0]
    tables = frozenset(
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    )
    kind = meta_version = None
    if "plan_meta" in tables:
        try:
            rows = dict(
                conn.execute(
                    "SELECT key, value FROM plan_meta WHERE key IN ('kind', 'schema_version')"
                ).fetchall()
            )
        except apsw.SQLError:  # a legacy plan_meta of another shape
            rows = {}
        kind, meta_version = rows.get("kind"), rows.get("schema_version")
        kind = str(kind) if kind is not None else None
        meta_version = str(meta_version) if meta_version is not None else None
    return FileState(uv, kind, meta_version, tables)


def _defined_tables(kind: str) -> set[str]:
    names: set[str] = set()
    for step in steps(kind):
        names.update(re.findall(r"CREATE\s+(?:VIRTUAL\s+)?TABLE\s+(?:IF NOT EXISTS\s+)?(\w+)",
                                step.sql, re.I))
    return names


def classify(state: FileState, kind: str, path: Path | str) -> str:
    """'current', 'create', 'upgrade' or 'adopt'; raises for too-new or wrong-kind files."""
    if state.kind is not None and state.kind != kind:
        raise WrongDatabaseKind(path, kind, state.kind)
    latest = latest_version(kind)
    if state.kind == kind:
        v = state.version()
        if v > latest:
            raise SchemaTooNew(path, kind, v, latest)
        return "current" if v == latest and state.user_version == latest else "upgrade"
    if state.is_empty:
        return "create"
    ours = _defined_tables(kind) - {"plan_meta"}
    if state.tables & ours:
        return "adopt"
    raise WrongDatabaseKind(path, kind, None)


# --- running steps ---------------------------------------------------------------------------


def pending_steps(path: str | os.PathLike, kind: str) -> list[Step]:
    """Steps that opening `path` would run (all of them for a missing file). Read-only."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return list(steps(kind))
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        state = read_state(conn)
    except apsw.Error as exc:
        raise translate(exc, path) from exc
    finally:
        conn.close()
    action = classify(state, kind, path)
    if action == "current":
        return []
    if action in ("create", "adopt"):
        return list(steps(kind))
    return [s for s in steps(kind) if s.version > state.version()]


def backup_file(conn: apsw.Connection, dest: Path) -> Path:
    """Consistent copy of an open database via SQLite's backup API (WAL content included)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.close(fd)
    target = apsw.Connection(str(dest))
    try:
        with target.backup("main", conn, "main") as b:
            while not b.done:
                b.step(1024)
    finally:
        target.close()
    return dest


def ensure_schema(
    conn: apsw.Connection,
    path: Path,
    kind: str,
    *,
    backup_dir: Path | None = None,
    configure: Callable[[], None] | None = None,
) -> str:
    """Bring the open file at `path` to the latest `kind` schema; return what was done.

    The file is classified first; a too-new, foreign or corrupt file raises before anything is
    written. `configure` (the connection's WAL/pragmas step) runs only after that check.
    """
    try:
        state = read_state(conn)
    except (apsw.NotADBError, apsw.CorruptError) as exc:
        raise CorruptDatabase(path, str(exc)) from exc
    action = classify(state, kind, path)
    if configure is not None:
        configure()
    if action == "current":
        return "current"
    lock = filelock.FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S, mode=FILE_MODE)
    try:
        with lock:
            return _migrate_locked(conn, path, kind, backup_dir)
    except filelock.Timeout as exc:
        raise LockTimeout(f"{path}: schema lock held by another process > {LOCK_TIMEOUT_S}s") from exc


def _migrate_locked(conn, path: Path, kind: str, backup_dir: Path | None) -> str:
    state = read_state(conn)  # again: another process may have done it while we waited
    action = classify(state, kind, path)
    if action == "current":
        return action
    if action != "create" and backup_dir is not None:
        stamp = now().replace(":", "").replace("-", "").replace(".", "")
        backup_file(conn, backup_dir / f"{path.name}.v{state.version()}.{stamp}.bak")
    todo = steps(kind) if action in ("create", "adopt") else [
        s for s in steps(kind) if s.version > state.version()
    ]
    conn.execute("PRAGMA foreign_keys=OFF")  # table rebuilds; checked before COMMIT instead
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if action == "adopt":
                adopt_legacy(conn, kind, state)
            else:
                for step in todo:
                    conn.execute(step.sql)
            _check_foreign_keys(conn, path)
            set_meta(conn, kind, latest_version(kind), adopted_from=(state.meta_version or "none")
                     if action == "adopt" else None)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, PlanDBError):
                raise
            raise MigrationFailed(
                path, f"upgrading {kind} schema failed and was rolled back: {exc}"
            ) from exc
    finally:
        conn.execute("PRAGMA foreign_keys=ON")
    return action


def set_meta(conn: apsw.Connection, kind: str, version: int, adopted_from=None) -> None:
    """Record kind and version in plan_meta and user_version (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO plan_meta (key, value) VALUES ('kind', ?), ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (kind, str(version)),
    )
    if adopted_from is not None:
        conn.execute(
            "INSERT OR REPLACE INTO plan_meta (key, value) VALUES ('adopted_from_version', ?)",
            (adopted_from,),
        )
    conn.execute(f"PRAGMA user_version = {int(version)}")  # an int we computed, never input


def _check_foreign_keys(conn: apsw.Connection, path: Path) -> None:
    bad = conn.execute("PRAGMA foreign_key_check").fetchall()
    if bad:
        raise MigrationFailed(path, f"foreign key check failed after upgrade: {bad[:5]}")


# --- adopting legacy files -------------------------------------------------------------------


def _columns(conn: apsw.Connection, table: str) -> list[tuple[str, str, bool, object]]:
    """(name, declared type, notnull, default) of each column. `table` is never user input."""
    return [
        (r[1], (r[2] or "").upper(), bool(r[3]), r[4])
        for r in conn.execute("SELECT * FROM pragma_table_info(?)", (table,))
    ]


_EPOCH = re.compile(r"\d{9,10}(\.\d+)?|\d{12,13}")  # seconds, or milliseconds, since 1970
_STORED_GLOB = "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].*Z'"


def _legacy_ts(value):
    """SQL function: a legacy timestamp (CURRENT_TIMESTAMP text, ISO, epoch) in the stored
    format; anything unrecognisable is kept exactly as it was (never lost)."""
    from .timestamps import normalize

    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str) and _EPOCH.fullmatch(value):
        # Epoch numbers arrive as digit strings: the TEXT column converted them on copy.
        seconds = float(value)
        value = seconds / 1000 if len(value.split(".")[0]) >= 12 else seconds
    try:
        return normalize(value)
    except (PlanDBError, ValueError, OverflowError, OSError):
        return value


def _all_tables(conn: apsw.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}


def adopt_legacy(conn: apsw.Connection, kind: str, state: FileState) -> None:
    """Rebuild a legacy file's tables in the current shape, copying columns by name.

    Tables this kind defines are renamed aside, the full schema is created, rows are copied by
    column name (legacy files hold columns in other orders, or lack some), NOT NULL columns the
    old rows lack get a neutral value, legacy ``CURRENT_TIMESTAMP`` text is normalised, the kind's
    hooks fix what copying cannot (tree paths, positions), and the old tables are dropped.
    Tables the kind does not know are left exactly as they were. Runs inside the caller's
    transaction.
    """
    ours = _defined_tables(kind)
    legacy = sorted((state.tables & ours) - {"plan_meta"})
    # Old indexes, triggers and views would clash with the new schema's names.
    for typ, name in conn.execute(
        "SELECT type, name FROM sqlite_schema WHERE type IN ('index', 'trigger', 'view') "
        "AND sql IS NOT NULL"
    ).fetchall():
        if typ == "index":
            owner = conn.execute(
                "SELECT tbl_name FROM sqlite_schema WHERE name = ?", (name,)
            ).fetchall()[0][0]
            if owner not in legacy:
                continue
        conn.execute(f'DROP {typ.upper()} IF EXISTS "{name}"')  # names from sqlite_schema
    # AUTOINCREMENT counters: a legacy table may have handed out ids above its max(id) (rows
    # since deleted); the rebuilt table must never hand them out again.
    sequences = dict(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall()) if \
        "sqlite_sequence" in _all_tables(conn) else {}
    for table in legacy:
        conn.execute(f'ALTER TABLE "{table}" RENAME TO "_legacy_{table}"')
    for step in steps(kind):
        conn.execute(step.sql)
    renames = LEGACY_RENAMES.get(kind, {})
    computed = LEGACY_EXPRS.get(kind, {})
    stamp = now()
    conn.create_scalar_function("plandb_legacy_ts", _legacy_ts, 1, deterministic=True)
    for table in legacy:
        new_cols = _columns(conn, table)
        old_names = {c[0] for c in _columns(conn, f"_legacy_{table}")}
        back = {new: old for old, new in renames.get(table, {}).items() if old in old_names}
        targets, exprs = [], []
        for name, typ, notnull, default in new_cols:
            src = name if name in old_names else back.get(name)
            expr, when = computed.get(table, {}).get(name, (None, None))
            if expr is not None and (when == "always" or src is None):
                targets.append(name)
                exprs.append(expr)
                continue
            fill = None
            if notnull:
                if default is not None:
                    fill = str(default)  # the column's own DEFAULT, as SQL text
                elif name.endswith("_at") or name == "timestamp":
                    fill = f"'{stamp}'"
                else:
                    fill = "0" if "INT" in typ else "''"
            if src is None:
                if fill is None or default is not None:
                    continue  # the column's DEFAULT applies
                targets.append(name)
                exprs.append(fill)
            else:
                targets.append(name)
                exprs.append(f'COALESCE("{src}", {fill})' if fill else f'"{src}"')
        # Identifiers come from sqlite_schema and our own schema files, never from users.
        conn.execute(
            f'INSERT INTO "{table}" ({", ".join(targets)}) '
            f'SELECT {", ".join(exprs)} FROM "_legacy_{table}"'
        )
        for name, _typ, _nn, _d in new_cols:
            if name.endswith("_at") or name == "timestamp":
                conn.execute(f'UPDATE "{table}" SET "{name}" = plandb_legacy_ts("{name}") '
                             f'WHERE "{name}" IS NOT NULL AND "{name}" NOT GLOB {_STORED_GLOB}')
        old_seq = sequences.get(table)
        conn.execute(f'DROP TABLE "_legacy_{table}"')
        if old_seq is not None:
            conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?",
                         (old_seq, table))
            conn.execute("INSERT INTO sqlite_sequence (name, seq) SELECT ?, ? WHERE NOT EXISTS "
                         "(SELECT 1 FROM sqlite_sequence WHERE name = ?)",
                         (table, old_seq, table))
    if "plan_meta" in state.tables:
        conn.execute("UPDATE plan_meta SET value = plandb_legacy_ts(value) WHERE key LIKE "
                     f"'%\\_at' ESCAPE '\\' AND value NOT GLOB {_STORED_GLOB}")
    for hook in ADOPT_HOOKS.get(kind, ()):
        hook(conn)
