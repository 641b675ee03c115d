"""Task tree operations on one plan file: create (positions, anchors, bulk), update, delete,
move, dependencies, typed errors, and the sparse ordering keys of wide plans."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plandb import jsonutil
from plandb.errors import (
    DependencyCycle,
    InvalidId,
    InvalidInput,
    PlanNotFound,
    TaskNotFound,
    TreeCycle,
)
from plandb.repository import PlanRepository


@pytest.fixture
def plan_id(repo: PlanRepository) -> int:
    return repo.create_plan("tree ops").id


@contextmanager
def raw(repo: PlanRepository, plan_id: int) -> Iterator[apsw.Connection]:
    """A plain read-only apsw connection to the plan file (to look under the API)."""
    conn = apsw.Connection(str(repo.config.plan_db_path(plan_id)),
                           flags=apsw.SQLITE_OPEN_READONLY)
    try:
        yield conn
    finally:
        conn.close()


def stored_keys(repo: PlanRepository, plan_id: int) -> dict[int, int]:
    with raw(repo, plan_id) as conn:
        return dict(conn.execute("SELECT id, position FROM tasks").fetchall())


def names(repo: PlanRepository, plan_id: int, parent_id: int | None = None) -> list[str]:
    tree = repo.get_plan_tree(plan_id)
    ids = tree.roots if parent_id is None else tree.children.get(parent_id, [])
    return [tree.nodes[i].name for i in ids]


def assert_dense(repo: PlanRepository, plan_id: int) -> None:
    """Every sibling group's positions are 0..n-1 in order, and get_node agrees."""
    tree = repo.get_plan_tree(plan_id)
    for ids in [tree.roots, *tree.children.values()]:
        assert [tree.nodes[i].position for i in ids] == list(range(len(ids)))
    for node in tree.nodes.values():
        assert repo.get_node(plan_id, node.id).position == node.position


# --- create ----------------------------------------------------------------------------------


def test_create_builds_paths_depths_and_dense_positions(repo, plan_id):
    a = repo.create_task(plan_id, name="a")
    b = repo.create_task(plan_id, name="b", parent_id=a.id)
    c = repo.create_task(plan_id, name="c", parent_id=b.id, metadata={"k": [1, 2]})
    d = repo.create_task(plan_id, name="d", parent_id=a.id)
    assert (a.path, a.depth, a.position, a.status) == (f"/{a.id}", 0, 0, "pending")
    assert (b.path, b.depth, b.position) == (f"/{a.id}/{b.id}", 1, 0)
    assert (c.path, c.depth, c.metadata) == (f"/{a.id}/{b.id}/{c.id}", 2, {"k": [1, 2]})
    assert (d.parent_id, d.position) == (a.id, 1)
    assert repo.get_node(plan_id, c.id) == c
    tree = repo.get_plan_tree(plan_id)
    assert tree.roots == [a.id] and tree.children == {a.id: [b.id, d.id], b.id: [c.id]}
    assert [n.id for n in tree.ordered_nodes()] == [a.id, b.id, c.id, d.id]


@pytest.mark.parametrize("position, expected", [
    (0, ["new", "x0", "x1", "x2"]),
    (1, ["x0", "new", "x1", "x2"]),
    (3, ["x0", "x1", "x2", "new"]),
    (50, ["x0", "x1", "x2", "new"]),  # past the end: appended
])
def test_create_at_position(repo, plan_id, position, expected):
    for i in range(3):
        repo.create_task(plan_id, name=f"x{i}")
    node = repo.create_task(plan_id, name="new", position=position)
    assert names(repo, plan_id) == expected
    assert node.position == expected.index("new")
    assert_dense(repo, plan_id)


