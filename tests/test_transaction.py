"""The one write door: BEGIN IMMEDIATE, savepoints, rollback, after-commit hooks, busy handling.
Locking is proven with a second real connection (and a second process) holding the lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import apsw
import pytest

from plandb.connection import open_connection
from plandb.errors import DatabaseBusy, InvalidInput, PlanDBError, TransactionError
from plandb.transaction import read, write


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "t.sqlite"
    conn = open_connection(path)
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY, v TEXT)")
    yield conn, path
    conn.close()


def rows(conn):
    return conn.execute("SELECT x FROM t ORDER BY x").fetchall()


def test_commit_and_after_commit_hooks_run_after(db):
    conn, path = db
    seen = []
    with write(conn, path) as tx:
        tx.execute("INSERT INTO t VALUES (1, 'a')")
        tx.after_commit(lambda: seen.append(rows(conn)))
        assert seen == []
    assert seen == [[(1,)]]


def test_exception_rolls_back_and_drops_hooks(db):
    conn, path = db
    seen = []
    with pytest.raises(KeyError):
        with write(conn, path) as tx:
            tx.execute("INSERT INTO t VALUES (1, 'a')")
            tx.after_commit(lambda: seen.append(1))
            raise KeyError("boom")
    assert rows(conn) == [] and seen == [] and not conn.in_transaction


def test_apsw_errors_are_translated_and_roll_back(db):
    conn, path = db
    with pytest.raises(PlanDBError) as err:
        with write(conn, path) as tx:
            tx.execute("INSERT INTO t VALUES (1, 'a')")
            tx.execute("INSERT INTO t VALUES (1, 'dup')")
    assert isinstance(err.value, InvalidInput)
    assert isinstance(err.value.__cause__, apsw.ConstraintError)
    assert rows(conn) == []


def test_nested_write_is_a_savepoint(db):
    conn, path = db
    with write(conn, path) as tx:
        tx.execute("INSERT INTO t VALUES (1, 'outer')")
        with pytest.raises(ValueError):
            with write(conn, path) as inner:
                inner.execute("INSERT INTO t VALUES (2, 'inner')")
                inner.after_commit(lambda: pytest.fail("inner hook must be dropped"))
                raise ValueError
        with write(conn, path) as inner:
            inner.execute("INSERT INTO t VALUES (3, 'kept')")
    assert rows(conn) == [(1,), (3,)]


def test_write_inside_read_snapshot_is_refused(db):
    conn, path = db
    with read(conn, path):
        conn.execute("SELECT * FROM t").fetchall()
        with pytest.raises(TransactionError):
            with write(conn, path):
                pass
    assert not conn.in_transaction


def test_read_snapshot_does_not_see_later_commits(db):
    conn, path = db
    other = open_connection(path)
    try:
        with write(conn, path) as tx:
            tx.execute("INSERT INTO t VALUES (1, 'a')")
        with read(other, path):
            assert rows(other) == [(1,)]
            with write(conn, path) as tx:
                tx.execute("INSERT INTO t VALUES (2, 'b')")
            assert rows(other) == [(1,)]  # same snapshot
        assert rows(other) == [(1,), (2,)]
    finally:
        other.close()


def test_busy_writer_gives_database_busy_not_apsw_error(tmp_path):
    path = tmp_path / "b.sqlite"
    holder = open_connection(path)
    holder.execute("CREATE TABLE t (x)")
    waiter = open_connection(path, busy_timeout_ms=20)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseBusy) as err:
            with write(waiter, path, retries=2):
                pytest.fail("must not get the lock")
        assert str(path) in str(err.value)
        assert not waiter.in_transaction
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        waiter.close()


def test_writer_waits_for_another_process_then_succeeds(tmp_path):
    path = tmp_path / "p.sqlite"
    conn = open_connection(path)
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY, v TEXT)")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from plandb.connection import open_connection
            c = open_connection({str(path)!r})
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO t VALUES (1, 'other process')")
            print("locked", flush=True)
            time.sleep(0.5)
            c.execute("COMMIT")
            c.close()
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with write(conn, path) as tx:  # waits on the busy timeout, no error
            tx.execute("INSERT INTO t VALUES (2, 'us')")
        assert rows(conn) == [(1,), (2,)]
    finally:
        holder.wait(timeout=30)
        conn.close()


def test_threads_sharing_a_pool_never_interleave_transactions(tmp_path):
    from plandb.connection import ConnectionPool

    path = tmp_path / "shared.sqlite"
    pool = ConnectionPool(max_open=2)
    with pool.use(path) as h:
        h.conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY, v TEXT)")
    errors = []

    def worker(base):
        try:
            for i in range(50):
                with pool.use(path) as h, write(h.conn, path) as tx:
                    n = tx.one("SELECT count(*) FROM t")[0]
                    tx.execute("INSERT INTO t VALUES (?, ?)", (base + i, str(n)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with pool.use(path) as h:
        values = sorted(int(r[0]) for r in h.conn.execute("SELECT v FROM t"))
    pool.close()
    assert errors == []
    assert values == list(range(200))  # each insert saw exactly the rows committed before it
