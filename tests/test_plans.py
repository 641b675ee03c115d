"""Plans: the registry (create/list/summary/update/delete), how it stays in step with the plan
files without opening them, whole-tree upserts and snapshots."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import apsw
import pytest

from plandb.errors import (
    DependencyCycle,
    InvalidId,
    InvalidInput,
    PlanNotFound,
    RecordNotFound,
    RepositoryClosed,
    TaskNotFound,
    TreeCycle,
)
from plandb.models import PlanNode, PlanTree
from plandb.repository import PlanRepository


def plan_meta(repo: PlanRepository, plan_id: int) -> dict[str, str]:
    conn = apsw.Connection(str(repo.config.plan_db_path(plan_id)),
                           flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return dict(conn.execute("SELECT key, value FROM plan_meta").fetchall())
    finally:
        conn.close()


def registry_rows(repo: PlanRepository) -> list[tuple]:
    conn = apsw.Connection(str(repo.config.main_db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT id, state, title, task_count FROM plans ORDER BY id").fetchall()
    finally:
        conn.close()


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- create ----------------------------------------------------------------------------------


def test_create_plan_builds_a_private_file_and_a_ready_row(repo):
    tree = repo.create_plan("Ship v2", owner="ana", description="the big one",
                            metadata={"team": "core", "n": 2})
    assert (tree.id, tree.title, tree.description, tree.metadata, len(tree)) == (
        1, "Ship v2", "the big one", {"team": "core", "n": 2}, 0)
    path = repo.config.plan_db_path(tree.id)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    meta = plan_meta(repo, tree.id)
    assert (meta["kind"], meta["plan_id"], meta["title"], meta["owner"]) == (
        "plan", "1", "Ship v2", "ana")
    assert registry_rows(repo) == [(1, "ready", "Ship v2", 0)]
    assert files(repo.config.folder("temp")) == []
    assert repo.get_plan_tree(tree.id) == tree


@pytest.mark.parametrize("args, kwargs", [
    (("",), {}), (("  ",), {}), ((None,), {}), ((5,), {}),
    (("ok",), {"metadata": ["x"]}), (("ok",), {"owner": ""}), (("ok",), {"owner": 3}),
    (("ok",), {"description": 4}), (("x" * 10_001,), {}),
])
def test_create_plan_refusals_leave_nothing_behind(repo, args, kwargs):
    with pytest.raises(InvalidInput):
        repo.create_plan(*args, **kwargs)
    assert repo.list_plans() == []
    assert files(repo.config.folder("plans")) == []
    assert files(repo.config.folder("temp")) == []


def _create_many(root: str, n: int, queue) -> None:
    with PlanRepository(root) as repo:
        queue.put([repo.create_plan(f"p{os.getpid()}-{i}").id for i in range(n)])


def test_concurrent_processes_get_distinct_plan_ids(db_root):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_create_many, args=(str(db_root), 8, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    ids = queue.get(timeout=120) + queue.get(timeout=120)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(ids) == list(range(1, 17))
    with PlanRepository(db_root) as repo:
        assert sorted(s.id for s in repo.list_plans()) == sorted(ids)
        assert [pid for pid, _ in repo.config.plan_files()] == sorted(ids)


# --- list / summary --------------------------------------------------------------------------


def test_list_plans_newest_first_with_owner_limit_offset(repo):
    ids = [repo.create_plan(f"p{i}", owner="ana" if i % 2 else "bo").id for i in range(6)]
    assert [s.id for s in repo.list_plans()] == ids[::-1]
    repo.create_task(ids[0], name="touch")  # a task write makes the plan the newest
    assert [s.id for s in repo.list_plans()][:2] == [ids[0], ids[5]]
    assert [s.id for s in repo.list_plans(owner="ana")] == [ids[5], ids[3], ids[1]]
    assert [s.id for s in repo.list_plans(owner="ana", limit=2, offset=1)] == [ids[3], ids[1]]
    assert [s.id for s in repo.list_plans(limit=0)] == []
    assert repo.list_plans(owner="nobody") == []
    assert [s.id for s in repo.list_plans(offset=5)] == [ids[1]]
    for kwargs in ({"limit": -1}, {"limit": "2"}, {"offset": -1}, {"offset": None},
                   {"limit": True}):
        with pytest.raises(InvalidInput):
            repo.list_plans(**kwargs)


def test_summary_fields_and_unknown_ids(repo):
    tree = repo.create_plan("p", owner="ana", description="d", metadata={"a": 1})
    repo.create_tasks(tree.id, [{"name": "a"}, {"name": "b"}])
    s = repo.get_plan_summary(tree.id)
    assert (s.id, s.title, s.description, s.metadata, s.task_count, s.owner, s.state) == (
        tree.id, "p", "d", {"a": 1}, 2, "ana", "ready")
    assert s.updated_at >= s.created_at
    assert s.to_dict()["metadata"] == {"a": 1}
    with pytest.raises(PlanNotFound):
        repo.get_plan_summary(999)
    for bad in (0, -1, "1", 1.0, None, True):
        with pytest.raises(InvalidId):
            repo.get_plan_summary(bad)


def test_list_plans_reads_the_registry_only(config):
    """task_count and updated_at live in the registry: listing opens no plan file, and works
    when the plan files are not even there."""
    with PlanRepository(config) as repo:
        ids = [repo.create_plan(f"p{i}").id for i in range(5)]
        for n, pid in enumerate(ids):
            repo.create_tasks(pid, [{"name": f"t{j}"} for j in range(n)])
    moved = config.root / "moved"
    shutil.move(config.folder("plans"), moved)
    config.folder("plans").mkdir(mode=0o700)
    try:
        with PlanRepository(config) as repo:
            listed = repo.list_plans()
            assert {s.id: s.task_count for s in listed} == {pid: n for n, pid in enumerate(ids)}
            assert repo.get_plan_summary(ids[3]).task_count == 3
            assert repo.pool.opens == 1  # the registry, nothing else
    finally:
        shutil.rmtree(config.folder("plans"))
        shutil.move(moved, config.folder("plans"))


def test_counts_reach_other_processes_by_the_next_flush(config):
    """Writers batch registry syncs; their own reads are exact, others see them after the
    writer's next flush (list/summary call, sync interval, flush() or close())."""
    writer = PlanRepository(config, registry_sync_interval=3600)
    reader = PlanRepository(config)
    try:
        pid = writer.create_plan("p").id
        writer.create_tasks(pid, [{"name": "a"}, {"name": "b"}])
        assert reader.get_plan_summary(pid).task_count == 0  # not synced yet
        assert writer.get_plan_summary(pid).task_count == 2  # own reads flush first
        assert reader.get_plan_summary(pid).task_count == 2
        writer.create_task(pid, name="c")
        writer.close()
        assert reader.get_plan_summary(pid).task_count == 3
    finally:
        writer.close()
        reader.close()


