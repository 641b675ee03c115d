"""Concurrent load: several processes x several threads against one DB_ROOT for a fixed time.

Each worker thread owns some things and shares the files they live in with everyone else:

- in each *shared* plan it owns one root task and the subtree under it (create / update / move
  / delete), so every thread's writes contend for the same plan files while each thread's ack
  log stays the authority on its own subtree;
- its *own* plans (registry create/delete, bulk creates, `upsert_plan_tree` with snapshot);
- appends to the action logs of *shared* jobs (a plan's and a system job) and puts into the
  caches, where those APIs exist;
- reads: whole shared trees (and checks that its own subtree in them is exactly what it was
  acknowledged: read-your-writes under load), `list_plans`, single nodes, log pages;
- now and then a call with bad input that must raise one specific typed error.

Every acknowledged write goes to the thread's ack log before the next call. After the run,
`verify` replays every ack log and compares with the files: every acknowledged write present
(acknowledged deletes absent), nothing that was never acknowledged, per-job log sequences
without gaps or duplicates, every file passing ``integrity_check``, registry and plan files in
agreement. Any exception that was not the typed error a call's own bad input asked for is a
leaked error ("database is locked" included).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plandb import (
    DependencyCycle,
    PlanNode,
    PlanNotFound,
    PlanRepository,
    PlanTree,
    TaskNotFound,
    TreeCycle,
)

from . import features
from .acklog import AckLog, percentile, read_records
from .checks import (
    doctor_problems,
    integrity_problems,
    reconcile_root,
    registry_problems,
    subtree,
)

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.py"

# Bounds that keep a long run's files from growing without limit.
MAX_OWN_NODES = 40   # per shared plan per thread
MAX_OWN_PLANS = 3
STATUSES = ("pending", "running", "done", "failed")
FAILED = object()  # what LoadThread.call returns when the call raised


@dataclass(slots=True)
class LoadSettings:
    processes: int = 4
    threads: int = 2
    duration: float = 5.0
    shared_plans: int = 3
    seed: int = 0


@dataclass(slots=True)
class LoadResult:
    settings: LoadSettings
    elapsed: float = 0.0
    ops: dict[str, int] = field(default_factory=dict)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    acked_writes: int = 0
    expected_errors: int = 0
    lost: list[str] = field(default_factory=list)      # acknowledged, not there
    phantom: list[str] = field(default_factory=list)   # there, never acknowledged
    leaked: list[str] = field(default_factory=list)    # exceptions a caller must never see
    problems: list[str] = field(default_factory=list)  # integrity, registry, reconcile

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    def summary(self) -> dict[str, dict[str, float]]:
        """{kind: {ops, ops_per_s, p50_ms, p99_ms}}."""
        out = {}
        for kind in sorted(self.ops):
            lat = self.latencies_ms.get(kind, [])
            out[kind] = {"ops": self.ops[kind],
                         "ops_per_s": self.ops[kind] / self.elapsed if self.elapsed else 0.0,
                         "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)}
        return out

    def failures(self) -> list[str]:
        return ([f"lost: {x}" for x in self.lost] + [f"phantom: {x}" for x in self.phantom]
                + [f"leaked: {x}" for x in self.leaked] + [f"problem: {x}" for x in self.problems])


# --- the worker thread ---------------------------------------------------------------------------


class LoadThread:
    """One worker thread's loop; its model of what it owns mirrors its ack log."""

    def __init__(self, repo: PlanRepository, proc: int, thread: int, setup: dict[str, Any],
                 out: Path, seed: int):
        self.repo = repo
        self.tag = f"w{proc}.{thread}"
        self.rng = random.Random(f"{seed}-{proc}-{thread}")
        self.setup = setup
        self.ack = AckLog(out / f"ack-{self.tag}.jsonl")
        self.err_path = out / f"errors-{self.tag}.jsonl"
        self.n = 0
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.expected_errors = 0
        self.leaked: list[dict[str, Any]] = []
        self.mismatches: list[str] = []
        # shared plan id -> {task id: parent id} of this thread's subtree; roots have parent None
        self.shared: dict[int, dict[int, int | None]] = {}
        self.roots: dict[int, int] = {}
        self.status: dict[tuple[int, int], str] = {}
        self.own: dict[int, dict[int, int | None]] = {}  # own plan id -> {task id: parent}
        self.jobs: list[tuple[int | None, str]] = [tuple(j) for j in setup.get("jobs", [])]
        self.cache_keys: dict[str, str] = {}

    # -- plumbing --

    def _record(self, kind: str, t0: float) -> None:
        self.latency[kind].append((time.perf_counter() - t0) * 1000)

    def call(self, kind: str, fn: Callable[[], Any], expect: type | None = None) -> Any:
        """Run one operation, timing it; returns its result, or FAILED if it raised."""
        self.n += 1
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - classifying every exception is the point
            self._record(kind, t0)
            if expect is not None and isinstance(exc, expect):
                self.expected_errors += 1
                self.ack.write({"t": "fail", "n": self.n, "op": kind,
                                "error": type(exc).__name__})
                return FAILED
            self.leaked.append({"op": kind, "type": f"{type(exc).__module__}.{type(exc).__name__}",
                                "message": str(exc)[:500], "tb": traceback.format_exc()[-3000:]})
            with AckLog(self.err_path) as log:
                log.write(self.leaked[-1])
            return FAILED
        self._record(kind, t0)
        if expect is not None:
            self.leaked.append({"op": kind, "type": "NoError",
                                "message": f"expected {expect.__name__}, the call succeeded"})
        return result

    def acked(self, op: str, **values: Any) -> None:
        self.ack.write({"t": "ack", "n": self.n, "op": op, **values})

    # -- setup --

    def start(self) -> None:
        for pid in self.setup["shared_plans"]:
            node = self.call("task.create", lambda pid=pid: self.repo.create_task(
                pid, name=f"{self.tag}-root"))
            if node is not FAILED:
                self.acked("task.create", plan=pid, id=node.id, parent=None)
                self.shared[pid] = {node.id: None}
                self.roots[pid] = node.id

    # -- helpers on the model --

    subtree = staticmethod(subtree)  # `top` and its descendants in the model

    def pick_shared(self) -> tuple[int, dict[int, int | None]] | None:
        if not self.shared:
            return None
        pid = self.rng.choice(sorted(self.shared))
        return pid, self.shared[pid]

    # -- operations --

    def op_create_shared(self) -> None:
        picked = self.pick_shared()
        if picked is None:
            return
        pid, nodes = picked
        if len(nodes) >= MAX_OWN_NODES:
            return self.op_delete_shared()
        parent = self.rng.choice(sorted(nodes))
        pos = self.rng.choice([None, None, 0, 1, 5])
        node = self.call("task.create", lambda: self.repo.create_task(
            pid, name=f"{self.tag}-{self.n}", parent_id=parent, position=pos,
            metadata={"by": self.tag, "n": self.n}))
        if node is not FAILED:
            self.acked("task.create", plan=pid, id=node.id, parent=parent)
            nodes[node.id] = parent

    def op_update_shared(self) -> None:
        picked = self.pick_shared()
        if picked is None:
            return
        pid, nodes = picked
        tid = self.rng.choice(sorted(nodes))
        status = self.rng.choice(STATUSES)
        if self.call("task.update", lambda: self.repo.update_task(
                pid, tid, status=status, context_combined=f"ctx {self.n}")) is not FAILED:
            self.acked("task.update", plan=pid, id=tid, status=status)
            self.status[(pid, tid)] = status

    def op_move_shared(self) -> None:
        picked = self.pick_shared()
        if picked is None:
            return
        pid, nodes = picked
        movable = [t for t in sorted(nodes) if nodes[t] is not None]
        if not movable:
            return
        tid = self.rng.choice(movable)
        banned = set(self.subtree(nodes, tid))
        target = self.rng.choice([t for t in sorted(nodes) if t not in banned])
        pos = self.rng.choice([None, 0, 1, 3])
        if self.call("task.move", lambda: self.repo.move_task(
                pid, tid, new_parent_id=target, new_position=pos)) is not FAILED:
            self.acked("task.move", plan=pid, id=tid, parent=target)
            nodes[tid] = target

    def op_delete_shared(self) -> None:
        picked = self.pick_shared()
        if picked is None:
            return
        pid, nodes = picked
        deletable = [t for t in sorted(nodes) if nodes[t] is not None]
        if not deletable:
            return
        tid = self.rng.choice(deletable)
        gone = self.subtree(nodes, tid)
        count = self.call("task.delete", lambda: self.repo.delete_task(pid, tid))
        if count is not FAILED:
            self.acked("task.delete", plan=pid, id=tid, removed=gone)
            for x in gone:
                nodes.pop(x, None)
                self.status.pop((pid, x), None)
            if count != len(gone):
                self.mismatches.append(
                    f"{self.tag}: delete_task({pid}, {tid}) removed {count}, expected {len(gone)}")

    def op_create_plan(self) -> None:
        if len(self.own) >= MAX_OWN_PLANS:
            return self.op_delete_plan()
        title = f"{self.tag}-plan-{self.n}"
        tree = self.call("plan.create", lambda: self.repo.create_plan(
            title, owner=self.tag, metadata={"n": self.n}))
        if tree is not FAILED:
            self.acked("plan.create", plan=tree.id, title=title)
            self.own[tree.id] = {}

    def op_delete_plan(self) -> None:
        if not self.own:
            return
        pid = self.rng.choice(sorted(self.own))
        if self.call("plan.delete", lambda: self.repo.delete_plan(pid)) is not FAILED:
            self.acked("plan.delete", plan=pid)
            del self.own[pid]

    def op_bulk_own(self) -> None:
        if not self.own:
            return self.op_create_plan()
        pid = self.rng.choice(sorted(self.own))
        nodes = self.own[pid]
        if len(nodes) >= MAX_OWN_NODES:
            return self.op_upsert_own(shrink=True)
        parent = self.rng.choice([None, *sorted(nodes)])
        specs = [{"name": f"{self.tag}-{self.n}-a", "parent_id": parent},
                 {"name": f"{self.tag}-{self.n}-b", "parent_index": 0},
                 {"name": f"{self.tag}-{self.n}-c", "parent_index": 0, "dependency_indexes": [1]}]
        made = self.call("task.create_bulk", lambda: self.repo.create_tasks(pid, specs))
        if made is not FAILED:
            ids = [n.id for n in made]
            self.acked("task.create_bulk", plan=pid, nodes={
                str(ids[0]): parent, str(ids[1]): ids[0], str(ids[2]): ids[0]})
            nodes.update({ids[0]: parent, ids[1]: ids[0], ids[2]: ids[0]})

    def op_upsert_own(self, shrink: bool = False) -> None:
        if not self.own:
            return self.op_create_plan()
        pid = self.rng.choice(sorted(self.own))
        nodes = dict(self.own[pid])
        if nodes and (shrink or self.rng.random() < 0.3):
            for tid in self.rng.sample(sorted(nodes), k=max(1, len(nodes) // 2)):
                if tid in nodes:
                    for x in self.subtree(nodes, tid):
                        nodes.pop(x, None)
        top = max([0, *nodes])
        for i in range(self.rng.randint(1, 4)):
            nodes[top + 1 + i] = self.rng.choice([None, *sorted(nodes)])
        tree = PlanTree(id=pid, title=f"{self.tag}-plan-upserted")
        for i, (tid, parent) in enumerate(nodes.items()):
            tree.nodes[tid] = PlanNode(id=tid, plan_id=pid, name=f"{self.tag}-u{tid}",
                                       parent_id=parent, position=i)
        tree.relink()
        note = f"{self.tag}-snap-{self.n}"
        if self.call("tree.upsert", lambda: self.repo.upsert_plan_tree(tree, note=note)) is not FAILED:
            self.acked("tree.upsert", plan=pid, note=note,
                       nodes={str(k): v for k, v in nodes.items()})
            self.own[pid] = nodes

    def op_append_log(self) -> None:
        if not self.jobs or not features.has_action_logs(self.repo):
            return self.op_create_shared()
        plan_id, job_id = self.rng.choice(self.jobs)
        message = f"{self.tag}-{self.n}"
        entry = self.call("log.append", lambda: features.append_log(
            self.repo, plan_id, job_id, message))
        if entry is not FAILED:
            self.acked("log.append", plan=plan_id, job=job_id, seq=entry.sequence,
                       message=message)

    def op_cache_put(self) -> None:
        if not features.has_caches(self.repo):
            return self.op_read_tree()
        key = f"{self.tag}-k{self.rng.randint(0, 20)}"
        value = f"v{self.n}"
        stored = self.call("cache.put", lambda: features.cache_put(self.repo, key, value))
        if stored is True:
            self.acked("cache.put", key=key, value=value)
            self.cache_keys[key] = value
        elif stored is False:  # declined: the old value must not come back either
            self.cache_keys.pop(key, None)
            self.acked("cache.decline", key=key)

    def op_cache_get(self) -> None:
        if not features.has_caches(self.repo) or not self.cache_keys:
            return self.op_read_tree()
        key = self.rng.choice(sorted(self.cache_keys))
        got = self.call("cache.get", lambda: features.cache_get(self.repo, key))
        if got is not FAILED and got is not None and got != self.cache_keys[key]:
            self.mismatches.append(f"{self.tag}: cache {key!r} gave {got!r}, "
                                   f"acknowledged {self.cache_keys[key]!r}")

    def op_read_tree(self) -> None:
        picked = self.pick_shared()
        if picked is None:
            return
        pid, nodes = picked
        tree = self.call("read.tree", lambda: self.repo.get_plan_tree(pid))
        if tree is FAILED:
            return
        root = self.roots[pid]
        seen = {}
        if root in tree.nodes:
            stack = [root]
            while stack:
                x = stack.pop()
                seen[x] = tree.nodes[x].parent_id if x != root else None
                stack.extend(tree.children.get(x, ()))
        if seen != nodes:
            missing = sorted(set(nodes) - set(seen))
            extra = sorted(set(seen) - set(nodes))
            moved = sorted(t for t in set(nodes) & set(seen) if nodes[t] != seen[t])
            self.mismatches.append(
                f"{self.tag}: read of plan {pid} after acks: missing {missing[:5]}, "
                f"extra {extra[:5]}, parent differs {moved[:5]}")
        for t in tree.nodes.values():  # a consistent snapshot: every parent link resolves
            if t.parent_id is not None and t.parent_id not in tree.nodes:
                self.mismatches.append(f"{self.tag}: plan {pid} task {t.id} has a dangling "
                                       f"parent {t.parent_id} in one read")
                break

    def op_list_plans(self) -> None:
        listed = self.call("read.list_plans", lambda: self.repo.list_plans())
        if listed is FAILED:
            return
        ids = {p.id for p in listed}
        missing = sorted(set(self.own) - ids)
        if missing:
            self.mismatches.append(f"{self.tag}: list_plans lacks acknowledged plans {missing}")

    def op_get_node(self) -> None:
        picked = self.pick_shared()
        if picked is None:
            return
        pid, nodes = picked
        tid = self.rng.choice(sorted(nodes))
        node = self.call("read.node", lambda: self.repo.get_node(pid, tid))
        if node is not FAILED and node.parent_id != nodes[tid]:
            self.mismatches.append(f"{self.tag}: node {pid}/{tid} has parent {node.parent_id}, "
                                   f"acknowledged {nodes[tid]}")

    def op_page_logs(self) -> None:
        if not self.jobs or not features.has_action_logs(self.repo):
            return self.op_read_tree()
        plan_id, job_id = self.rng.choice(self.jobs)
        self.call("read.logs", lambda: features.page_logs(self.repo, plan_id, job_id))

    def op_bad_input(self) -> None:
        picked = self.pick_shared()
        choice = self.rng.randrange(4)
        if choice == 0 and picked is not None:
            pid, nodes = picked
            kids = [t for t in nodes if nodes[t] is not None]
            if kids:
                tid = self.roots[pid]
                target = self.rng.choice(kids)
                self.call("bad.move_cycle", lambda: self.repo.move_task(
                    pid, tid, new_parent_id=target), expect=TreeCycle)
                return
        if choice == 1 and picked is not None:
            pid, _ = picked
            self.call("bad.unknown_parent", lambda: self.repo.create_task(
                pid, name="orphan", parent_id=10**12), expect=TaskNotFound)
            return
        if choice == 2 and picked is not None:
            pid, nodes = picked
            tid = self.rng.choice(sorted(nodes))
            self.call("bad.self_dependency", lambda: self.repo.update_task(
                pid, tid, dependencies=[tid]), expect=DependencyCycle)
            return
        self.call("bad.unknown_plan", lambda: self.repo.get_plan_tree(10**15),
                  expect=PlanNotFound)

    OPS: tuple[tuple[str, int], ...] = (
        ("op_create_shared", 20), ("op_update_shared", 8), ("op_move_shared", 8),
        ("op_delete_shared", 5), ("op_create_plan", 3), ("op_delete_plan", 2),
        ("op_bulk_own", 5), ("op_upsert_own", 3), ("op_append_log", 15),
        ("op_cache_put", 5), ("op_cache_get", 4), ("op_read_tree", 10),
        ("op_list_plans", 4), ("op_get_node", 5), ("op_page_logs", 5), ("op_bad_input", 3),
    )

    def run(self, deadline: float) -> None:
        names = [name for name, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        try:
            self.start()
            while time.monotonic() < deadline:
                getattr(self, self.rng.choices(names, weights)[0])()
        except Exception:  # noqa: BLE001 - a bug in the harness itself must show, not hang
            self.leaked.append({"op": "harness", "type": "HarnessError",
                                "message": traceback.format_exc()[-3000:]})
        finally:
            self.ack.close()


def worker_main(args: dict[str, Any]) -> int:
    """Body of one worker process: `threads` LoadThreads sharing one repository."""
    out = Path(args["out"])
    proc = args["proc"]
    repo = PlanRepository(args["root"])
    try:
        workers = [LoadThread(repo, proc, t, args["setup"], out, args["seed"])
                   for t in range(args["threads"])]
        print("ready", flush=True)
        sys.stdin.readline()  # "go": every process starts at once
        deadline = time.monotonic() + args["duration"]
        threads = [threading.Thread(target=w.run, args=(deadline,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        try:
            repo.close()
        except Exception as exc:  # noqa: BLE001
            workers[0].leaked.append({"op": "close", "type": type(exc).__name__,
                                      "message": str(exc)})
    stats = {
        "latency": {k: v for w in workers for k, v in w.latency.items()},
        "by_thread": [{"tag": w.tag, "latency": w.latency, "expected_errors": w.expected_errors,
                       "leaked": w.leaked, "mismatches": w.mismatches} for w in workers],
    }
    (out / f"stats-p{proc}.json").write_text(json.dumps(stats))
    return 0


# --- driving and verifying -------------------------------------------------------------------


def setup_root(root: Path, settings: LoadSettings) -> dict[str, Any]:
    """Shared plans and shared jobs, made before the workers start."""
    with PlanRepository(root) as repo:
        shared = [repo.create_plan(f"shared-{i}").id for i in range(settings.shared_plans)]
        jobs: list[tuple[int | None, str]] = []
        if features.has_action_logs(repo):
            jobs = [(shared[0], "shared-job-a"), (shared[0], "shared-job-b"),
                    (None, "system-job")]
            for plan_id, job_id in jobs:
                features.create_job(repo, plan_id, job_id)
    return {"shared_plans": shared, "jobs": jobs}


def run_load(root: Path, out: Path, settings: LoadSettings) -> LoadResult:
    """Run the load against `root` (ack logs and stats go to `out`) and verify it."""
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    setup = setup_root(root, settings)
    (out / "setup.json").write_text(json.dumps(setup))
    procs = []
    for p in range(settings.processes):
        args = {"root": str(root), "out": str(out), "proc": p, "threads": settings.threads,
                "duration": settings.duration, "setup": setup, "seed": settings.seed}
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(args)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    result = LoadResult(settings)
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != "ready":
            result.leaked.append(f"worker did not start: {line!r} {p.stderr.read()[-2000:]}")
    t0 = time.monotonic()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        try:
            _, err = p.communicate(timeout=settings.duration + 180)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            result.leaked.append(f"worker pid {p.pid} hung; killed")
        if p.returncode != 0:
            result.leaked.append(f"worker pid {p.pid} exited {p.returncode}: {err[-3000:]}")
    result.elapsed = time.monotonic() - t0
    collect_stats(out, result)
    verify(root, out, setup, result)
    return result


def collect_stats(out: Path, result: LoadResult) -> None:
    for path in sorted(out.glob("stats-p*.json")):
        stats = json.loads(path.read_text())
        for th in stats["by_thread"]:
            for kind, values in th["latency"].items():
                result.ops[kind] = result.ops.get(kind, 0) + len(values)
                result.latencies_ms.setdefault(kind, []).extend(values)
            result.expected_errors += th["expected_errors"]
            result.leaked.extend(f"{th['tag']} {e['op']}: {e['type']}: {e['message']}"
                                 + (f"\n{e['tb']}" if e.get("tb") else "") for e in th["leaked"])
            result.lost.extend(th["mismatches"])


def verify(root: Path, out: Path, setup: dict[str, Any], result: LoadResult) -> None:
    """Replay every ack log and compare with what the files hold."""
    shared_expect: dict[int, dict[int, int | None]] = defaultdict(dict)
    status_expect: dict[tuple[int, int], str] = {}
    own_alive: dict[int, dict[int, int | None]] = {}
    own_deleted: set[int] = set()
    snap_notes: dict[int, set[str]] = defaultdict(set)
    logs: dict[tuple[int | None, str], dict[int, str]] = defaultdict(dict)
    cache: dict[str, str] = {}
    for path in sorted(out.glob("ack-*.jsonl")):
        for rec in read_records(path):
            if rec["t"] != "ack":
                continue
            result.acked_writes += 1
            op = rec["op"]
            pid = rec.get("plan")
            if op in ("task.create", "task.move") and pid in setup["shared_plans"]:
                shared_expect[pid][rec["id"]] = rec["parent"]
            elif op == "task.update":
                status_expect[(pid, rec["id"])] = rec["status"]
            elif op == "task.delete":
                for x in rec["removed"]:
                    shared_expect[pid].pop(x, None)
                    status_expect.pop((pid, x), None)
            elif op == "plan.create":
                own_alive[pid] = {}
            elif op == "plan.delete":
                own_alive.pop(pid, None)
                own_deleted.add(pid)
            elif op == "task.create_bulk":
                own_alive[pid].update({int(k): v for k, v in rec["nodes"].items()})
            elif op == "tree.upsert":
                own_alive[pid] = {int(k): v for k, v in rec["nodes"].items()}
                snap_notes[pid].add(rec["note"])
            elif op == "log.append":
                key = (pid, rec["job"])
                if rec["seq"] in logs[key]:
                    result.lost.append(f"log {key}: sequence {rec['seq']} acknowledged twice")
                logs[key][rec["seq"]] = rec["message"]
            elif op == "cache.put":
                cache[rec["key"]] = rec["value"]
            elif op == "cache.decline":
                cache.pop(rec["key"], None)
    result.problems.extend(integrity_problems(root))
    result.problems.extend(registry_problems(root))
    with PlanRepository(root) as repo:
        listed = {p.id for p in repo.list_plans()}
        for pid in setup["shared_plans"]:
            tree = repo.get_plan_tree(pid)
            actual = {t.id: t.parent_id for t in tree.nodes.values()}
            expect = shared_expect[pid]
            for tid, parent in expect.items():
                if tid not in actual:
                    result.lost.append(f"plan {pid}: task {tid} acknowledged, missing")
                elif actual[tid] != parent:
                    result.lost.append(f"plan {pid}: task {tid} parent {actual[tid]}, "
                                       f"acknowledged {parent}")
            for tid in sorted(set(actual) - set(expect)):
                result.phantom.append(f"plan {pid}: task {tid} never acknowledged")
            for (p, tid), status in status_expect.items():
                if p == pid and tid in tree.nodes and tree.nodes[tid].status != status:
                    result.lost.append(f"plan {pid}: task {tid} status "
                                       f"{tree.nodes[tid].status!r}, acknowledged {status!r}")
        for pid, expect in own_alive.items():
            if pid not in listed:
                result.lost.append(f"plan {pid}: acknowledged, not in list_plans")
                continue
            tree = repo.get_plan_tree(pid)
            actual = {t.id: t.parent_id for t in tree.nodes.values()}
            if actual != expect:
                result.lost.append(f"plan {pid}: tree {sorted(actual.items())[:8]} differs from "
                                   f"acknowledged {sorted(expect.items())[:8]}")
            notes = {s.note for s in repo.list_snapshots(pid)}
            for note in sorted(snap_notes[pid] - notes):
                result.lost.append(f"plan {pid}: snapshot {note!r} acknowledged, missing")
        for pid in sorted(own_deleted):
            if pid in listed or repo.config.plan_db_path(pid).exists():
                result.phantom.append(f"plan {pid}: deleted (acknowledged) but still there")
        expected_plans = set(setup["shared_plans"]) | set(own_alive)
        for pid in sorted(listed - expected_plans):
            result.phantom.append(f"plan {pid}: listed, never acknowledged")
        for (plan_id, job_id), acked in logs.items():
            seqs = features.all_log_entries(repo, plan_id, job_id)
            got = [s for s, _ in seqs]
            if got != list(range(1, len(got) + 1)):
                result.lost.append(f"log {job_id}: sequences not 1..n: gaps or duplicates "
                                   f"near {_first_gap(got)}")
            have = dict(seqs)
            for seq, message in acked.items():
                if have.get(seq) != message:
                    result.lost.append(f"log {job_id}: seq {seq} acknowledged {message!r}, "
                                       f"found {have.get(seq)!r}")
            extra = len(have) - len(acked)
            if extra > 0:
                result.phantom.append(f"log {job_id}: {extra} entries never acknowledged")
        for key, value in cache.items():
            got = features.cache_get(repo, key)
            if got is not None and got != value:  # evicted is allowed, a stale value is not
                result.lost.append(f"cache {key!r}: {got!r}, acknowledged {value!r}")
    rec = reconcile_root(root, repair=False)
    if rec:
        result.problems.extend(f"reconcile: {p}" for p in rec)
    result.problems.extend(doctor_problems(root))


def _first_gap(seqs: list[int]) -> Any:
    for i, s in enumerate(seqs, 1):
        if s != i:
            return (i, s)
    return None
