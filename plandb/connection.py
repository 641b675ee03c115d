"""Opening apsw connections, and a bounded, thread-safe cache of them.

Every connection plandb uses is opened here, with its policy applied as small named steps
(`OPEN_STEPS`). If a step fails the connection is closed before the error is raised, so no
half-configured connection ever escapes.

`ConnectionPool` keeps at most `max_open_files` connections (LRU): a root with 100,000 plan files
never means 100,000 open descriptors. Each cached connection has its own re-entrant lock; a
caller holds it for the duration of a read or write, so two threads never interleave statements
of two transactions on one connection. A connection in use is never evicted.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import apsw

from . import checkpoints
from .config import FILE_MODE, make_private
from .errors import RepositoryClosed, StorageError, translate
from .transaction import BusyWait, retry_busy


class Connection(apsw.Connection):
    """An apsw connection that keeps one cursor, `cur`, for plandb's own short statements.

    ``conn.execute`` makes a new cursor per statement, which on a small write costs about what
    the statement does (BEGIN + COMMIT: 4.0 us with a cursor each, 1.6 us on one kept cursor).
    Use ``cur.execute(sql, params)`` only for statements run to completion at once: without
    rows, or followed by ``.fetchall()``. A statement left half-read on it would keep its read
    snapshot open, and iterating it while another statement runs on it would break the
    iteration; anything that iterates lazily uses ``conn.execute``.
    """

    __slots__ = ("cur",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cur = self.cursor()


# --- open steps ------------------------------------------------------------------------------


def connection_busy_timeout(conn: apsw.Connection, ms: int) -> None:
    """Wait up to `ms` for another writer instead of failing at once (apsw's default is 0).

    plandb's `BusyWait` handler, not SQLite's timeout: it polls from 0.1 ms instead of 1, 2,
    5, 10 ms steps (so ``PRAGMA busy_timeout`` reads 0)."""
    conn.set_busy_handler(BusyWait(ms))


def connection_wal(conn: apsw.Connection, ms: int) -> None:
    """WAL: readers never block the writer and the writer never blocks readers.

    Also checks that the file really is a SQLite database: garbage fails here, not later.
    """
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
    if str(mode).lower() != "wal":  # e.g. a file on a filesystem without shared memory
        raise StorageError(f"could not switch to WAL (journal_mode={mode})")


def connection_synchronous(conn: apsw.Connection, ms: int) -> None:
    """NORMAL is durable against process crashes in WAL mode; fsyncs happen at checkpoints."""
    conn.execute("PRAGMA synchronous=NORMAL")


def connection_foreign_keys(conn: apsw.Connection, ms: int) -> None:
    """Enforce REFERENCES clauses (off by default in SQLite, per connection)."""
    conn.execute("PRAGMA foreign_keys=ON")


def connection_checkpoints(conn: apsw.Connection, ms: int) -> None:
    """Auto-checkpoint every 1000 pages (SQLite's default, stated so it is a decision).

    This is the inline checkpoint, paid by the committing call: for short-lived connections
    and for pools with background checkpoints off. Measured against 4000 pages: the same write
    rates, but a 4000-page checkpoint is one large pause on whichever call crosses the line
    (W1-flat's last 200 calls ran at half the rate of the first 200 when it fell there).
    Pooled connections replace it with `plandb.checkpoints` (asked at 2000 pages: its pauses
    are a restart's two fsyncs, whatever the size). close() checkpoints fully."""
    conn.wal_autocheckpoint(1000)


OPEN_STEPS: tuple[Callable[[apsw.Connection, int], None], ...] = (
    connection_busy_timeout,
    connection_wal,
    connection_synchronous,
    connection_foreign_keys,
    connection_checkpoints,
)


def configure_connection(conn: apsw.Connection, path: Path, busy_timeout_ms: int) -> None:
    """Apply every OPEN_STEPS step (the caller closes the connection if one fails).

    The switch to WAL can meet SQLITE_BUSY at once, without the busy handler ever waiting: on a
    file not yet in WAL (a new one that another process is creating too) it is a read
    transaction upgraded to a write, and SQLite fails such upgrades instead of waiting (deadlock
    avoidance). The steps are idempotent, so they are retried with backoff until the busy
    timeout is spent, then `DatabaseBusy` reports the time waited.
    """

    def apply() -> None:
        for step in OPEN_STEPS:
            step(conn, busy_timeout_ms)

    retry_busy(apply, path=path, budget_ms=busy_timeout_ms)
    make_private(path)


def _precreate_private(path: Path) -> None:
    """Create an empty 0600 file so SQLite (and its -wal/-shm, which copy the mode) is private.

    O_EXCL: if another process created it first we simply open theirs.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def open_connection(
    path: str | os.PathLike,
    *,
    create: bool = True,
    readonly: bool = False,
    busy_timeout_ms: int = 10_000,
    configure: bool = True,
) -> apsw.Connection:
    """Open one database file with plandb's connection policy.

    ``readonly=True`` opens with SQLITE_OPEN_READONLY and applies only the busy timeout (no WAL
    switch, nothing written): for inspect and doctor, which must never change a file.
    ``configure=False`` applies only the busy timeout, so a caller can check what the file is
    before anything (such as the switch to WAL) writes to it, then call `configure`.
    Raises `FileNotFoundError` if the file is missing and ``create`` is false, and
    `CorruptDatabase` when the file is not a SQLite database.
    """
    path = Path(path)
    if readonly or not create:
        if not path.exists():
            raise FileNotFoundError(str(path))
    else:
        _precreate_private(path)
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE
    try:
        conn = Connection(str(path), flags=flags)
    except apsw.Error as exc:
        raise translate(exc, path) from exc
    try:
        if readonly or not configure:
            connection_busy_timeout(conn, busy_timeout_ms)
            # Touch the header so garbage files fail now with a clear error.
            conn.execute("PRAGMA schema_version").fetchall()
        else:
            configure_connection(conn, path, busy_timeout_ms)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, apsw.Error):
            raise translate(exc, path) from exc
        raise
    return conn


# --- the pool --------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Handle:
    """One cached connection, its lock, and per-connection state callers may keep (`cache`)."""

    path: Path
    conn: apsw.Connection
    lock: threading.RLock = field(default_factory=threading.RLock)
    cache: dict = field(default_factory=dict)
    users: int = 0  # nesting depth of use() (the lock is re-entrant, so it cannot tell)
    retired: bool = False  # out of the pool (evicted, discarded): take a fresh handle
    _moved: ctypes.c_int = field(default_factory=ctypes.c_int)  # SQLite writes the answer here

    def file_moved(self) -> bool:
        """True if the file this connection opened has since been deleted, renamed or replaced
        (another process deleted the plan, a restore swapped the file in): writing through it
        would be acknowledged and lost. SQLite's own check (SQLITE_FCNTL_HAS_MOVED: one stat
        compared with the inode it opened), far cheaper than an os.stat from Python."""
        moved = self._moved
        self.conn.file_control("main", _HAS_MOVED, ctypes.addressof(moved))
        return moved.value != 0


_HAS_MOVED = apsw.SQLITE_FCNTL_HAS_MOVED


def _key(path: str | os.PathLike) -> str:
    # Pool keys are str: hashing a pathlib.Path runs Python code, a str hash is cached in C.
    return path if type(path) is str else os.fspath(path)


class ConnectionPool:
    """LRU cache of open connections, one per file, bounded by `max_open`.

    ``on_open(conn, path)`` runs once per physical open, while the handle's lock is held, before
    anyone else can use the connection. The connection arrives with only its busy timeout set:
    on_open checks what the file is, then calls `configure_connection` (WAL etc.), so a foreign
    or too-new file is refused before anything writes to it. Without on_open the pool
    configures the connection itself. Pooled connections checkpoint in the background
    (`plandb.checkpoints`) unless ``background_checkpoints=False``.
    """

    def __init__(
        self,
        max_open: int = 64,
        busy_timeout_ms: int = 10_000,
        *,
        background_checkpoints: bool = True,
    ):
        self.max_open = max_open
        self.busy_timeout_ms = busy_timeout_ms
        self.background_checkpoints = background_checkpoints
        self._handles: OrderedDict[str, Handle] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self.opens = 0  # physical opens, for tests and the benchmark

    @contextmanager
    def use(
        self,
        path: str | os.PathLike,
        on_open: Callable[[apsw.Connection, Path], None] | None = None,
        *,
        create: bool = True,
    ) -> Iterator[Handle]:
        """Yield the cached handle for `path`, holding its lock; open it if needed."""
        handle = self.acquire(path, on_open, create=create)
        try:
            yield handle
        finally:
            self.release(handle)

    def acquire(self, path: str | os.PathLike,
                on_open: Callable[[apsw.Connection, Path], None] | None = None,
                *, create: bool = True) -> Handle:
        """`use` without the context manager, for hot paths: pair it with `release`."""
        key = _key(path)
        while True:
            with self._lock:
                if self._closed:
                    raise RepositoryClosed("the connection pool is closed; open a new repository")
                handle = self._handles.get(key)
                if handle is not None:
                    self._handles.move_to_end(key)
            if handle is None:
                handle = self._open(key, on_open, create)
                if handle is None:
                    continue  # another thread opened it meanwhile: use theirs
            else:
                handle.lock.acquire()
                if handle.retired:  # evicted or discarded between lookup and lock
                    handle.lock.release()
                    continue
            handle.users += 1
            return handle

    @staticmethod
    def release(handle: Handle) -> None:
        """Give back a handle from `acquire` (once per acquire)."""
        handle.users -= 1
        handle.lock.release()

    def _open(self, key: str, on_open, create: bool) -> Handle | None:
        """Open `key` and add it to the pool, locked; None if another thread added it first."""
        path = Path(key)
        conn = open_connection(path, create=create, busy_timeout_ms=self.busy_timeout_ms,
                               configure=on_open is None)
        handle = Handle(path, conn)
        handle.lock.acquire()
        try:
            if on_open is not None:
                on_open(conn, path)  # must call configure_connection once the file checks out
            if self.background_checkpoints:
                checkpoints.attach(conn)
        except BaseException as exc:
            handle.lock.release()
            conn.close()
            if isinstance(exc, apsw.Error):
                raise translate(exc, path) from exc
            raise
        with self._lock:
            self.opens += 1
            if key not in self._handles and not self._closed:
                self._handles[key] = handle
                self._evict_locked(keep=handle)
                return handle
            closed = self._closed
        handle.lock.release()
        _close_quietly(conn)
        if closed:
            raise RepositoryClosed("the connection pool is closed; open a new repository")
        return None

    def _evict_locked(self, keep: Handle) -> None:
        """Close least-recently-used idle connections until within the bound."""
        if len(self._handles) <= self.max_open:
            return
        for key in list(self._handles):
            if len(self._handles) <= self.max_open:
                break
            handle = self._handles[key]
            if handle is not keep and handle.lock.acquire(blocking=False):
                if handle.users:  # held further up this very thread's stack
                    handle.lock.release()
                    continue
                try:
                    del self._handles[key]
                    handle.retired = True
                    _close_quietly(handle.conn)
                finally:
                    handle.lock.release()

    def discard(self, path: str | os.PathLike) -> None:
        """Close and forget the connection for `path` (before deleting or replacing the file);
        a background checkpoint of it in progress is waited for, pending ones dropped."""
        key = _key(path)
        with self._lock:
            handle = self._handles.pop(key, None)
            if handle is not None:
                handle.retired = True
        checkpoints.CHECKPOINTER.forget(key)
        if handle is not None:
            with handle.lock:
                _close_quietly(handle.conn)

    def discard_under(self, folder: Path) -> None:
        """Close every cached connection to a file below `folder`."""
        with self._lock:
            keys = [k for k in self._handles if folder in Path(k).parents]
        for key in keys:
            self.discard(key)

    def open_count(self) -> int:
        with self._lock:
            return len(self._handles)

    def close(self) -> None:
        """Close every connection; later use raises RepositoryClosed. Idempotent."""
        with self._lock:
            self._closed = True
            handles = list(self._handles.values())
            self._handles.clear()
            for handle in handles:
                handle.retired = True
        for handle in handles:
            checkpoints.CHECKPOINTER.forget(_key(handle.path))
            with handle.lock:
                _close_quietly(handle.conn)


def _close_quietly(conn: apsw.Connection) -> None:
    try:
        conn.close()
    except apsw.Error:  # pragma: no cover - close only fails on misuse we already prevent
        pass