def test_a_slow_flush_never_writes_an_older_count_over_a_newer_one(config):
    """Regression (seen under `make stress`): flush() counted a plan's tasks, then waited for
    the registry's write lock; meanwhile another writer added tasks, and the late flush wrote
    its older count with the newer updated_at. Counts are now read under that lock."""
    a = PlanRepository(config, registry_sync_interval=3600)
    b = PlanRepository(config, registry_sync_interval=3600)
    holder = apsw.Connection(str(config.main_db_path))
    try:
        pid = a.create_plan("p").id
        a.create_task(pid, name="first")  # a's pending count: 1
        holder.execute("BEGIN IMMEDIATE")  # the registry is busy
        flushing = threading.Thread(target=a.flush)
        flushing.start()
        time.sleep(0.2)  # let a's flush reach the lock (before the fix: after counting)
        b.create_tasks(pid, [{"name": f"t{i}"} for i in range(5)])  # not flushed by b
        holder.execute("ROLLBACK")
        flushing.join()
        with PlanRepository(config) as reader:
            assert reader.get_plan_summary(pid).task_count == 6
    finally:
        holder.close()
        a.close()
        b.close()


def test_a_unreadable_plan_file_does_not_break_listing(repo):
    """Regression: the registry sync opened every written plan file and let one broken file
    fail list_plans (and drop the other plans' pending counts)."""
    good, bad = repo.create_plan("good").id, repo.create_plan("bad").id
    repo.flush()
    repo.create_task(good, name="g")
    repo.create_task(bad, name="b")
    path = repo.config.plan_db_path(bad)
    repo.pool.discard(path)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"not a database" * 100)
    counts = {s.id: s.task_count for s in repo.list_plans()}
    assert counts[good] == 1