def test_anchor_before_and_after(repo, plan_id):
    parent = repo.create_task(plan_id, name="p")
    kids = [repo.create_task(plan_id, name=f"k{i}", parent_id=parent.id) for i in range(3)]
    before = repo.create_task(plan_id, name="before", anchor_task_id=kids[1].id,
                              anchor_position="before")
    after = repo.create_task(plan_id, name="after", anchor_task_id=kids[2].id,
                             anchor_position="after")
    default = repo.create_task(plan_id, name="default", anchor_task_id=kids[0].id)
    assert names(repo, plan_id, parent.id) == ["k0", "default", "before", "k1", "k2", "after"]
    assert before.parent_id == parent.id and before.depth == 1
    assert (before.position, after.position, default.position) == (1, 4, 1)
    assert_dense(repo, plan_id)


@pytest.mark.parametrize("kwargs, error", [
    ({"anchor_task_id": 999}, TaskNotFound),
    ({"anchor_position": "before"}, InvalidInput),  # needs anchor_task_id
    ({"anchor_task_id": "FIRST", "anchor_position": "inside"}, InvalidInput),
    ({"anchor_task_id": "FIRST", "parent_id": "FIRST"}, InvalidInput),  # anchor not a child
    ({"parent_id": 999}, TaskNotFound),
    ({"parent_id": "1"}, InvalidInput),
    ({"position": -1}, InvalidInput),
    ({"position": "0"}, InvalidInput),
    ({"position": True}, InvalidInput),
    ({"dependencies": [999]}, TaskNotFound),
    ({"dependencies": "FIRST"}, InvalidInput),
    ({"dependencies": ["x"]}, InvalidInput),
    ({"metadata": ["not", "a", "dict"]}, InvalidInput),
    ({"name": "  "}, InvalidInput),
    ({"name": 7}, InvalidInput),
    ({"name": "nul\x00"}, InvalidInput),
    ({"status": ""}, InvalidInput),
])
def test_create_task_refusals_change_nothing(repo, plan_id, kwargs, error):
    first = repo.create_task(plan_id, name="first")
    kwargs = {k: (first.id if v == "FIRST" else v) for k, v in kwargs.items()}
    kwargs.setdefault("name", "new")
    before = repo.get_plan_tree(plan_id)
    with pytest.raises(error):
        repo.create_task(plan_id, **kwargs)
    assert repo.get_plan_tree(plan_id) == before


def test_create_bulk_with_parent_and_dependency_indexes(repo, plan_id):
    nodes = repo.create_tasks(plan_id, [
        {"name": "root"},
        {"name": "child", "parent_index": 0},
        {"name": "grandchild", "parent_index": 1, "dependency_indexes": [0]},
        {"name": "after", "dependencies": [], "dependency_indexes": [1, 2]},
    ])
    root, child, grand, after = nodes
    assert child.parent_id == root.id and grand.parent_id == child.id
    assert grand.path == f"/{root.id}/{child.id}/{grand.id}" and grand.depth == 2
    assert grand.dependencies == [root.id]
    assert repo.get_node(plan_id, after.id).dependencies == sorted([child.id, grand.id])
    assert repo.create_tasks(plan_id, []) == []


@pytest.mark.parametrize("specs", [
    "not a list",
    [{"name": "ok"}, "not a dict"],
    [{"name": "ok"}, {"name": ""}],
    [{"name": "ok"}, {"name": "x", "parent_index": -1}],  # no negative indexes
    [{"name": "ok"}, {"name": "x", "parent_index": 1}],  # itself
    [{"name": "ok"}, {"name": "x", "parent_index": 5}],
    [{"name": "ok"}, {"name": "x", "parent_index": True}],
    [{"name": "ok"}, {"name": "x", "dependency_indexes": [0, 3]}],
    [{"name": "ok"}, {"name": "x", "colour": "red"}],  # unknown key
    [{"name": "ok"}, {"name": "x", "dependencies": [999]}],
])
def test_create_bulk_is_all_or_nothing(repo, plan_id, specs):
    repo.create_task(plan_id, name="existing")
    before = repo.get_plan_tree(plan_id)
    with pytest.raises((InvalidInput, TaskNotFound)):
        repo.create_tasks(plan_id, specs)
    assert repo.get_plan_tree(plan_id) == before


