"""kill -9 at random points: every file opens and passes integrity_check, reconcile leaves the
registry and the files consistent, and every acknowledged write is there.

The quick form (>= 50 kills) runs in `make test`; `scripts/stress.py` runs the same driver
(`reliability.kills.run_kills`) for >= 500 kills. PLANDB_STRESS=1 makes this one 500 too;
PLANDB_SEED picks another scripted mix.
"""

from __future__ import annotations

import os
import sqlite3

from reliability.checks import reconcile_root, registry_problems
from reliability.kills import KillRun, run_kills
from reliability.legacy import write_legacy_plan

from plandb import PlanRepository

STRESS = os.environ.get("PLANDB_STRESS") == "1"
SEED = int(os.environ.get("PLANDB_SEED", "9"))


def test_kill9_at_random_points_loses_no_acknowledged_write(tmp_path):
    kills = 500 if STRESS else 50
    res = run_kills(tmp_path / "db", tmp_path / "work", kills=kills, seed=SEED)
    assert res.failures() == [], f"seed {SEED}:\n" + "\n".join(res.failures()[:20])
    assert res.kills >= kills
    # The scripted mix really ran each kind of step, and kills landed inside calls.
    for op in ("create_plan", "delete_plan", "create_task", "move_task", "delete_task",
               "upsert", "legacy", "log", "backup", "bad"):
        assert res.ops.get(op, 0) > 0, f"seed {SEED}: no {op} completed: {res.ops}"
    assert res.in_flight_applied + res.in_flight_dropped > 0
    assert res.backups_checked > 0


def test_the_checker_notices_an_acknowledged_task_that_vanished(tmp_path):
    """Delete an acknowledged task behind plandb's back: the next check must call it lost."""
    run = KillRun(tmp_path / "db", tmp_path / "work", seed=3, delay_ms=(150, 200))
    for i in range(3):
        run.round(i)
    assert run.result.failures() == []
    title, plan = next((t, p) for t, p in run.model.items() if p["tasks"])
    parents = set(plan["tasks"].values())
    name = next(n for n in plan["tasks"] if n not in parents)  # a leaf: nothing dangles
    with PlanRepository(tmp_path / "db") as repo:
        pid = next(s.id for s in repo.list_plans() if s.title == title)
        path = repo.config.plan_db_path(pid)
    con = sqlite3.connect(path)
    with con:
        con.execute("DELETE FROM tasks WHERE name = ?", (name,))
    con.close()
    run.check(99, [])
    assert any(name in x for x in run.result.lost), run.result.lost


def test_a_legacy_plan_file_cut_before_its_upgrade_is_registered_by_reconcile(tmp_path):
    """What a kill during the first open of a legacy file leaves: the file in plans/, still in
    the old shape (the upgrade transaction rolled back), no registry row yet."""
    root = tmp_path / "db"
    with PlanRepository(root) as repo:
        repo.create_plan("regular")
        path = repo.config.plan_db_path(4242)
    write_legacy_plan(path, plan_id=4242, title="old one", tasks=[("a", None), ("b", "a")])
    first = reconcile_root(root, repair=True)
    assert first is not None
    assert reconcile_root(root, repair=False) == []
    assert registry_problems(root) == []
    with PlanRepository(root) as repo:
        assert {p.title for p in repo.list_plans()} == {"regular", "old one"}
        tree = repo.get_plan_tree(4242)
        assert sorted(n.name for n in tree.nodes.values()) == ["a", "b"]
