"""A hypothesis state machine drives random create / update / move / delete / dependency calls
against one plan and checks the whole stored tree after every step against an in-memory model:
paths, depths, dense positions in the model's order, parent links, dependency edges. Cycles
(tree and dependency) must always be refused, and a refused call must change nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from plandb.errors import DependencyCycle, PlanDBError, TaskNotFound, TreeCycle
from plandb.repository import PlanRepository

STRESS = os.environ.get("PLANDB_STRESS") == "1"


class Model:
    """The tree as plain dicts: the oracle."""

    def __init__(self) -> None:
        self.parent: dict[int, int | None] = {}
        self.children: dict[int | None, list[int]] = {None: []}
        self.deps: dict[int, set[int]] = {}
        self.name: dict[int, str] = {}
        self.status: dict[int, str] = {}
        self.last_id = 0

    def ids(self) -> list[int]:
        return sorted(self.parent)

    def siblings(self, parent: int | None) -> list[int]:
        return self.children.setdefault(parent, [])

    def path(self, tid: int) -> str:
        parts = []
        node: int | None = tid
        while node is not None:
            parts.append(node)
            node = self.parent[node]
        return "".join(f"/{p}" for p in reversed(parts))

    def subtree(self, tid: int) -> list[int]:
        out, stack = [], [tid]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(self.children.get(node, []))
        return out

    def reaches(self, start: int, target: int) -> bool:
        """`start` depends on `target`, directly or not."""
        seen, stack = set(), [start]
        while stack:
            node = stack.pop()
            if node == target:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(self.deps.get(node, ()))
        return False

    def dependency_error(self, tid: int, deps: list[int]) -> type[PlanDBError] | None:
        """The error replacing `tid`'s dependencies with `deps` must raise, or None."""
        for dep in deps:
            if dep == tid:
                return DependencyCycle
            if dep not in self.parent:
                return TaskNotFound
        old = self.deps[tid]
        self.deps[tid] = set()
        try:
            return DependencyCycle if any(self.reaches(d, tid) for d in deps) else None
        finally:
            self.deps[tid] = old