def test_bulk_returns_final_positions_when_later_specs_insert_before_earlier_ones(
        repo, plan_id):
    nodes = repo.create_tasks(plan_id, [
        {"name": "a"}, {"name": "b"}, {"name": "front", "position": 0},
        {"name": "mid", "anchor_task_id": None}, {"name": "x", "position": 1}])
    stored = [repo.get_node(plan_id, n.id) for n in nodes]
    assert nodes == stored
    assert names(repo, plan_id) == ["front", "x", "a", "b", "mid"]


def test_append_rank_is_right_after_a_rolled_back_bulk(repo, plan_id):
    """Regression: appends inside a bulk that rolled back stayed in the per-connection
    sibling cache, so the next append reported a position past the real end."""
    repo.create_task(plan_id, name="a")
    with pytest.raises(InvalidInput):
        repo.create_tasks(plan_id, [{"name": "b"}, {"name": "c"}, {"name": ""}])
    node = repo.create_task(plan_id, name="d")
    assert node.position == 1 == repo.get_node(plan_id, node.id).position


def test_two_repositories_appending_to_one_plan(config, plan_id):
    """Each connection caches sibling counts; a write through another connection must
    invalidate them (PRAGMA data_version)."""
    with PlanRepository(config) as one, PlanRepository(config) as two:
        ranks = []
        for i in range(6):
            writer = one if i % 2 == 0 else two
            ranks.append(writer.create_task(plan_id, name=f"t{i}").position)
        assert ranks == list(range(6))
        assert names(one, plan_id) == [f"t{i}" for i in range(6)]


def test_cached_paths_and_ids_follow_writes_through_another_connection(config, plan_id):
    """Each connection caches parents' paths and the next task id (TreeCache); a move, a
    delete or a create through another connection must make it look again, never reuse an id
    or build a child's path from a parent's old place."""
    with PlanRepository(config) as one, PlanRepository(config) as two:
        q = one.create_task(plan_id, name="q")
        p = one.create_task(plan_id, name="p")
        one.create_task(plan_id, name="p1", parent_id=p.id)  # one now knows p's path
        two.move_task(plan_id, p.id, new_parent_id=q.id)
        x = two.create_task(plan_id, name="x")  # takes the id one would have guessed
        child = one.create_task(plan_id, name="p2", parent_id=p.id)
        assert child.id == x.id + 1
        assert child.path == f"/{q.id}/{p.id}/{child.id}" and child.depth == 2
        two.delete_task(plan_id, p.id)
        with pytest.raises(TaskNotFound):
            one.create_task(plan_id, name="orphan", parent_id=p.id)
        assert sorted(one.get_plan_tree(plan_id).nodes) == [q.id, x.id]


def test_cached_parent_paths_follow_this_connections_moves_deletes_and_rollbacks(
        repo, plan_id):
    a = repo.create_task(plan_id, name="a")
    b = repo.create_task(plan_id, name="b", parent_id=a.id)
    other = repo.create_task(plan_id, name="other")
    repo.move_task(plan_id, a.id, new_parent_id=other.id)
    c = repo.create_task(plan_id, name="c", parent_id=b.id)
    assert c.path == f"/{other.id}/{a.id}/{b.id}/{c.id}" and c.depth == 3
    repo.delete_task(plan_id, a.id)
    with pytest.raises(TaskNotFound):
        repo.create_task(plan_id, name="under a deleted task", parent_id=b.id)
    with pytest.raises(InvalidInput):  # rolled back: its ids and paths were never real
        repo.create_tasks(plan_id, [{"name": "d"}, {"name": "e", "parent_index": 0},
                                    {"name": ""}])
    f = repo.create_task(plan_id, name="f", parent_id=other.id)
    assert f.path == f"/{other.id}/{f.id}"
    assert repo.get_node(plan_id, f.id) == f


