"""A damaged plan file (garbage, cut in half, a garbage header, garbage pages, emptied) breaks
only its own plan: the registry, the other plans, listing, creating plans and `plandb inspect`
keep working, the error is CorruptDatabase naming the file, and plandb never writes into it."""

from __future__ import annotations

import shutil

import pytest
from reliability.corruption import DAMAGE, build_root, damage, isolation_problems

from plandb import CorruptDatabase, PlanRepository


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A root with three plans of 400 tasks each, built once and copied per test."""
    root = tmp_path_factory.mktemp("pristine") / "db"
    return root, build_root(root)


CASES = [(kind, 7) for kind in sorted(DAMAGE)] + [
    # Garbage pages found only mid-read: the error once said "database", not the file.
    ("page_garbage", 1), ("page_garbage", 2)]


@pytest.mark.parametrize("kind,seed", CASES)
def test_damage_to_one_plan_file_stays_in_that_plan(tmp_path, pristine, kind, seed):
    src, before = pristine
    root = tmp_path / "db"
    shutil.copytree(src, root)
    victim = sorted(before)[1]
    damage(root, victim, kind, seed=seed)
    assert isolation_problems(root, victim, before, kind) == []


def test_a_plan_file_emptied_while_open_is_not_silently_recreated(tmp_path):
    """Regression: a 0-byte plan file used to be taken for a new one and given a fresh schema,
    hiding that its tasks were gone."""
    with PlanRepository(tmp_path / "db") as repo:
        plan = repo.create_plan("p")
        repo.create_task(plan.id, name="t")
        path = repo.config.plan_db_path(plan.id)
    path.write_bytes(b"")
    with PlanRepository(tmp_path / "db") as repo:
        with pytest.raises(CorruptDatabase, match=path.name):
            repo.create_task(plan.id, name="again")
        assert [p.id for p in repo.list_plans()] == [plan.id]
    assert path.stat().st_size == 0
