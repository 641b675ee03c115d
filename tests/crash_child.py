"""Child process for tests/test_crash_lifecycle.py: writes to a DB_ROOT until it is killed.

Usage: ``python tests/crash_child.py DB_ROOT MODE SEED``

Every call is announced with a ``DO <op> ...`` line and, once it has returned, acknowledged with
an ``ACK <op> ...`` line (both flushed), so the parent knows exactly which calls returned before
its ``kill -9`` and which single call may have been cut. Lines:

    DO/ACK create <plan_id|?> <seq>                 create_plan(title=f"p{seq}")
    DO/ACK delete <plan_id>                         delete_plan
    DO/ACK retitle <plan_id> <seq>                  update_plan(title=f"t{seq}")
    DO/ACK task <plan_id> <task_id|?> <parent|-> <seq>      create_task(name=f"n{seq}")
    DO/ACK bulk <plan_id> <ids|?> <parent|-> <seq> <k>      create_tasks: k tasks b{seq}.{i},
                                                            the first under parent, the rest
                                                            under the first
    DO/ACK rename <plan_id> <task_id> <seq>         update_task(name=f"u{seq}")
    DO/ACK drop <plan_id> <task_id>                 delete_task (subtree)

MODE ``random``: a seeded random mix of those calls, forever.
MODE ``script``: one plan with a few tasks, then update_plan, then delete_plan, then ``DONE``
and sleep (used with PLANDB_CRASH_AT to stop at one named step).
"""

from __future__ import annotations

import random
import sys
import time

from plandb.repository import PlanRepository


def say(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def _known_state(repo: PlanRepository) -> dict[int, dict[int, int | None]]:
    """plan id -> {task id: parent id} for every listed plan of this test."""
    plans = {}
    for summary in repo.list_plans(owner="crash"):
        tree = repo.get_plan_tree(summary.id)
        plans[summary.id] = {n.id: n.parent_id for n in tree.nodes.values()}
    return plans


def _subtree(tasks: dict[int, int | None], root: int) -> set[int]:
    out = {root}
    grew = True
    while grew:
        grew = False
        for tid, parent in tasks.items():
            if parent in out and tid not in out:
                out.add(tid)
                grew = True
    return out


def run_random(repo: PlanRepository, seed: int) -> None:
    rng = random.Random(seed)
    plans = _known_state(repo)
    seq = seed * 100_000
    ops = ["create", "delete", "retitle", "task", "bulk", "rename", "drop"]
    weights = [20, 12, 8, 25, 12, 13, 10]
    while True:
        seq += 1
        op = rng.choices(ops, weights)[0]
        if not plans or (op == "delete" and len(plans) < 3):
            op = "create"
        elif len(plans) > 8 and op == "create":
            op = "delete"
        pid = rng.choice(sorted(plans)) if plans else None
        tasks = plans.get(pid, {})
        if op in ("rename", "drop") and not tasks:
            op = "task"
        if op == "create":
            say("DO create ?", seq)
            tree = repo.create_plan(f"p{seq}", owner="crash", metadata={"seq": seq})
            plans[tree.id] = {}
            say("ACK create", tree.id, seq)
        elif op == "delete":
            say("DO delete", pid)
            repo.delete_plan(pid)
            del plans[pid]
            say("ACK delete", pid)
        elif op == "retitle":
            say("DO retitle", pid, seq)
            repo.update_plan(pid, title=f"t{seq}")
            say("ACK retitle", pid, seq)
        elif op == "task":
            parent = rng.choice([None, *sorted(tasks)])
            shown = "-" if parent is None else parent
            say("DO task", pid, "?", shown, seq)
            node = repo.create_task(pid, name=f"n{seq}", parent_id=parent)
            tasks[node.id] = parent
            say("ACK task", pid, node.id, shown, seq)
        elif op == "bulk":
            parent = rng.choice([None, *sorted(tasks)])
            shown = "-" if parent is None else parent
            k = rng.randint(2, 6)
            specs = [{"name": f"b{seq}.0", "parent_id": parent}] + [
                {"name": f"b{seq}.{i}", "parent_index": 0} for i in range(1, k)]
            say("DO bulk", pid, "?", shown, seq, k)
            nodes = repo.create_tasks(pid, specs)
            for node in nodes:
                tasks[node.id] = node.parent_id
            say("ACK bulk", pid, ",".join(str(n.id) for n in nodes), shown, seq, k)
        elif op == "rename":
            tid = rng.choice(sorted(tasks))
            say("DO rename", pid, tid, seq)
            repo.update_task(pid, tid, name=f"u{seq}", status="done")
            say("ACK rename", pid, tid, seq)
        else:
            tid = rng.choice(sorted(tasks))
            say("DO drop", pid, tid)
            repo.delete_task(pid, tid)
            for gone in _subtree(tasks, tid):
                del tasks[gone]
            say("ACK drop", pid, tid)


def run_script(repo: PlanRepository) -> None:
    say("DO create ?", 1)
    tree = repo.create_plan("p1", owner="crash", metadata={"seq": 1})
    say("ACK create", tree.id, 1)
    say("DO task", tree.id, "?", "-", 2)
    node = repo.create_task(tree.id, name="n2")
    say("ACK task", tree.id, node.id, "-", 2)
    say("DO retitle", tree.id, 3)
    repo.update_plan(tree.id, title="t3")
    say("ACK retitle", tree.id, 3)
    say("DO delete", tree.id)
    repo.delete_plan(tree.id)
    say("ACK delete", tree.id)
    say("DONE")
    time.sleep(60)


def main() -> None:
    root, mode, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # A long sync interval: task counts in the registry lag behind at the kill, on purpose.
    repo = PlanRepository(root, registry_sync_interval=3600.0)
    say("READY")
    if mode == "random":
        run_random(repo, seed)
    else:
        run_script(repo)


if __name__ == "__main__":
    main()