def test_task_ids_are_never_reused(repo, plan_id):
    a = repo.create_task(plan_id, name="a")
    b = repo.create_task(plan_id, name="b")
    repo.delete_task(plan_id, b.id)
    c = repo.create_task(plan_id, name="c")
    assert c.id > b.id > a.id
    nodes = repo.create_tasks(plan_id, [{"name": "d"}, {"name": "e"}])
    assert min(n.id for n in nodes) > c.id


# --- read ------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan, task, error", [
    (999, 1, PlanNotFound),
    (0, 1, InvalidId),
    (-3, 1, InvalidId),
    ("1", 1, InvalidId),
    (True, 1, InvalidId),
    (2**63, 1, InvalidId),
    ("PLAN", 999, TaskNotFound),
    ("PLAN", "1", InvalidInput),
    ("PLAN", None, InvalidInput),
])
def test_unknown_or_malformed_ids_raise_typed_errors(repo, plan_id, plan, task, error):
    repo.create_task(plan_id, name="a")
    plan = plan_id if plan == "PLAN" else plan
    with pytest.raises(error):
        repo.get_node(plan, task)
    for call in (lambda: repo.update_task(plan, task, name="x"),
                 lambda: repo.delete_task(plan, task),
                 lambda: repo.move_task(plan, task, new_parent_id=None)):
        with pytest.raises(error):
            call()
    if not isinstance(task, int) or plan != plan_id:
        return
    assert [n.name for n in repo.get_plan_tree(plan_id).nodes.values()] == ["a"]


def test_to_outline_limits_depth_and_count(repo, plan_id):
    top = repo.create_task(plan_id, name="top", status="done")
    parent = top
    for depth in range(1, 6):
        parent = repo.create_task(plan_id, name=f"d{depth}", parent_id=parent.id)
    outline = repo.get_plan_tree(plan_id).to_outline(max_depth=2)
    assert outline.splitlines() == [
        f"Plan #{plan_id}: tree ops",
        f"- [done] top (#{top.id})",
        f"  - [pending] d1 (#{top.id + 1})",
        "... 4 more tasks not shown",
    ]
    assert "... 5 more" in repo.get_plan_tree(plan_id).to_outline(max_nodes=1)


# --- update ----------------------------------------------------------------------------------


def test_update_changes_only_given_fields(repo, plan_id):
    node = repo.create_task(plan_id, name="a", instruction="do it", metadata={"x": 1})
    updated = repo.update_task(plan_id, node.id, status="running")
    assert (updated.name, updated.instruction, updated.metadata) == ("a", "do it", {"x": 1})
    assert updated.status == "running" and updated.context_updated_at is None
    assert updated.updated_at >= node.updated_at
    updated = repo.update_task(plan_id, node.id, name="b", metadata={"y": 2},
                               execution_result="ok")
    assert (updated.name, updated.metadata, updated.execution_result) == ("b", {"y": 2}, "ok")
    assert updated.context_updated_at is None


@pytest.mark.parametrize("field, value", [
    ("context_combined", "all context"),
    ("context_sections", [{"title": "s1", "body": "b"}, "plain"]),
    ("context_meta", {"tokens": 12}),
])
def test_context_changes_stamp_context_updated_at(repo, plan_id, field, value):
    node = repo.create_task(plan_id, name="a")
    updated = repo.update_task(plan_id, node.id, **{field: value})
    assert getattr(updated, field) == value
    assert updated.context_updated_at is not None
    assert updated.context_updated_at >= node.created_at