# --- update ----------------------------------------------------------------------------------


def test_update_plan_changes_registry_and_plan_meta(repo):
    tree = repo.create_plan("old", description="d0", metadata={"v": 0})
    summary = repo.update_plan(tree.id, title="new", metadata={"v": 1})
    assert (summary.title, summary.description, summary.metadata) == ("new", "d0", {"v": 1})
    meta = plan_meta(repo, tree.id)
    assert (meta["title"], meta["description"], meta["metadata"]) == ("new", "d0", '{"v":1}')
    assert repo.get_plan_tree(tree.id).title == "new"
    summary = repo.update_plan(tree.id, description="d1")
    assert (summary.title, summary.description) == ("new", "d1")
    assert plan_meta(repo, tree.id)["description"] == "d1"
    assert repo.list_plans()[0].title == "new"


@pytest.mark.parametrize("plan, kwargs, error", [
    (999, {"title": "x"}, PlanNotFound),
    (0, {"title": "x"}, InvalidId),
    ("PLAN", {"title": ""}, InvalidInput),
    ("PLAN", {"metadata": [1]}, InvalidInput),
    ("PLAN", {"description": 3}, InvalidInput),
])
def test_update_plan_refusals_change_nothing(repo, plan, kwargs, error):
    tree = repo.create_plan("keep", metadata={"v": 0})
    plan = tree.id if plan == "PLAN" else plan
    before = (repo.get_plan_summary(tree.id), plan_meta(repo, tree.id))
    plans_folder = files(repo.config.folder("plans"))
    with pytest.raises(error):
        repo.update_plan(plan, **kwargs)
    assert (repo.get_plan_summary(tree.id), plan_meta(repo, tree.id)) == before
    assert files(repo.config.folder("plans")) == plans_folder


# --- delete ----------------------------------------------------------------------------------


def test_delete_plan_removes_row_file_wal_and_shm(repo):
    keep = repo.create_plan("keep").id
    pid = repo.create_plan("doomed").id
    repo.create_task(pid, name="t")
    path = repo.config.plan_db_path(pid)
    assert Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    repo.delete_plan(pid)
    assert not [p for p in files(repo.config.folder("plans")) if p.startswith(path.name)]
    assert [r[0] for r in registry_rows(repo)] == [keep]
    assert [s.id for s in repo.list_plans()] == [keep]
    for call in (lambda: repo.get_plan_summary(pid), lambda: repo.get_plan_tree(pid),
                 lambda: repo.create_task(pid, name="x"), lambda: repo.delete_plan(pid),
                 lambda: repo.update_plan(pid, title="x")):
        with pytest.raises(PlanNotFound):
            call()
    assert not path.exists()  # nothing recreated it


def test_a_plan_deleted_elsewhere_is_gone_for_cached_connections(config):
    """Regression: a repository holding a pooled connection to a plan file that another
    repository deleted kept writing into the unlinked file and acknowledged it."""
    with PlanRepository(config) as one, PlanRepository(config) as two:
        pid = one.create_plan("p").id
        two.create_task(pid, name="cached")  # `two` now holds the file open
        one.delete_plan(pid)
        with pytest.raises(PlanNotFound):
            two.create_task(pid, name="lost?")
        with pytest.raises(PlanNotFound):
            two.get_plan_tree(pid)
        assert not config.plan_db_path(pid).exists()


