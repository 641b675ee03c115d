"""Background WAL checkpoints (plandb.checkpoints): pooled connections hand the checkpoint to
one thread per process instead of stalling the commit that crosses 1000 pages (the tests set
that threshold; plandb's own is THRESHOLD_PAGES).

Each test writes real pages to real files and reads the -wal's state back through a separate
connection; none looks at a clock.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import apsw
import pytest

from plandb import PlanRepository, checkpoints
from plandb.checkpoints import CHECKPOINTER

BIG = "x" * 3000  # about one page of instruction text per task


def wal_frames(path: Path) -> int:
    """Frames in the -wal now, through a connection of its own (closed again)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        return conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0][1]
    finally:
        conn.close()


def write_pages(repo: PlanRepository, plan_id: int, calls: int) -> None:
    for i in range(calls):
        repo.create_task(plan_id, name=f"t{i}", instruction=BIG)


def test_the_wal_is_checkpointed_and_restarted_off_the_writing_thread(repo, monkeypatch):
    monkeypatch.setattr(checkpoints, "THRESHOLD_PAGES", 1000)  # the sizes below assume it
    plan = repo.create_plan("busy plan")
    path = repo.config.plan_db_path(plan.id)
    done, inline = CHECKPOINTER.completed, CHECKPOINTER.inline
    write_pages(repo, plan.id, 700)  # > 1000 pages of -wal
    assert CHECKPOINTER.wait_idle(timeout=60)
    assert CHECKPOINTER.completed > done
    assert CHECKPOINTER.inline == inline  # no commit had to checkpoint by itself
    # ~1,400 pages went in. When writes stop the -wal holds what came after its last restart;
    # if that is past the threshold, the next commit asks again and the one after it restarts.
    repo.create_task(plan.id, name="after")
    assert CHECKPOINTER.wait_idle(timeout=60)
    repo.create_task(plan.id, name="last")
    assert 0 < wal_frames(path) < checkpoints.THRESHOLD_PAGES
    assert len(repo.get_plan_tree(plan.id)) == 702