def test_dependencies_replace_and_are_validated(repo, plan_id):
    a, b, c, d = (repo.create_task(plan_id, name=n) for n in "abcd")
    assert repo.update_task(plan_id, d.id, dependencies=[a.id, b.id, a.id]).dependencies == [
        a.id, b.id]
    assert repo.update_task(plan_id, d.id, dependencies=[c.id]).dependencies == [c.id]
    assert repo.update_task(plan_id, d.id, dependencies=[]).dependencies == []
    repo.update_task(plan_id, b.id, dependencies=[a.id])
    repo.update_task(plan_id, c.id, dependencies=[b.id])
    before = repo.get_plan_tree(plan_id)
    for task, deps, error in [
        (a.id, [a.id], DependencyCycle),  # itself
        (a.id, [b.id], DependencyCycle),  # a <- b
        (a.id, [d.id, c.id], DependencyCycle),  # a <- b <- c, second edge closes it
        (a.id, [999], TaskNotFound),
        (a.id, [d.id, 999], TaskNotFound),
        (a.id, "b", InvalidInput),
        (a.id, [1.5], InvalidInput),
    ]:
        with pytest.raises(error):
            repo.update_task(plan_id, task, dependencies=deps, name="changed")
        assert repo.get_plan_tree(plan_id) == before


@pytest.mark.parametrize("kwargs", [
    {"name": ""}, {"name": 3}, {"status": "  "}, {"metadata": "x"}, {"context_meta": [1]},
    {"context_sections": "text"}, {"instruction": 5}, {"execution_result": {"a": 1}},
])
def test_update_refusals_change_nothing(repo, plan_id, kwargs):
    node = repo.create_task(plan_id, name="a")
    before = repo.get_plan_tree(plan_id)
    with pytest.raises(InvalidInput):
        repo.update_task(plan_id, node.id, **kwargs)
    assert repo.get_plan_tree(plan_id) == before


# --- delete ----------------------------------------------------------------------------------


def test_delete_removes_subtree_and_its_edges(repo, plan_id):
    keep = repo.create_task(plan_id, name="keep")
    top = repo.create_task(plan_id, name="top")
    kid = repo.create_task(plan_id, name="kid", parent_id=top.id)
    grand = repo.create_task(plan_id, name="grand", parent_id=kid.id, dependencies=[keep.id])
    last = repo.create_task(plan_id, name="last", dependencies=[grand.id, keep.id])
    repo.update_task(plan_id, keep.id, dependencies=[kid.id])
    assert repo.delete_task(plan_id, top.id) == 3
    tree = repo.get_plan_tree(plan_id)
    assert set(tree.nodes) == {keep.id, last.id}
    assert tree.nodes[keep.id].dependencies == []
    assert tree.nodes[last.id].dependencies == [keep.id]
    assert tree.nodes[last.id].position == 1
    with raw(repo, plan_id) as conn:
        assert conn.execute("SELECT task_id, depends_on FROM task_dependencies").fetchall() == [
            (last.id, keep.id)]
    with pytest.raises(TaskNotFound):
        repo.delete_task(plan_id, top.id)
    assert_dense(repo, plan_id)


def test_delete_does_not_touch_tasks_whose_path_shares_a_prefix(repo, plan_id):
    """Subtree ranges are by path: /1 must not take /10, /11... with it."""
    first = repo.create_task(plan_id, name="first")
    others = [repo.create_task(plan_id, name=f"o{i}") for i in range(12)]
    child = repo.create_task(plan_id, name="child", parent_id=first.id)
    assert repo.delete_task(plan_id, first.id) == 2
    assert set(repo.get_plan_tree(plan_id).nodes) == {o.id for o in others}
    assert child.id not in repo.get_plan_tree(plan_id).nodes


# --- move ------------------------------------------------------------------------------------


def test_move_rewrites_the_subtree_paths_and_depths(repo, plan_id):
    a = repo.create_task(plan_id, name="a")
    b = repo.create_task(plan_id, name="b")
    kid = repo.create_task(plan_id, name="kid", parent_id=a.id)
    grand = repo.create_task(plan_id, name="grand", parent_id=kid.id)
    moved = repo.move_task(plan_id, kid.id, new_parent_id=b.id)
    assert (moved.parent_id, moved.path, moved.depth, moved.position) == (
        b.id, f"/{b.id}/{kid.id}", 1, 0)
    g = repo.get_node(plan_id, grand.id)
    assert (g.path, g.depth) == (f"/{b.id}/{kid.id}/{grand.id}", 2)
    moved = repo.move_task(plan_id, kid.id, new_parent_id=None, new_position=0)
    assert (moved.path, moved.depth, moved.position) == (f"/{kid.id}", 0, 0)
    assert repo.get_node(plan_id, grand.id).path == f"/{kid.id}/{grand.id}"
    assert names(repo, plan_id) == ["kid", "a", "b"]
    assert_dense(repo, plan_id)


