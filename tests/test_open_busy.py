"""Opening a file that another process is switching to WAL waits, instead of failing at once.

The bug (a flaky failure of test_crash_lifecycle's live-reconcile test): two processes opened a
DB_ROOT whose registry did not exist yet. Both saw an empty file and both ran
``PRAGMA journal_mode=WAL``. On a file not yet in WAL that switch is a rollback-journal write
begun as a read and upgraded to a write, and SQLite never calls the busy handler for that
upgrade (it avoids deadlock by failing). So the second process got SQLITE_BUSY at once, before
its 10 s busy timeout, as ``DatabaseBusy: ... after 0 ms``. The open path now retries it
with backoff until the busy timeout is spent.

A helper process holds the lock the first process's switch holds (RESERVED on the fresh,
rollback-mode file, via ``BEGIN IMMEDIATE``). The tests assert outcomes only, never durations.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from plandb import DatabaseConfig, PlanRepository
from plandb.connection import open_connection
from plandb.errors import DatabaseBusy

# Holds a write lock on the fresh file, then lets go after `argv[2]` seconds (or never: -1).
HOLDER = """
import sys, time, apsw
conn = apsw.Connection(sys.argv[1])
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
hold = float(sys.argv[2])
time.sleep(hold if hold >= 0 else 3600)
conn.execute("ROLLBACK")
"""


def hold_write_lock(path: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()


def test_registry_open_waits_for_a_concurrent_creator(tmp_path):
    """The failing call itself: list_plans() on a new root while another process holds the
    registry's write lock for a moment. It used to raise DatabaseBusy at once."""
    cfg = DatabaseConfig(tmp_path / "db")
    cfg.main_db_path.parent.mkdir(parents=True, exist_ok=True)
    holder = hold_write_lock(cfg.main_db_path, 0.5)
    try:
        with PlanRepository(cfg) as repo:
            assert repo.list_plans() == []
            repo.create_plan("after the wait")
        with PlanRepository(cfg) as repo:
            assert [p.title for p in repo.list_plans()] == ["after the wait"]
    finally:
        stop(holder)


def test_open_connection_waits_for_a_concurrent_creator(tmp_path):
    path = tmp_path / "a.sqlite"
    holder = hold_write_lock(path, 0.5)
    try:
        conn = open_connection(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchall()[0][0] == "wal"
        finally:
            conn.close()
    finally:
        stop(holder)


def test_lock_held_past_the_busy_timeout_raises_database_busy(tmp_path):
    """Still DatabaseBusy in the end, reporting the time actually waited (a lower bound the
    code guarantees, not a speed check), with no connection left open."""
    cfg = DatabaseConfig(tmp_path / "db", busy_timeout_ms=300)
    cfg.main_db_path.parent.mkdir(parents=True, exist_ok=True)
    holder = hold_write_lock(cfg.main_db_path, -1)
    try:
        repo = PlanRepository(cfg)
        with pytest.raises(DatabaseBusy) as info:
            repo.list_plans()
        assert repo.pool.open_count() == 0
        repo.close()
        waited = int(re.search(r"after (\d+) ms", str(info.value)).group(1))
        assert waited >= cfg.busy_timeout_ms
    finally:
        stop(holder)