def wal_restarts(path: Path) -> int:
    """The -wal header's checkpoint sequence number: SQLite adds one each time the -wal
    starts over (https://www.sqlite.org/fileformat.html, "WAL File Format"; big-endian)."""
    with open(f"{path}-wal", "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


def test_a_writer_that_never_pauses_still_gets_its_wal_restarted(repo, monkeypatch):
    """A writer that commits back to back leaves the -wal fully copied at no moment it begins
    a transaction, so only the background RESTART can start the -wal over (commits never
    checkpoint by themselves here). Some RESTART tries lose the race with the writer; the run
    asked for by its last commit comes after it, and cannot lose."""
    monkeypatch.setattr(checkpoints, "THRESHOLD_PAGES", 1000)
    monkeypatch.setattr(checkpoints, "INLINE_PAGES", 10**9)
    plan = repo.create_plan("never pauses")
    path = repo.config.plan_db_path(plan.id)
    repo.create_task(plan.id, name="first")  # opens the -wal
    before, calls = wal_restarts(path), 0
    # Each restart is a race the writer may win: on a quiet 2-core VM 3,000 calls (~7,000
    # frames) saw 4-6 restarts, but 0-5 with a disk-filling dd and 2 CPU hogs beside. So the
    # writer goes on until the first restart, or until no race could explain its absence.
    while wal_restarts(path) == before and calls < 20_000:
        for _ in range(100):
            repo.create_task(plan.id, name=f"t{calls}", instruction="step " * 40)
            calls += 1
    assert wal_restarts(path) > before, f"no restart in {calls} back-to-back commits"
    assert CHECKPOINTER.wait_idle(timeout=60)
    # The run after the last commit found the -wal either below the threshold (left as it
    # is) or above it: then it copied everything and no reader is left in the -wal, so the
    # next commit starts it over. Before that run was guaranteed, a last run that lost the
    # race left 3,720 frames behind in CI.
    repo.create_task(plan.id, name="after")
    assert wal_frames(path) < checkpoints.THRESHOLD_PAGES + 10  # + that commit's frames


def test_a_request_during_a_run_of_the_same_file_gets_a_run_of_its_own(
        tmp_path, monkeypatch):
    """A request that arrives while its file is being checkpointed is not dropped: it may be
    a writer's last commit, and the run in progress may already have lost its race."""
    monkeypatch.setattr(checkpoints, "THRESHOLD_PAGES", 10)
    monkeypatch.setattr(checkpoints, "RESTART_TRIES", 10**9)  # the run lasts as the reader does
    path = str(tmp_path / "file.sqlite")
    writer, reader = apsw.Connection(path), apsw.Connection(path)
    try:
        writer.execute("PRAGMA journal_mode=WAL").fetchall()
        writer.execute("CREATE TABLE t(x)")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchall()  # an old snapshot: RESTART waits
        for _ in range(20):
            writer.execute("INSERT INTO t VALUES (?)", (BIG,))
        checkpointer = checkpoints.Checkpointer()
        checkpointer.request(path)
        deadline = time.monotonic() + 60  # only against a hang, not a measure
        while checkpointer._running != path and time.monotonic() < deadline:
            time.sleep(0.001)
        checkpointer.request(path)  # while the first run waits for the reader
        reader.execute("ROLLBACK")
        assert checkpointer.wait_idle(timeout=60)
        assert checkpointer.completed == 2
    finally:
        reader.close()
        writer.close()


def test_a_long_reader_never_blocks_writers_and_the_wal_restarts_after_it(
        repo, monkeypatch):
    """A reader holding an old snapshot keeps the -wal from being copied past it: background
    checkpoints give up, commits past INLINE_PAGES try themselves, and every write still
    succeeds. Once the reader is gone the -wal is copied and starts over."""
    monkeypatch.setattr(checkpoints, "THRESHOLD_PAGES", 1000)
    monkeypatch.setattr(checkpoints, "INLINE_PAGES", 1500)
    plan = repo.create_plan("read while written")
    path = repo.config.plan_db_path(plan.id)
    repo.create_task(plan.id, name="first")
    reader = apsw.Connection(str(path))
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM tasks").fetchall() == [(1,)]
        inline = CHECKPOINTER.inline
        write_pages(repo, plan.id, 900)
        assert CHECKPOINTER.inline > inline
        assert reader.execute("SELECT count(*) FROM tasks").fetchall() == [(1,)]
        reader.execute("ROLLBACK")
    finally:
        reader.close()
    write_pages(repo, plan.id, 5)  # a commit past the threshold asks again
    assert CHECKPOINTER.wait_idle(timeout=60)
    repo.create_task(plan.id, name="last")
    assert 0 < wal_frames(path) < 50
    assert len(repo.get_plan_tree(plan.id)) == 907


def test_deleting_a_plan_drops_its_pending_checkpoints(repo):
    """A checkpoint must never reopen a file plandb removed (and bring back its -wal/-shm)."""
    plan = repo.create_plan("short-lived")
    write_pages(repo, plan.id, 600)
    repo.delete_plan(plan.id)
    assert CHECKPOINTER.wait_idle(timeout=60)
    assert list(repo.config.folder("plans").glob(f"plan_{plan.id}.*")) == []


def test_closing_the_repository_waits_for_its_checkpoints(config):
    with PlanRepository(config) as repo:
        plan = repo.create_plan("closing")
        write_pages(repo, plan.id, 600)
    # close() forgot each file: nothing runs on them now, and no connection is left open
    # (the autouse fixture checks that).
    assert CHECKPOINTER._running is None


def _child_writes(root: str, queue) -> None:
    from plandb import PlanRepository as Repo
    from plandb.checkpoints import CHECKPOINTER as child_checkpointer

    with Repo(root) as repo:
        plan = repo.create_plan("forked")
        write_pages(repo, plan.id, 600)
        ok = child_checkpointer.wait_idle(timeout=60)
        queue.put((ok, child_checkpointer.completed, len(repo.get_plan_tree(plan.id))))


@pytest.mark.allow_open_connections
def test_a_forked_child_gets_a_checkpointer_of_its_own(repo, db_root):
    """The thread does not survive fork(): the child must start its own, not queue work for a
    thread that is not there (its -wal would grow without end)."""
    plan = repo.create_plan("parent")
    write_pages(repo, plan.id, 20)  # the parent's checkpointer exists (or not): either way
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_writes, args=(str(db_root), queue))
    child.start()
    ok, completed, count = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert ok and completed >= 1 and count == 600