def test_plan_ids_are_never_reused(config):
    with PlanRepository(config) as repo:
        ids = [repo.create_plan(f"p{i}").id for i in range(3)]
        repo.delete_plan(ids[2])
        assert repo.create_plan("next").id == 4
        for pid in (1, 2, 4):
            repo.delete_plan(pid)
    with PlanRepository(config) as repo:
        assert repo.list_plans() == []
        assert repo.create_plan("after").id == 5


def test_plan_ids_skip_ids_whose_files_exist(repo):
    first = repo.create_plan("first").id
    src = repo.config.plan_db_path(first)
    repo.pool.discard(src)
    shutil.copy(src, repo.config.plan_db_path(2))  # e.g. restored by hand, not registered
    (repo.config.folder("temp") / "plan_3.building").write_bytes(b"half")
    (repo.config.folder("temp") / "plan_4.lock").write_bytes(b"")
    assert repo.create_plan("next").id == 5
    assert plan_meta(repo, 2)["plan_id"] == "1"  # the foreign file was left alone


# --- whole trees -----------------------------------------------------------------------------


def _sample(repo: PlanRepository) -> tuple[int, dict[str, PlanNode]]:
    pid = repo.create_plan("tree", metadata={"v": 1}).id
    a = repo.create_task(pid, name="a")
    b = repo.create_task(pid, name="b", parent_id=a.id)
    c = repo.create_task(pid, name="c", dependencies=[b.id])
    d = repo.create_task(pid, name="d", parent_id=a.id)
    return pid, {"a": a, "b": b, "c": c, "d": d}


def test_upsert_plan_tree_replaces_everything_and_snapshots(repo):
    pid, n = _sample(repo)
    tree = repo.get_plan_tree(pid)
    tree.title, tree.metadata = "renamed", {"v": 2}
    del tree.nodes[n["d"].id]
    tree.nodes[n["b"].id].parent_id = None
    tree.nodes[n["b"].id].position = 0  # roots by (position, id): b, a, c
    tree.nodes[n["a"].id].position = 1
    tree.nodes[n["c"].id].dependencies = [n["a"].id]
    tree.nodes[n["c"].id].status = "done"
    tree.nodes[100] = PlanNode(id=100, plan_id=pid, name="new", parent_id=n["c"].id,
                               metadata={"m": 1})
    stored = repo.upsert_plan_tree(tree, note="rework")
    assert stored.title == "renamed" and stored.metadata == {"v": 2}
    assert [stored.nodes[i].name for i in stored.roots] == ["b", "a", "c"]
    assert stored.children == {n["c"].id: [100]}
    assert stored.nodes[100].path == f"/{n['c'].id}/100" and stored.nodes[100].depth == 1
    assert stored.nodes[n["c"].id].dependencies == [n["a"].id]
    assert stored.nodes[n["c"].id].status == "done"
    assert repo.get_plan_tree(pid) == stored
    (snap,) = repo.list_snapshots(pid)
    assert (snap.note, snap.task_count, snap.plan_id) == ("rework", 4, pid)
    summary = repo.get_plan_summary(pid)
    assert (summary.title, summary.metadata, summary.task_count) == ("renamed", {"v": 2}, 4)
    assert plan_meta(repo, pid)["title"] == "renamed"
    assert repo.create_task(pid, name="later").id == 101  # ids stay above every id used
    assert repo.upsert_plan_tree(stored) is not None and len(repo.list_snapshots(pid)) == 1


def _cyclic_parents(tree: PlanTree, n) -> None:
    tree.nodes[n["a"].id].parent_id = n["b"].id  # a -> b -> a


def _cyclic_deps(tree: PlanTree, n) -> None:
    tree.nodes[n["b"].id].dependencies = [n["c"].id]  # c depends on b already


def _unknown_parent(tree: PlanTree, n) -> None:
    tree.nodes[n["d"].id].parent_id = 999


def _unknown_dep(tree: PlanTree, n) -> None:
    tree.nodes[n["d"].id].dependencies = [999]


