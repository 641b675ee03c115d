"""Connection policy and the bounded pool."""

from __future__ import annotations

import os
import time

import apsw
import pytest

from plandb import DatabaseConfig, PlanRepository, RepositoryClosed
from plandb.connection import ConnectionPool, open_connection


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_policy_is_applied(tmp_path):
    conn = open_connection(tmp_path / "a.sqlite", busy_timeout_ms=300)
    other = apsw.Connection(str(tmp_path / "a.sqlite"))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchall()[0][0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchall()[0][0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchall()[0][0] == 1
        # The busy wait is plandb's own handler (PRAGMA busy_timeout reads 0): it waits out the
        # whole timeout behind another writer before SQLITE_BUSY.
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(apsw.BusyError):
            conn.execute("BEGIN IMMEDIATE")
        assert time.monotonic() - started >= 0.3
    finally:
        other.close()
        conn.close()


def test_readonly_open_never_creates_or_writes(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_connection(tmp_path / "missing.sqlite", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()
    with pytest.raises(FileNotFoundError):
        open_connection(tmp_path / "missing.sqlite", create=False)


def test_pool_bounds_open_files_across_many_plans(tmp_path):
    cfg = DatabaseConfig(tmp_path, max_open_files=4)
    with PlanRepository(cfg) as repo:
        ids = [repo.create_plan(f"p{i}").id for i in range(25)]
        baseline = open_fds()
        for pid in ids:
            repo.create_task(pid, name="t")
            assert repo.pool.open_count() <= 4
        for pid in ids:
            assert len(repo.get_plan_tree(pid)) == 1
        # Each open SQLite file in WAL mode costs up to 3 descriptors (db, -wal, -shm).
        assert open_fds() - baseline <= 4 * 3
        assert repo.pool.open_count() <= 4


def test_pool_reuses_one_connection_per_file(tmp_path):
    pool = ConnectionPool(max_open=8)
    path = tmp_path / "x.sqlite"
    with pool.use(path) as a:
        pass
    with pool.use(path) as b:
        pass
    assert a.conn is b.conn and pool.opens == 1
    pool.close()


def test_closed_repository_raises_typed_error(tmp_path):
    repo = PlanRepository(tmp_path)
    repo.create_plan("p")
    repo.close()
    repo.close()  # idempotent
    with pytest.raises(RepositoryClosed):
        repo.list_plans()


def test_connection_in_use_is_not_evicted(tmp_path):
    pool = ConnectionPool(max_open=2)
    with pool.use(tmp_path / "held.sqlite") as held:
        for i in range(5):
            with pool.use(tmp_path / f"{i}.sqlite"):
                pass
        held.conn.execute("CREATE TABLE still_open (x)")  # would raise if closed
        assert pool.open_count() <= 3
    pool.close()
