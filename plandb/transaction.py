"""The one way plandb writes: `write(conn)`.

``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction never has to upgrade a read
lock (the classic SQLite deadlock), and never meets SQLITE_BUSY half-way through its body. Waiting
for another writer is the busy handler's job (`BusyWait`, installed on every plandb connection);
if it gives up, BEGIN is retried a bounded number of times with backoff (`retry_busy`, the one
retry loop plandb has), then `DatabaseBusy` is raised: "database is locked" never reaches a
caller.

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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import apsw

from .errors import DatabaseBusy, TransactionError, translate

T = TypeVar("T")

# The transaction open on each connection (by id), so a nested write() becomes a savepoint.
# Plain dict operations, atomic under the GIL: a connection is used by one thread at a time
# (the pool's per-connection lock), so no two threads ever touch the same key.
_active: dict[int, Tx] = {}


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


def retry_busy(fn: Callable[..., T], *args: Any, path: Any = None, retries: int | None = None,
               budget_ms: int | None = None, failed: BaseException | None = None,
               started: float | None = None) -> T:
    """``fn(*args)``, called again while it raises SQLITE_BUSY/LOCKED; then `DatabaseBusy`.

    Sleeps 10 ms doubling to 1 s (with jitter) between tries and gives up after `retries`
    retries or once `budget_ms` have passed, whichever comes first, reporting the time really
    spent (since `started`, a `time.monotonic()` value, if given). `failed` is the BUSY error
    of a first try the caller already made (hot paths try once inline). `fn` must be safe to
    repeat. Other errors propagate untouched.
    """
    delay = 0.01
    start = time.monotonic() if started is None else started
    attempt = 0
    exc = failed
    while True:
        if exc is None:
            try:
                return fn(*args)
            except (apsw.BusyError, apsw.LockedError) as busy:
                exc = busy
        spent_ms = (time.monotonic() - start) * 1000
        left_ms = None if budget_ms is None else budget_ms - spent_ms
        if (retries is not None and attempt >= retries) or (
                left_ms is not None and left_ms <= 0):
            raise DatabaseBusy(path or "database", int(spent_ms)) from exc
        pause = delay * (1 + random.random())
        time.sleep(pause if left_ms is None else min(pause, left_ms / 1000))
        delay = min(delay * 2, 1.0)
        attempt += 1
        exc = None


class BusyWait:
    """A busy handler that waits up to `ms` for a lock, polling from 0.1 ms up.

    SQLite's own (``sqlite3_busy_timeout``) sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between
    tries, so a writer held back for 1 ms (a background checkpoint finishing, another process's
    commit) loses 3 to 8 ms. This one starts at 0.1 ms and doubles up to 5 ms, so a short wait
    costs about what it waited. It only runs when a lock is taken, never on the common path.
    """

    __slots__ = ("limit", "started")

    def __init__(self, ms: int):
        self.limit = ms / 1000
        self.started = 0.0

    def __call__(self, tries: int) -> bool:
        now = time.monotonic()
        if tries == 0:
            self.started = now
        left = self.limit - (now - self.started)
        if left <= 0:
            return False
        time.sleep(min(0.0001 * (1 << min(tries, 6)), 0.005, left))
        return True


def _rollback(conn: apsw.Connection) -> None:
    # rollback() is a no-op error if the failure already destroyed the transaction, so the
    # original exception is what propagates.
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except apsw.Error:
            pass


class write:  # noqa: N801 - used like a function: ``with write(conn, path) as tx:``
    """Run the block in one write transaction (or a savepoint when nested); see module doc.

    A class, not a generator-based context manager: every write plandb makes goes through it,
    and on a small commit the generator machinery cost as much as SQLite's BEGIN."""

    __slots__ = ("conn", "path", "retries", "cur", "tx", "savepoint", "mark")

    def __init__(self, conn: apsw.Connection, path: Any = None, *, retries: int = 5):
        self.conn = conn
        self.path = path
        self.retries = retries

    def __enter__(self) -> Tx:
        conn = self.conn
        outer = _active.get(id(conn))
        if outer is not None:
            return self._enter_savepoint(outer)
        self.savepoint = None
        if conn.in_transaction:
            raise TransactionError(
                f"{self.path or 'database'}: write() inside a read snapshot or a manual "
                "transaction; finish the read first")
        cur = self.cur = getattr(conn, "cur", conn)  # a plandb Connection's kept cursor
        started = time.monotonic()
        try:
            try:
                cur.execute("BEGIN IMMEDIATE")
            except (apsw.BusyError, apsw.LockedError) as busy:
                # The busy timeout ran out behind another writer: back off, try again.
                retry_busy(cur.execute, "BEGIN IMMEDIATE", path=self.path,
                           retries=self.retries, failed=busy, started=started)
        except apsw.Error as exc:
            raise translate(exc, self.path) from exc
        tx = self.tx = Tx(conn, self.path)
        _active[id(conn)] = tx
        return tx

    def __exit__(self, etype: Any, exc: Any, tb: Any) -> bool:
        if self.savepoint is not None:
            return self._exit_savepoint(exc)
        conn = self.conn
        try:
            if exc is not None:
                _rollback(conn)
                if isinstance(exc, apsw.Error):
                    raise translate(exc, self.path) from exc
                return False
            try:
                self.cur.execute("COMMIT")
            except apsw.Error as error:
                _rollback(conn)
                raise translate(error, self.path) from error
        finally:
            _active.pop(id(conn), None)
        for hook in self.tx._hooks:
            hook()
        return False

    def _enter_savepoint(self, tx: Tx) -> Tx:
        tx._savepoints += 1
        self.tx = tx
        self.savepoint = f"plandb_sp{tx._savepoints}"  # a counter, never user input
        self.mark = len(tx._hooks)
        try:
            tx.conn.execute(f"SAVEPOINT {self.savepoint}")
        except BaseException as exc:
            tx._savepoints -= 1
            if isinstance(exc, apsw.Error):
                raise translate(exc, tx.path) from exc
            raise
        return tx

    def _exit_savepoint(self, exc: BaseException | None) -> bool:
        tx, name = self.tx, self.savepoint
        try:
            if exc is None:
                tx.conn.execute(f"RELEASE {name}")
                return False
            try:
                tx.conn.execute(f"ROLLBACK TO {name}")
                tx.conn.execute(f"RELEASE {name}")
            except apsw.Error:
                pass
            del tx._hooks[self.mark:]
            if isinstance(exc, apsw.Error):
                raise translate(exc, tx.path) from exc
            return False
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
