"""WAL checkpoints off the caller's thread.

In WAL mode a commit appends pages to the ``-wal``; a checkpoint copies them back into the
database file, and with ``synchronous=NORMAL`` that is where the fsyncs happen. SQLite's default
runs the checkpoint inside the commit that takes the ``-wal`` past 1000 pages, so one call in a
few hundred stalls while the disk absorbs a few MB (measured on a 2-core VM: 15-40 ms per
1000-page checkpoint, nearly all of it fsync; with synchronous=OFF the same checkpoint takes
0.4 ms). A planner writing steadily pays that stall as a slice of every call.

Pooled connections (`attach`) hand the checkpoint to one background thread per process
instead. The thread checkpoints over its own short-lived connection in PASSIVE mode, which
never waits for, or blocks, readers and writers; the committing call returns at once. Nothing
about durability changes: the same checkpoint with the same fsyncs runs, only on another
thread. If the ``-wal`` still grows past `INLINE_PAGES` (the thread cannot keep up), the
committing connection checkpoints itself, as SQLite would have done at 1000 pages.

Files about to be deleted or replaced are `forget`-ten first: pending work for them is dropped
and a checkpoint in progress is waited for, so the thread never reopens a file (and recreates
its ``-wal``/``-shm``) after plandb removed it. Short-lived connections (maintenance, the CLI)
keep SQLite's own auto-checkpoint: closing them checkpoints anyway.
"""

from __future__ import annotations

import logging
import os
import threading

import apsw

log = logging.getLogger("plandb.checkpoints")

# -wal size that asks for a checkpoint: twice SQLite's auto-checkpoint size. Each restart of
# the -wal holds a writer back for two fsyncs (see _checkpoint_file), so a writer that never
# pauses meets half as many; the -wal file may grow to ~8 MB.
THRESHOLD_PAGES = 2000
INLINE_PAGES = 4 * THRESHOLD_PAGES  # past this the committing connection checkpoints itself
PASSIVE_ROUNDS = 8  # non-blocking copies before the final RESTART ...
CATCH_UP_PAGES = 64  # ... or fewer once at most this many pages are left to copy
RESTART_WAIT_MS = 5  # how long one RESTART try may wait for the writer and for readers
RESTART_TRIES = 4  # RESTART tries per request


class Checkpointer:
    """One background thread that runs PASSIVE checkpoints for the files it is asked to."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, None] = {}  # an ordered set of file paths
        self._running: str | None = None
        self._thread: threading.Thread | None = None
        self.completed = 0  # background checkpoints run (for tests and the benchmark)
        self.inline = 0  # checkpoints a committing connection had to run itself

    def request(self, path: str) -> None:
        """Checkpoint `path` soon: once, however often it is asked before the thread gets to
        it. A request for the file being checkpointed now queues one more run after this
        one, so the last commit a writer makes is always followed by a whole run (a run
        racing a writer may fail to restart the -wal; the run after the writer stops cannot)."""
        with self._cond:
            if path in self._pending:
                return
            self._pending[path] = None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="plandb-checkpointer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def forget(self, path: str) -> None:
        """Drop pending work for `path` and wait for a checkpoint of it in progress to end
        (before the file is closed for good, deleted or replaced)."""
        with self._cond:
            self._pending.pop(path, None)
            while self._running == path:
                self._cond.wait()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending or running; False if `timeout` passed first."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._pending and self._running is None, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                path = next(iter(self._pending))
                del self._pending[path]
                self._running = path
            try:
                _checkpoint_file(path)
                self.completed += 1
            except Exception as exc:  # gone, busy, unreadable: the next commit asks again
                log.debug("background checkpoint of %s skipped: %s", path, exc)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()


def _checkpoint_file(path: str) -> None:
    """Copy the -wal back into `path`, then let the next writer start the -wal over.

    PASSIVE rounds do the bulk of the copy (and its fsyncs) without blocking anyone. A writer
    that keeps committing meanwhile keeps the -wal from ever being fully copied at the moment
    it begins its next transaction, which is the only moment SQLite restarts the -wal; so a
    RESTART checkpoint takes the write lock for the few frames left, then waits for readers
    to leave the -wal. Writers wait while it holds the lock, so each try may wait only
    `RESTART_WAIT_MS` for the lock and for readers: a try that waited long would find many
    frames added meanwhile and copy them, fsyncs included, with the writer held back (seen:
    20-50 ms stalls with one 50 ms try). A failed try falls back to a PASSIVE copy; the next
    one starts after a new catch-up. After `RESTART_TRIES` the thread gives up: the next
    commit asks again (see `Checkpointer.request`). A run that finds the -wal already
    started over, below `THRESHOLD_PAGES`, has nothing to do.
    """
    # READWRITE without CREATE: a file removed meanwhile is not brought back.
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        # SQLite's own busy handler, not plandb's Python one: it sleeps and retries without
        # the GIL, so its tries are not lined up with the writer thread's trips into SQLite.
        conn.set_busy_timeout(RESTART_WAIT_MS)
        for _ in range(RESTART_TRIES):
            # Statements, not Connection.wal_checkpoint(): a connection that has read nothing
            # yet has not opened the -wal, and the API call would silently checkpoint nothing.
            # Each round copies what the -wal held when it began; stop once a round found few
            # frames added since the previous one (so few arrived while it ran, too).
            previous = 0
            for _ in range(PASSIVE_ROUNDS):
                frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0][1]
                if frames < THRESHOLD_PAGES and not previous:
                    return  # started over since it was asked: the next commit asks again
                if frames - previous <= CATCH_UP_PAGES:
                    break
                previous = frames
            if conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()[0][0] == 0:
                return
    finally:
        conn.close()


CHECKPOINTER = Checkpointer()


def _after_fork_in_child() -> None:
    # The thread does not survive fork(); a child starts with its own, empty checkpointer.
    global CHECKPOINTER
    CHECKPOINTER = Checkpointer()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _wal_hook(conn: apsw.Connection, dbname: str, pages: int) -> int:
    """Runs after every commit with the -wal's size in pages; must never raise."""
    if pages >= THRESHOLD_PAGES:
        try:
            if pages >= INLINE_PAGES:
                CHECKPOINTER.inline += 1
                conn.wal_checkpoint(dbname, apsw.SQLITE_CHECKPOINT_PASSIVE)
            else:
                CHECKPOINTER.request(conn.db_filename(dbname))
        except Exception as exc:  # busy (another checkpoint runs), closing: next commit retries
            log.debug("checkpoint request on %s failed: %s", dbname, exc)
    return apsw.SQLITE_OK


def attach(conn: apsw.Connection) -> None:
    """Checkpoint `conn`'s file in the background from now on (replaces SQLite's
    auto-checkpoint for this connection). For long-lived, pooled connections."""
    conn.set_wal_hook(_wal_hook)