class TreeMachine(RuleBasedStateMachine):
    root_dir: Path  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.repo = PlanRepository(self.root_dir)
        self.plan = self.repo.create_plan("stateful").id
        self.model = Model()

    def teardown(self) -> None:
        self.repo.close()

    # --- helpers -------------------------------------------------------------------------------

    def refused(self, error: type[PlanDBError], call) -> None:
        """`call` must raise `error` and leave the stored tree exactly as it was."""
        before = self.repo.get_plan_tree(self.plan)
        try:
            call()
        except error:
            pass
        else:
            raise AssertionError(f"expected {error.__name__}")
        assert self.repo.get_plan_tree(self.plan) == before

    def pick(self, data, *, allow_none: bool = False) -> int | None:
        ids = self.model.ids()
        choices = ([None] if allow_none else []) + ids
        return data.draw(st.sampled_from(choices)) if choices else None

    # --- rules ---------------------------------------------------------------------------------

    @rule(data=st.data())
    def create(self, data) -> None:
        m = self.model
        parent = self.pick(data, allow_none=True)
        siblings = m.siblings(parent)
        mode = data.draw(st.sampled_from(["append", "position", "before", "after"]))
        kwargs: dict = {"parent_id": parent}
        if mode == "position":
            rank = data.draw(st.integers(0, len(siblings) + 2))
            kwargs["position"] = rank
            index = min(rank, len(siblings))
        elif mode in ("before", "after") and siblings:
            anchor = data.draw(st.sampled_from(siblings))
            kwargs = {"anchor_task_id": anchor, "anchor_position": mode}
            if data.draw(st.booleans()):
                kwargs["parent_id"] = parent  # naming the anchor's own parent is fine
            index = siblings.index(anchor) + (mode == "after")
        else:
            index = len(siblings)
        ids = m.ids()
        deps = data.draw(st.lists(st.sampled_from(ids), max_size=3)) if ids else []
        m.last_id += 1
        name = f"t{m.last_id}"
        node = self.repo.create_task(self.plan, name=name, dependencies=deps, **kwargs)
        tid = node.id
        assert tid == m.last_id  # ids are never reused
        m.parent[tid] = parent
        siblings.insert(index, tid)
        m.deps[tid] = set(deps)
        m.name[tid] = name
        m.status[tid] = "pending"
        assert (node.parent_id, node.position, node.path, node.depth) == (
            parent, index, m.path(tid), m.path(tid).count("/") - 1)
        assert node.dependencies == sorted(set(deps))

    @rule(data=st.data())
    def create_bulk(self, data) -> None:
        m = self.model
        parent = self.pick(data, allow_none=True)
        specs: list[dict] = []
        parents: list[int | None] = []
        for i in range(data.draw(st.integers(1, 4))):
            if i and data.draw(st.booleans()):
                j = data.draw(st.integers(0, i - 1))
                specs.append({"name": f"b{m.last_id + i + 1}", "parent_index": j})
                parents.append(m.last_id + j + 1)
            else:
                specs.append({"name": f"b{m.last_id + i + 1}", "parent_id": parent})
                parents.append(parent)
        nodes = self.repo.create_tasks(self.plan, specs)
        for spec, node, parent_id in zip(specs, nodes, parents, strict=True):
            m.last_id += 1
            assert node.id == m.last_id
            m.parent[node.id] = parent_id
            m.siblings(parent_id).append(node.id)
            m.deps[node.id] = set()
            m.name[node.id] = spec["name"]
            m.status[node.id] = "pending"

    @rule()
    def upsert_unchanged(self) -> None:
        """Replacing the tree with itself keeps ids, order, paths and edges."""
        self.repo.upsert_plan_tree(self.repo.get_plan_tree(self.plan))

    @rule(data=st.data())
    def update(self, data) -> None:
        m = self.model
        tid = self.pick(data)
        if tid is None:
            return
        kwargs: dict = {}
        if data.draw(st.booleans()):
            kwargs["name"] = f"u{tid}-{data.draw(st.integers(0, 9))}"
        if data.draw(st.booleans()):
            kwargs["status"] = data.draw(st.sampled_from(["pending", "running", "done"]))
        deps = None
        if data.draw(st.booleans()):
            deps = data.draw(st.lists(st.sampled_from(m.ids()), max_size=3))
            kwargs["dependencies"] = deps
        error = m.dependency_error(tid, deps) if deps is not None else None
        if error is not None:
            self.refused(error, lambda: self.repo.update_task(self.plan, tid, **kwargs))
            return
        node = self.repo.update_task(self.plan, tid, **kwargs)
        m.name[tid] = kwargs.get("name", m.name[tid])
        m.status[tid] = kwargs.get("status", m.status[tid])
        if deps is not None:
            m.deps[tid] = set(deps)
        assert node == self.repo.get_node(self.plan, tid)

    @rule(data=st.data())
    def add_dependency(self, data) -> None:
        m = self.model
        tid, dep = self.pick(data), self.pick(data)
        if tid is None:
            return
        deps = sorted(m.deps[tid] | {dep})
        error = m.dependency_error(tid, deps)
        if error is not None:
            self.refused(error, lambda: self.repo.update_task(self.plan, tid, dependencies=deps))
            return
        self.repo.update_task(self.plan, tid, dependencies=deps)
        m.deps[tid] = set(deps)

    @rule(data=st.data())
    def move(self, data) -> None:
        m = self.model
        tid = self.pick(data)
        if tid is None:
            return
        # Bias towards the refused targets: the task itself and its descendants.
        inside = m.subtree(tid)
        if data.draw(st.integers(0, 3)) == 0:
            target = data.draw(st.sampled_from(inside))
        else:
            target = self.pick(data, allow_none=True)
        position = data.draw(st.none() | st.integers(0, 6))
        if target in inside:
            self.refused(TreeCycle, lambda: self.repo.move_task(
                self.plan, tid, new_parent_id=target, new_position=position))
            return
        node = self.repo.move_task(self.plan, tid, new_parent_id=target, new_position=position)
        m.siblings(m.parent[tid]).remove(tid)
        siblings = m.siblings(target)
        index = len(siblings) if position is None else min(position, len(siblings))
        siblings.insert(index, tid)
        m.parent[tid] = target
        assert (node.parent_id, node.position, node.path) == (target, index, m.path(tid))

    @rule(data=st.data())
    def delete(self, data) -> None:
        m = self.model
        tid = self.pick(data)
        if tid is None:
            return
        gone = m.subtree(tid)
        assert self.repo.delete_task(self.plan, tid) == len(gone)
        m.siblings(m.parent[tid]).remove(tid)
        for g in gone:
            del m.parent[g], m.deps[g], m.name[g], m.status[g]
            m.children.pop(g, None)
        for deps in m.deps.values():
            deps.difference_update(gone)

    @rule(data=st.data())
    def unknown_ids_are_refused(self, data) -> None:
        m = self.model
        ghost = m.last_id + data.draw(st.integers(1, 3))  # never allocated
        if data.draw(st.booleans()) and m.last_id and len(m.parent) < m.last_id:
            ghost = data.draw(st.sampled_from(  # deleted ids stay unknown
                sorted(set(range(1, m.last_id + 1)) - set(m.parent))))
        tid = self.pick(data)
        calls = [lambda: self.repo.create_task(self.plan, name="x", parent_id=ghost),
                 lambda: self.repo.create_task(self.plan, name="x", dependencies=[ghost]),
                 lambda: self.repo.update_task(self.plan, ghost, name="x"),
                 lambda: self.repo.delete_task(self.plan, ghost),
                 lambda: self.repo.move_task(self.plan, ghost, new_parent_id=None)]
        if tid is not None:
            calls += [lambda: self.repo.move_task(self.plan, tid, new_parent_id=ghost),
                      lambda: self.repo.update_task(self.plan, tid, dependencies=[ghost]),
                      lambda: self.repo.create_task(self.plan, name="x", anchor_task_id=ghost)]
        self.refused(TaskNotFound, data.draw(st.sampled_from(calls)))

    # --- the check after every step ------------------------------------------------------------

    @invariant()
    def stored_tree_matches_model(self) -> None:
        m = self.model
        tree = self.repo.get_plan_tree(self.plan)
        assert set(tree.nodes) == set(m.parent)
        assert tree.roots == m.children[None]
        assert tree.children == {p: kids for p, kids in m.children.items()
                                 if p is not None and kids}
        for tid, node in tree.nodes.items():
            path = m.path(tid)
            rank = m.children[m.parent[tid]].index(tid)
            assert (node.parent_id, node.path, node.depth, node.position) == (
                m.parent[tid], path, path.count("/") - 1, rank), tid
            assert (node.name, node.status) == (m.name[tid], m.status[tid])
            assert node.dependencies == sorted(m.deps[tid]), tid
            assert self.repo.get_node(self.plan, tid) == node


def test_random_tree_operations_match_the_model(tmp_path: Path):
    TreeMachine.root_dir = tmp_path / "db"
    run_state_machine_as_test(TreeMachine, settings=settings(
        max_examples=400 if STRESS else 60,
        stateful_step_count=60 if STRESS else 40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