def test_move_reorders_within_siblings(repo, plan_id):
    nodes = [repo.create_task(plan_id, name=f"s{i}") for i in range(5)]
    repo.move_task(plan_id, nodes[4].id, new_parent_id=None, new_position=0)
    assert names(repo, plan_id) == ["s4", "s0", "s1", "s2", "s3"]
    repo.move_task(plan_id, nodes[4].id, new_parent_id=None, new_position=2)
    assert names(repo, plan_id) == ["s0", "s1", "s4", "s2", "s3"]
    repo.move_task(plan_id, nodes[0].id, new_parent_id=None)  # None = last
    assert names(repo, plan_id) == ["s1", "s4", "s2", "s3", "s0"]
    repo.move_task(plan_id, nodes[3].id, new_parent_id=None, new_position=99)
    assert names(repo, plan_id) == ["s1", "s4", "s2", "s0", "s3"]
    assert_dense(repo, plan_id)


def test_move_under_itself_or_a_descendant_is_refused(repo, plan_id):
    a = repo.create_task(plan_id, name="a")
    kid = repo.create_task(plan_id, name="kid", parent_id=a.id)
    grand = repo.create_task(plan_id, name="grand", parent_id=kid.id)
    before = repo.get_plan_tree(plan_id)
    for target in (a.id, kid.id, grand.id):
        with pytest.raises(TreeCycle):
            repo.move_task(plan_id, a.id, new_parent_id=target)
        assert repo.get_plan_tree(plan_id) == before
    for kwargs, error in [({"new_parent_id": 999}, TaskNotFound),
                          ({"new_parent_id": "x"}, InvalidInput),
                          ({"new_parent_id": None, "new_position": -1}, InvalidInput),
                          ({"new_parent_id": None, "new_position": "0"}, InvalidInput)]:
        with pytest.raises(error):
            repo.move_task(plan_id, kid.id, **kwargs)
        assert repo.get_plan_tree(plan_id) == before


# --- wide plans: sparse keys -----------------------------------------------------------------


def test_inserting_among_2000_siblings_does_not_rewrite_them(repo, plan_id):
    parent = repo.create_task(plan_id, name="parent")
    kids = repo.create_tasks(plan_id, [{"name": f"k{i}", "parent_id": parent.id}
                                       for i in range(2000)])
    assert [k.position for k in kids] == list(range(2000))
    keys = stored_keys(repo, plan_id)

    front = repo.create_task(plan_id, name="front", parent_id=parent.id, position=0)
    middle = repo.create_task(plan_id, name="middle", parent_id=parent.id, position=1000)
    anchored = repo.create_task(plan_id, name="anchored", anchor_task_id=kids[1500].id,
                                anchor_position="before")
    repo.move_task(plan_id, kids[1999].id, new_parent_id=parent.id, new_position=1)

    after = stored_keys(repo, plan_id)
    changed = {tid for tid in keys if after[tid] != keys[tid]}
    assert changed == {kids[1999].id}  # only the moved row got a new key
    assert (front.position, middle.position, anchored.position) == (0, 1000, 1502)
    tree = repo.get_plan_tree(plan_id)
    order = [tree.nodes[i].name for i in tree.children[parent.id]]
    assert order[:3] == ["front", "k1999", "k0"]
    assert order[1001] == "middle" and order[1503] == "anchored"
    assert [tree.nodes[i].position for i in tree.children[parent.id]] == list(range(2003))


