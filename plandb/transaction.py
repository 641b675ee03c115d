"""The one way plandb writes: `write(conn)`.

``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction never has to upgrade a read
lock (the classic SQLite deadlock), and never meets SQLITE_BUSY half-way through its body. Waiting
for another writer is the busy timeout's job; if it expires, BEGIN is retried a bounded number of
times with backoff, then `DatabaseBusy` is raised: "database is locked" never reaches a caller.

Nested `write()` on the same connection becomes a SAVEPOINT. Any exception rolls back (the
savepoint, or the whole transaction) and propagates, translated to a `PlanDBError` if it came
from apsw. If COMMIT itself fails, the transaction is rolled back and the error raised.

Side effects that must happen only once the data is durable-in-WAL (registry bookkeeping,
cache eviction) are queued with `tx.after_commit(fn)`; they are dropped if the block raises.

Example::

    with write(conn, path) as tx:
        tx.execute("UPDATE tasks SET status = ? WHERE id = ?", (status, task_id))
        tx.after_commit(lambda: registry_dirty.add(plan_id))
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import apsw

from .errors import DatabaseBusy, TransactionError, translate

_active: dict[int, Tx] = {}
_active_lock = threading.Lock()


class Tx:
    """A transaction in progress on one connection."""

    __slots__ = ("conn", "path", "_hooks", "_savepoints")

    def __init__(self, conn: apsw.Connection, path: Any):
        self.conn = conn
        self.path = path
        self._hooks: list[Callable[[], None]] = []
        self._savepoints = 0

    def execute(self, sql: str, params: Any = ()) -> apsw.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, seq: Any) -> apsw.Cursor:
        return self.conn.executemany(sql, seq)

    def one(self, sql: str, params: Any = ()) -> Any:
        """First row of a query, or None."""
        for row in self.conn.execute(sql, params):
            return row
        return None

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run `fn` once the outermost transaction has committed (never if it rolls back)."""
        self._hooks.append(fn)


def _begin(conn: apsw.Connection, path: Any, retries: int) -> None:
    delay = 0.01
    start = time.monotonic()
    for attempt in range(retries + 1):
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except (apsw.BusyError, apsw.LockedError) as exc:
            if attempt == retries:
                waited = int((time.monotonic() - start) * 1000)
                raise DatabaseBusy(path or "database", waited) from exc
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
        except apsw.Error as exc:
            raise translate(exc, path) from exc


def _rollback(conn: apsw.Connection) -> None:
    # rollback() is a no-op error if the failure already destroyed the transaction, so the
    # original exception is what propagates.
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except apsw.Error:
            pass


@contextmanager
def write(conn: apsw.Connection, path: Any = None, *, retries: int = 5) -> Iterator[Tx]:
    """Run the block in one write transaction (or a savepoint when nested); see module doc."""
    key = id(conn)
    with _active_lock:
        outer = _active.get(key)
    if outer is not None:
        yield from _savepoint(outer)
        return
    if conn.in_transaction:
        raise TransactionError(
            f"{path or 'database'}: write() inside a read snapshot or a manual transaction; "
            "finish the read first"
        )
    _begin(conn, path, retries)
    tx = Tx(conn, path)
    with _active_lock:
        _active[key] = tx
    try:
        try:
            yield tx
        except BaseException as exc:
            _rollback(conn)
            if isinstance(exc, apsw.Error):
                raise translate(exc, path) from exc
            raise
        try:
            conn.execute("COMMIT")
        except apsw.Error as exc:
            _rollback(conn)
            raise translate(exc, path) from exc
    finally:
        with _active_lock:
            _active.pop(key, None)
    for hook in tx._hooks:
        hook()


def _savepoint(tx: Tx) -> Iterator[Tx]:
    tx._savepoints += 1
    name = f"plandb_sp{tx._savepoints}"  # a counter, never user input
    mark = len(tx._hooks)
    tx.conn.execute(f"SAVEPOINT {name}")
    try:
        yield tx
    except BaseException as exc:
        try:
            tx.conn.execute(f"ROLLBACK TO {name}")
            tx.conn.execute(f"RELEASE {name}")
        except apsw.Error:
            pass
        del tx._hooks[mark:]
        if isinstance(exc, apsw.Error):
            raise translate(exc, tx.path) from exc
        raise
    else:
        tx.conn.execute(f"RELEASE {name}")
    finally:
        tx._savepoints -= 1


@contextmanager
def read(conn: apsw.Connection, path: Any = None) -> Iterator[apsw.Connection]:
    """A consistent snapshot for several SELECTs (a deferred transaction, always rolled back).

    Inside a `write()` on the same connection it simply reuses that transaction.
    """
    if conn.in_transaction:
        yield conn
        return
    try:
        conn.execute("BEGIN")
    except apsw.Error as exc:
        raise translate(exc, path) from exc
    try:
        yield conn
    except apsw.Error as exc:
        raise translate(exc, path) from exc
    finally:
        _rollback(conn)
