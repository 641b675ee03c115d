"""Hostile input: every call succeeds or raises a PlanDBError subclass with a clear message,
and a failed call changes nothing (every table of every file compared before and after).

The generated calls come from `reliability.hostile.calls()`; `scripts/stress.py` runs the same
property with many more examples (PLANDB_STRESS=1 does here too). Cases hypothesis found once
are pinned below as plain regression tests.
"""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path

import pytest
from reliability.hostile import Call, Harness, Ref, huge_cases, runner

from plandb import (
    DatabaseConfig,
    DependencyCycle,
    InvalidId,
    InvalidInput,
    PlanDBError,
    PlanNode,
    PlanNotFound,
    PlanRepository,
    PlanTree,
    SchemaTooNew,
    TaskNotFound,
    TreeCycle,
)
from plandb import schema as sch
from plandb.timestamps import normalize

STRESS = os.environ.get("PLANDB_STRESS") == "1"


@pytest.fixture(scope="module")
def shared_harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("hostile") / "db")
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def harness(shared_harness):
    """One root for the whole module (its base plan is rebuilt whenever a call damages it)."""
    shared_harness.findings.clear()
    yield shared_harness
    # The pool stays usable; its connections opened during this test are closed now, so
    # the leaked-connection check sees none.
    shared_harness.repo.flush()
    shared_harness.repo.pool.discard_under(shared_harness.root)


def test_generated_hostile_calls_are_refused_cleanly_and_change_nothing(harness):
    runner(harness, max_examples=3000 if STRESS else 500)()
    assert harness.findings == []
    assert harness.refused > 0 and harness.succeeded > 0


def test_50mb_values_in_every_kind_of_slot(harness):
    """Huge strings: refused where a limit applies, stored (redacted/truncated) elsewhere."""
    for label, fn in huge_cases(harness):
        harness.attempt(label, fn)
    assert harness.findings == []
    node = harness.repo.create_task(harness.base_id, name="after the huge ones")
    assert harness.repo.get_node(harness.base_id, node.id).name == "after the huge ones"


@pytest.mark.parametrize("call", [
    Call("list_plans", (), {"limit": 2**64}),
    Call("list_plans", (), {"limit": None, "offset": 10**30}),
    Call("list_plans", (), {"owner": ["x"]}),
    Call("list_plans", (), {"owner": "\ud800"}),
    Call("list_plans", (), {"offset": "x" * 10_000}),
    Call("create_plan", ("title",), {"owner": "\ud800"}),
    Call("create_plan", ("\udfff",)),
    Call("create_task", (Ref("plan"),), {"name": "n", "parent_id": 10**30}),
    Call("create_task", (Ref("plan"),), {"name": "n", "status": "a\ud800"}),
    Call("get_node", (Ref("plan"), -(2**70))),
    Call("move_task", (Ref("plan"), Ref("task", 3)), {"new_parent_id": None,
                                                      "new_position": 2**100}),
    Call("create_task", (Ref("plan"),), {"name": "n", "position": 2**64}),
    Call("move_task", (Ref("plan"), Ref("task", 0)), {"new_parent_id": Ref("task", 2)}),
    Call("update_task", (Ref("plan"), Ref("task", 4)), {"dependencies": [Ref("task", 2)]}),
    Call("append_decomposition_job_log", (None,), {"job_id": Ref("job"), "message": "m",
                                                    "timestamp": -1.5e16}),
    Call("append_decomposition_job_log", (Ref("plan"),), {"job_id": Ref("job"),
                                                          "message": "m", "timestamp": 2**64}),
    Call("cache_put", (["x"], "model", "in", "value", None)),
    Call("cache_get", ({"x": 1}, "model", "in")),
    Call("append_chat_message", (Ref("session"),), {"role": "x" * 10_000, "content": "c"}),
    Call("search_memories", (Ref("session"), "q"), {"match": "é" * 10_001}),
], ids=repr)
def test_regressions_found_by_hypothesis(harness, call):
    harness.attempt(call)
    assert harness.findings == []


@pytest.mark.parametrize("field,value", [
    ("parent_id", [1]), ("parent_id", 2**70), ("position", None), ("position", "1"),
    ("dependencies", None), ("dependencies", [[1]]), ("context_sections", 5),
    ("created_at", {"a": 1}), ("created_at", 2**70), ("context_updated_at", object()),
    ("id", "1"), ("status", "\ud800"),
])
def test_upsert_plan_tree_refuses_malformed_nodes(harness, field, value):
    tree = PlanTree(id=harness.base_id, title="t")
    tree.nodes[1] = PlanNode(id=1, plan_id=harness.base_id, name="a")
    tree.nodes[2] = PlanNode(id=2, plan_id=harness.base_id, name="b", parent_id=1, position=1)
    setattr(tree.nodes[2], field, value)
    result = harness.attempt(f"upsert_plan_tree(node.{field}={value!r:.30})",
                             lambda: harness.repo.upsert_plan_tree(tree, note="n"))
    assert harness.findings == []
    assert isinstance(result, InvalidInput)