def test_exhausted_gaps_renumber_one_group_and_keep_order(repo, plan_id):
    other = repo.create_task(plan_id, name="other")
    other_kids = [repo.create_task(plan_id, name=f"o{i}", parent_id=other.id)
                  for i in range(3)]
    group = repo.create_task(plan_id, name="group")
    repo.create_task(plan_id, name="first", parent_id=group.id)
    repo.create_task(plan_id, name="last", parent_id=group.id)
    untouched = {k.id: stored_keys(repo, plan_id)[k.id] for k in other_kids}
    expected = ["first", "last"]
    for i in range(60):  # each insert halves the same gap: it runs out after ~20
        repo.create_task(plan_id, name=f"i{i}", parent_id=group.id, position=1)
        expected.insert(1, f"i{i}")
    for i in range(30):
        repo.create_task(plan_id, name=f"f{i}", parent_id=group.id, position=0)
        expected.insert(0, f"f{i}")
    assert names(repo, plan_id, group.id) == expected
    assert {k: stored_keys(repo, plan_id)[k] for k in untouched} == untouched
    assert_dense(repo, plan_id)


# --- stored form -----------------------------------------------------------------------------


def test_json_columns_hold_valid_json_and_payloads_are_redacted(repo, plan_id):
    node = repo.create_task(plan_id, name="a", metadata={"api_key": "sk-live-123", "n": 1})
    repo.update_task(plan_id, node.id, context_sections=["x", {"y": [1, None]}],
                     context_meta={"password": "hunter2", "ok": True})
    repo.create_task(plan_id, name="b")  # NULL JSON columns
    repo.create_snapshot(plan_id, note="s")
    with raw(repo, plan_id) as conn:
        bad = conn.execute(
            "SELECT id FROM tasks WHERE NOT (json_valid(coalesce(metadata, '{}')) AND "
            "json_valid(coalesce(context_sections, '[]')) AND "
            "json_valid(coalesce(context_meta, '{}')))").fetchall()
        assert bad == []
        assert conn.execute("SELECT json_valid(snapshot) FROM snapshots").fetchall() == [(1,)]
        text = " ".join(str(r) for r in conn.execute("SELECT * FROM tasks").fetchall())
    assert "sk-live-123" not in text and "hunter2" not in text
    stored = repo.get_node(plan_id, node.id)
    assert stored.metadata["n"] == 1 and stored.metadata["api_key"] != "sk-live-123"
    assert stored.context_sections == ["x", {"y": [1, None]}]


# --- PlanSession -----------------------------------------------------------------------------


def test_plan_session_binds_the_plan_and_refresh_rereads(repo, plan_id):
    session = repo.session(plan_id)
    a = session.create_task(name="a")
    b, c = session.create_tasks([{"name": "b", "parent_id": a.id}, {"name": "c"}])
    assert session.get_node(b.id).parent_id == a.id
    session.update_task(c.id, status="done", dependencies=[a.id])
    session.move_task(b.id, new_parent_id=None, new_position=0)
    tree = session.refresh()
    assert [tree.nodes[i].name for i in tree.roots] == ["b", "a", "c"]
    repo.create_task(plan_id, name="from elsewhere")
    assert len(session.tree) == 3 and len(session.refresh()) == 4
    assert session.delete_task(c.id) == 1
    assert session.summary().id == plan_id
    with pytest.raises(InvalidId):
        repo.session(0)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=60).filter(lambda s: s.strip() and "\x00" not in s),
       metadata=st.dictionaries(st.text(max_size=8), _json, max_size=5),
       sections=st.lists(_json, max_size=4))
def test_any_text_and_json_round_trip_as_the_payload_layer_stored_them(
        repo, plan_id, name, metadata, sections):
    created = repo.create_task(plan_id, name=name, metadata=metadata)
    assert created == repo.get_node(plan_id, created.id)  # built without reading it back
    node = repo.update_task(plan_id, created.id, context_sections=sections)
    assert node.name == repo.payloads.text(name)
    assert node.metadata == (jsonutil.loads(repo.payloads.json(metadata)) or {})
    assert node.context_sections == jsonutil.loads(repo.payloads.json(sections))
    assert repo.get_plan_tree(plan_id).nodes[node.id] == node