def _self_dep(tree: PlanTree, n) -> None:
    tree.nodes[n["d"].id].dependencies = [n["d"].id]


def _blank_name(tree: PlanTree, n) -> None:
    tree.nodes[n["d"].id].name = " "


def _blank_title(tree: PlanTree, n) -> None:
    tree.title = ""


@pytest.mark.parametrize("breaks, error", [
    (_cyclic_parents, TreeCycle), (_cyclic_deps, DependencyCycle),
    (_unknown_parent, TaskNotFound), (_unknown_dep, TaskNotFound),
    (_self_dep, DependencyCycle), (_blank_name, InvalidInput), (_blank_title, InvalidInput),
])
def test_upsert_refusals_change_nothing(repo, breaks, error):
    pid, n = _sample(repo)
    repo.create_snapshot(pid, note="before")
    before = (repo.get_plan_tree(pid), repo.list_snapshots(pid), repo.get_plan_summary(pid))
    tree = repo.get_plan_tree(pid)
    breaks(tree, n)
    with pytest.raises(error):
        repo.upsert_plan_tree(tree, note="never stored")
    assert (repo.get_plan_tree(pid), repo.list_snapshots(pid), repo.get_plan_summary(pid)) == (
        before)


def test_upsert_needs_a_tree_of_an_existing_plan(repo):
    with pytest.raises(InvalidInput):
        repo.upsert_plan_tree({"id": 1, "title": "x"})
    with pytest.raises(PlanNotFound):
        repo.upsert_plan_tree(PlanTree(id=42, title="ghost"))
    assert files(repo.config.folder("plans")) == []


def test_snapshots_restore_the_tree_and_stay(repo):
    pid, n = _sample(repo)
    first = repo.create_snapshot(pid, note="v1")
    original = repo.get_plan_tree(pid)
    repo.delete_task(pid, n["a"].id)
    repo.update_task(pid, n["c"].id, name="changed", dependencies=[])
    repo.update_plan(pid, title="other")
    second = repo.create_snapshot(pid)
    assert [(s.id, s.note, s.task_count) for s in repo.list_snapshots(pid)] == [
        (first.id, "v1", 4), (second.id, None, 1)]
    restored = repo.restore_snapshot(pid, first.id)
    assert restored.title == "tree"
    assert {i: (x.name, x.parent_id, x.position, x.path, x.depth, x.dependencies)
            for i, x in restored.nodes.items()} == {
        i: (x.name, x.parent_id, x.position, x.path, x.depth, x.dependencies)
        for i, x in original.nodes.items()}
    assert repo.get_plan_summary(pid).title == "tree"
    assert len(repo.list_snapshots(pid)) == 2
    with pytest.raises(RecordNotFound):
        repo.restore_snapshot(pid, 999)
    with pytest.raises(InvalidInput):
        repo.restore_snapshot(pid, "1")
    assert repo.create_task(pid, name="fresh").id > n["d"].id


def test_session_upsert_and_restore_keep_its_tree(repo):
    pid, n = _sample(repo)
    session = repo.session(pid)
    tree = session.refresh()
    snap = repo.create_snapshot(pid, note="start")
    tree.nodes[n["a"].id].name = "A"
    assert session.upsert_tree(tree, note="rename").nodes[n["a"].id].name == "A"
    assert session.tree.nodes[n["a"].id].name == "A"
    assert [s.note for s in session.list_snapshots()] == ["start", "rename"]
    assert session.restore_snapshot(snap.id).nodes[n["a"].id].name == "a"
    assert session.tree.nodes[n["a"].id].name == "a"


# --- lifecycle -------------------------------------------------------------------------------


def test_close_is_idempotent_and_a_closed_repository_refuses_calls(config):
    repo = PlanRepository(config)
    pid = repo.create_plan("p").id
    repo.close()
    repo.close()
    with pytest.raises(RepositoryClosed):
        repo.get_plan_tree(pid)
    with PlanRepository(config) as again:
        assert again.get_plan_summary(pid).title == "p"