@pytest.mark.parametrize("call,expected", [
    (Call("move_task", (Ref("plan"), Ref("task", 0)), {"new_parent_id": Ref("task", 2)}),
     TreeCycle),  # root under its grandchild
    (Call("move_task", (Ref("plan"), Ref("task", 1)), {"new_parent_id": Ref("task", 1)}),
     TreeCycle),  # under itself
    (Call("update_task", (Ref("plan"), Ref("task", 4)), {"dependencies": [Ref("task", 2)]}),
     DependencyCycle),  # leaf -> grandchild while grandchild -> leaf
    (Call("update_task", (Ref("plan"), Ref("task", 3)), {"dependencies": [Ref("task", 3)]}),
     DependencyCycle),
    (Call("create_task", (Ref("plan"),), {"name": "n", "parent_id": 10**9}), TaskNotFound),
    (Call("create_task", (Ref("plan"),), {"name": "n", "parent_id": -1}), TaskNotFound),
    (Call("move_task", (Ref("plan"), Ref("task", 1)), {"new_parent_id": 10**9}), TaskNotFound),
    (Call("create_task", (Ref("plan"),), {"name": "n", "position": -1}), InvalidInput),
    (Call("move_task", (Ref("plan"), Ref("task", 1)), {"new_parent_id": None,
                                                       "new_position": -3}), InvalidInput),
    (Call("get_plan_tree", ("../plan_1",)), InvalidId),
    (Call("get_plan_tree", (-1,)), InvalidId),
    (Call("get_plan_tree", (2**63,)), InvalidId),
    (Call("get_plan_tree", (10**15,)), PlanNotFound),
    (Call("create_task", (Ref("plan"),), {"name": "'; DROP TABLE tasks; --",
                                          "metadata": {"nan": math.nan}}), None),
], ids=lambda v: repr(v) if isinstance(v, Call) else getattr(v, "__name__", "ok"))
def test_cycles_unknown_ids_and_bad_positions_get_their_own_typed_errors(harness, call,
                                                                          expected):
    harness.reset_base()  # the tree and its dependency edge exactly as BASE_SHAPE says
    result = harness.attempt(call)
    assert harness.findings == []
    if expected is None:
        assert not isinstance(result, Exception), result
        assert harness.repo.get_node(harness.base_id, result.id).name == call.kwargs["name"]
    else:
        assert type(result) is expected, result


def test_out_of_range_epochs_are_invalid_input():
    for value in (-1.5e16, 2**64, math.nan, math.inf):
        with pytest.raises(InvalidInput):
            normalize(value)


def test_the_harness_catches_a_failed_call_that_wrote(tmp_path):
    """A call that writes and then raises must be reported: the check is not a rubber stamp."""
    h = Harness(tmp_path / "db", strict=False)
    try:
        def writes_then_fails():
            h.repo.create_task(h.base_id, name="sneaky")
            raise InvalidInput("refused, supposedly without writing")

        h.attempt("writes_then_fails", writes_then_fails)
        h.attempt("raises_keyerror", lambda: {}["x"])
        h.attempt("long_message", lambda: (_ for _ in ()).throw(PlanDBError("y" * 5000)))
    finally:
        h.close()
    assert len(h.findings) == 3, h.findings
    assert "plans/plan_" in h.findings[0].what and "tasks" in h.findings[0].what
    assert "KeyError" in h.findings[1].what
    assert "5000 characters" in h.findings[2].what


# --- files from a newer plandb -------------------------------------------------------------


def _make_too_new(path: Path, kind: str) -> None:
    newer = sch.latest_version(kind) + 1
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE plan_meta SET value = ? WHERE key = 'schema_version'", (str(newer),))
        con.execute(f"PRAGMA user_version = {newer}")
    con.close()


def _side_files(path: Path) -> list[str]:
    return [s for s in ("-wal", "-shm", "-journal") if Path(f"{path}{s}").exists()]


def _touch_every_kind(root: Path) -> dict[str, Path]:
    with PlanRepository(root) as repo:
        plan = repo.create_plan("p")
        repo.create_task(plan.id, name="t")
        repo.append_action_log(plan_id=None, job_id="j", action_kind="k", action_name="a",
                               status="ok")
        repo.cache("llm").put("m", "in", "out")
        repo.add_memory("s1", content="remember this")
        cfg = repo.config
        return {"plan": cfg.plan_db_path(plan.id), "registry": cfg.main_db_path,
                "jobs": cfg.system_jobs_db_path, "cache": cfg.cache_db_path("llm"),
                "session": cfg.session_db_path("s1")}


CALLS = {
    "plan": lambda repo, pid: repo.get_plan_tree(pid),
    "registry": lambda repo, pid: repo.list_plans(),
    "jobs": lambda repo, pid: repo.list_action_logs(None),
    "cache": lambda repo, pid: repo.cache("llm").get("m", "in"),
    "session": lambda repo, pid: repo.list_memories("s1"),
}


@pytest.mark.parametrize("kind", sorted(CALLS))
def test_a_file_from_a_newer_plandb_is_refused_untouched(tmp_path, kind):
    root = tmp_path / "db"
    paths = _touch_every_kind(root)
    path = paths[kind]
    _make_too_new(path, kind)
    before = path.read_bytes()
    assert _side_files(path) == []
    pid = int(paths["plan"].stem.split("_")[1])
    with PlanRepository(DatabaseConfig(root)) as repo:
        for _ in range(2):  # and again: a refusal is not cached into a half-open state
            with pytest.raises(SchemaTooNew) as err:
                CALLS[kind](repo, pid)
            assert err.value.path == str(path)
            assert path.name in str(err.value) and "not modified" in str(err.value)
        if kind != "registry":  # everything else keeps working
            assert repo.list_plans()[0].title == "p"
    assert path.read_bytes() == before
    assert _side_files(path) == []


def test_errors_raised_are_plandb_errors_with_codes():
    """The classes hostile calls end in carry a stable code (the CLI's JSON error shape)."""
    import plandb.errors as errors

    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, PlanDBError):
            assert isinstance(cls.code, str) and cls.code
