"""Finding the database files under a DB_ROOT, and reading them without writing anything.

`database_files(root)` lists every database file of the layout with the kind its place implies
(``plans/plan_7.sqlite`` -> plan). `read_snapshot(path, fn)` reads one and guarantees
that nothing under the root is created or changed, which a plain ``SQLITE_OPEN_READONLY`` open
of a WAL database does not: SQLite creates the ``-wal`` and ``-shm`` side files when they are
missing, and leaves them behind. So:

- no ``-wal`` beside the file: no connection has it open and every committed page is in the
  main file. It is opened ``immutable=1`` (no locks, no side files), and the file's identity
  (inode, size, mtime) is compared before and after the read; if a writer appeared meanwhile
  the read is retried the other way.
- ``-wal`` and ``-shm`` present (a live writer, or one that crashed): opened ``mode=ro`` with
  ``readonly_shm=1``, so SQLite maps the index read-only (and rebuilds it in private memory
  when it needs recovery) instead of writing it.
- ``-wal`` without ``-shm``: cannot be read without writing; `NeedsRecovery` says so (a normal
  open, as ``plandb doctor --repair`` does, recovers it) if it lasts: the last connection's
  close passes through this state too (it removes the -shm first), so it is looked at again.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import apsw

from ..config import plan_id_from_filename
from ..errors import CorruptDatabase, DatabaseFileError, NeedsRecovery, SchemaOutdated, translate

# Folders that hold live databases; temp/ and backups/ hold transient files and copies.
DATA_FOLDERS = ("main", "plans", "jobs", "sessions", "cache")
DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SIDE_SUFFIXES = ("-wal", "-shm", "-journal", ".lock")
MAGIC = b"SQLite format 3\x00"


@dataclass(slots=True)
class DbFile:
    """One database file found under the root."""

    path: Path
    rel: str  # relative to the root, with '/' separators
    folder: str
    expected_kind: str | None  # what its place in the layout says; None for a stray file
    plan_id: int | None = None

    def side_files(self) -> list[Path]:
        return [Path(f"{self.path}{s}") for s in ("-wal", "-shm")]


def expected_kind(folder: str, name: str) -> tuple[str | None, int | None]:
    """(kind, plan id) a file's place in the layout implies."""
    if folder == "main" and name == "plan_registry.db":
        return "registry", None
    if folder == "plans":
        pid = plan_id_from_filename(name)
        return ("plan", pid) if pid is not None else (None, None)
    if folder == "jobs" and name == "system_jobs.sqlite":
        return "jobs", None
    if folder == "sessions" and name.startswith("session_") and name.endswith(".sqlite"):
        return "session", None
    if folder == "cache" and name.endswith("_cache.db"):
        return "cache", None
    return None, None


def _is_database_name(entry: os.DirEntry) -> bool:
    name = entry.name
    if name.startswith(".") or name.endswith(SIDE_SUFFIXES):
        return False
    if name.endswith(DB_SUFFIXES):
        return True
    try:  # a stray file with another name counts only if it is really SQLite
        with open(entry.path, "rb") as f:
            return f.read(16) == MAGIC
    except OSError:
        return False


def database_files(root: Path, folders: tuple[str, ...] = DATA_FOLDERS) -> list[DbFile]:
    """Every database file in the data folders of `root`, registry first, plans by id."""
    found: list[DbFile] = []
    for folder in folders:
        base = root / folder
        try:
            entries = list(os.scandir(base))
        except FileNotFoundError:
            continue
        batch = []
        for entry in entries:
            if not entry.is_file(follow_symlinks=False) or not _is_database_name(entry):
                continue
            kind, pid = expected_kind(folder, entry.name)
            batch.append(DbFile(Path(entry.path), f"{folder}/{entry.name}", folder, kind, pid))
        batch.sort(key=lambda f: (f.plan_id is None, f.plan_id or 0, f.rel))
        found.extend(batch)
    return found


def _uri(path: str, **params: str) -> str:
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?" + urllib.parse.urlencode(
        params)


def _identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


_FLAGS = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI


def _connect(path: str, busy_timeout_ms: int,
             shared_shm: bool = False) -> tuple[apsw.Connection, bool]:
    """(connection, whether it was opened immutable); see the module doc for the two ways.

    ``shared_shm=True`` is the fallback for a -shm left inconsistent by a killed writer, which
    ``readonly_shm`` cannot recover ("locking protocol"): a plain read-only open may rebuild
    the -shm index (both side files already exist, so nothing is created and no database
    page is written)."""
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    immutable = not os.path.exists(path + "-wal")
    if immutable:
        uri = _uri(path, immutable="1")
    elif not os.path.exists(path + "-shm"):
        raise NeedsRecovery(path)
    elif shared_shm:
        uri = _uri(path, mode="ro")
    else:
        uri = _uri(path, mode="ro", readonly_shm="1")
    try:
        conn = apsw.Connection(uri, flags=_FLAGS)
    except apsw.Error as exc:
        raise _translated(exc, path) from exc
    conn.set_busy_timeout(busy_timeout_ms)
    return conn, immutable


def _translated(exc: BaseException, path: str):
    if isinstance(exc, apsw.CantOpenError) and os.path.exists(path + "-wal") \
            and not os.path.exists(path + "-shm"):
        return NeedsRecovery(path)
    if isinstance(exc, apsw.NotADBError | apsw.CorruptError):
        return CorruptDatabase(path, str(exc))
    return translate(exc, path)


def read_snapshot(path: str | os.PathLike, fn, *, busy_timeout_ms: int = 10_000,
                  attempts: int = 5):
    """Run ``fn(conn)`` on a read-only view of `path` and return its result.

    apsw errors raised by `fn` are translated. When the file was read ``immutable`` and a
    writer touched it during the read, the result is thrown away and the read is repeated
    (it then goes through the -wal/-shm path, which is safe with live writers).
    """
    path = os.fspath(path)
    shared_shm = False
    for attempt in range(attempts):
        before = _identity(path)
        try:
            conn, immutable = _connect(path, busy_timeout_ms, shared_shm)
        except NeedsRecovery:
            # Also a passing state: SQLite's last close removes the -shm before the -wal.
            if attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
            continue
        try:
            try:
                result = fn(conn)
            except apsw.ProtocolError as exc:
                if immutable or shared_shm:
                    raise _translated(exc, path) from exc
                shared_shm = True  # a stale -shm from a killed writer: see _connect
                continue
            except apsw.Error as exc:
                raise _translated(exc, path) from exc
        finally:
            conn.close()
        if not immutable:
            return result
        if _identity(path) == before and not os.path.exists(path + "-wal"):
            return result
        time.sleep(0.01 * (attempt + 1))  # a writer is busy with it; look again
    raise DatabaseFileError(path, "kept changing while it was read; try again when it is idle")


def file_sizes(path: Path) -> tuple[int, int, float]:
    """(bytes of the file + its -wal, bytes of the -wal, latest mtime of the two)."""
    size = wal_size = 0
    mtime = 0.0
    for p, is_wal in ((path, False), (Path(f"{path}-wal"), True)):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        size += st.st_size
        mtime = max(mtime, st.st_mtime)
        if is_wal:
            wal_size = st.st_size
    return size, wal_size, mtime


def folder_usage(folder: Path) -> tuple[int, int]:
    """(files, bytes) below `folder`, recursively, without opening anything."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
            except FileNotFoundError:
                continue
    return files, size


def check_current(path: Path, kind: str) -> None:
    """Refuse, without writing, a file a read-only command must not open through the
    repository: too new (`SchemaTooNew`), another kind (`WrongDatabaseKind`), or in need of
    an upgrade (`SchemaOutdated`), which the repository would otherwise run on open. A
    missing file passes: the caller decides what absence means."""
    from .. import schema

    if not os.path.exists(path):
        return
    state = read_snapshot(path, schema.read_state)
    if schema.classify(state, kind, path) != "current":
        raise SchemaOutdated(path, kind, state.version(), schema.latest_version(kind))


__all__ = ["DATA_FOLDERS", "DbFile", "NeedsRecovery", "check_current", "database_files",
           "expected_kind", "file_sizes", "folder_usage", "read_snapshot"]
