#!/usr/bin/env python
"""plandb benchmark (`make bench`): plandb vs the planner code it replaces vs raw apsw.

Three implementations run the same workloads in one process, side by side, repeated:

- **plandb** through its public API (`PlanRepository`);
- **baseline** (`scripts/baseline_planner.py`): the old planner's access pattern;
- **floor** (`scripts/floor.py`): raw apsw, one connection, prepared statements.

Absolute times on a shared machine are noise; ratios from one run are not, so every metric is
printed as median [min..max] over the repetitions (implementation order rotates per rep) with
plandb's ratio to the floor and to the baseline, against the issue's targets. Results also go
to a JSON file (``--out``, default ``bench-results.json``) so runs can be compared.

Workloads (issue 8): W1 create_task as a tree (fanout 10) and flat (first-200 vs last-200
calls), plus create_tasks bulk; W2 update_task status at random; W3 get_plan_tree on a big
plan; W4 list_plans over many plans; W5 create_plan; W6 append_action_log with realistic
payloads and list_action_logs paging; W7 redaction alone (MB/s of JSON, and a recall check);
W8 a root with many plan files: touch each once, peak open descriptors and RSS, and
`plandb inspect --json` time.

The baseline is far slower than the floor (25-90x on the 2-core VMs it was run on, more
where fsync costs more), so by default it runs only the first
``--baseline-calls`` calls of each per-call workload (and a fifteenth of that many create_plan
calls). That favours the baseline (fewer siblings to resequence, smaller files), so the
plandb/baseline ratios printed are lower bounds. ``--baseline-calls 0`` runs it in full.

    .venv/bin/python scripts/bench.py              # defaults: a few minutes on 2 cores
    .venv/bin/python scripts/bench.py --quick      # smoke run, seconds
    .venv/bin/python scripts/bench.py --only W1,W3 --reps 7
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_planner import BaselinePlanner  # noqa: E402
from floor import Floor  # noqa: E402
from floor import now as floor_now  # noqa: E402

from plandb import DatabaseConfig, PlanRepository, __version__, checkpoints  # noqa: E402
from plandb.redaction import Redactor  # noqa: E402

IMPLS = ("plandb", "floor", "baseline")
# plandb with SQLite's own inline checkpoints (background_checkpoints=False), run beside the
# others in W1/W2 only: its rows show what the background checkpointer is worth.
INLINE = "plandb_inline"
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8")
FANOUT = 10
SEGMENT = 200  # first-N vs last-N calls

# --- realistic content ---------------------------------------------------------------------

_WORDS = (
    "collect requirements schema migration endpoint review draft tests deploy rollback "
    "dataset cache index latency budget owner summary outline research compare vendors "
    "prototype benchmark document publish verify customer feedback backlog estimate risk "
    "parse extract validate upload report chart table query filter merge split retry"
).split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def task_spec(i: int, rng: random.Random) -> dict[str, Any]:
    """What a planner stores per task: a name, an instruction, a little metadata."""
    return {
        "name": f"Step {i}: {rng.choice(_WORDS)} the {rng.choice(_WORDS)}",
        "instruction": " ".join(sentence(rng, 12) for _ in range(2)),
        "metadata": {"source": "planner", "priority": i % 5, "estimate_min": rng.randint(5, 240),
                     "tags": [rng.choice(_WORDS), rng.choice(_WORDS)]},
    }


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_B64U = _ALNUM + "-_"


def planted_secrets(rng: random.Random) -> dict[str, str]:
    """Secrets of the shapes agent logs really carry (fresh random values each time)."""
    return {
        "openai": "sk-proj-" + _rand(rng, _ALNUM, 48),
        "aws": "AKIA" + _rand(rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
        "github": "ghp_" + _rand(rng, _ALNUM, 36),
        "jwt": "eyJhbGciOiJIUzI1NiJ9." + "eyJ" + _rand(rng, _B64U, 40) + "." + _rand(rng, _B64U, 43),
        "password": "Pw-" + _rand(rng, _ALNUM, 14),
        "api_key": _rand(rng, _ALNUM, 32),
    }


def action_payload(i: int, rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    """One action-log entry as an agent tool call writes it, and the secrets planted in it."""
    s = planted_secrets(rng)
    parameters = {
        "tool": rng.choice(("web_search", "http_request", "sql_query", "python")),
        "query": sentence(rng, 10),
        "url": f"https://deploy:{s['password']}@api.example.com/v1/items?page={i}",
        "headers": {"Authorization": f"Bearer {s['jwt']}", "Accept": "application/json",
                    "x-api-key": s["api_key"]},
        "options": {"max_tokens": 4000, "temperature": 0.2, "prompt_tokens": 812 + i,
                    "retries": 3},
    }
    details = {
        "result": " ".join(sentence(rng, 14) for _ in range(8)),
        "stdout": f"export OPENAI_API_KEY={s['openai']}\nrunning step {i}\n"
                  + "\n".join(sentence(rng, 9) for _ in range(6)),
        "env": {"AWS_ACCESS_KEY_ID": s["aws"], "HOME": "/home/agent", "PWD": "/srv/app"},
        "notes": f"cloned with token {s['github']} then ran the suite",
        "stats": {"rows": rng.randint(0, 10_000), "elapsed_ms": rng.randint(1, 900),
                  "sha": _rand(rng, "0123456789abcdef", 40)},
    }
    message = f"{parameters['tool']} finished: {sentence(rng, 8)}"
    return {"message": message, "parameters": parameters, "details": details}, list(s.values())


def clean_payload(i: int, rng: random.Random) -> dict[str, Any]:
    """`action_payload`'s shape and size with nothing to redact: the common case."""
    parameters = {
        "tool": rng.choice(("web_search", "http_request", "sql_query", "python")),
        "query": sentence(rng, 10),
        "url": f"https://api.example.com/v1/items?page={i}",
        "headers": {"Accept": "application/json", "User-Agent": "agent/1.0"},
        "options": {"max_tokens": 4000, "temperature": 0.2, "prompt_tokens": 812 + i,
                    "retries": 3},
    }
    details = {
        "result": " ".join(sentence(rng, 14) for _ in range(8)),
        "stdout": f"running step {i}\n" + "\n".join(sentence(rng, 9) for _ in range(6)),
        "env": {"HOME": "/home/agent", "PWD": "/srv/app", "LANG": "C.UTF-8"},
        "notes": "cloned the repository then ran the suite",
        "stats": {"rows": rng.randint(0, 10_000), "elapsed_ms": rng.randint(1, 900),
                  "sha": _rand(rng, "0123456789abcdef", 40)},
    }
    message = f"{parameters['tool']} finished: {sentence(rng, 8)}"
    return {"message": message, "parameters": parameters, "details": details}


# --- plandb behind the same small interface as the floor and the baseline -------------------


class PlandbImpl:
    """plandb's public API, adapted to the bench's call shapes."""

    def __init__(self, root: Path, max_open: int = 64, background_checkpoints: bool = True):
        self.repo = PlanRepository(DatabaseConfig(
            root, max_open_files=max_open, background_checkpoints=background_checkpoints))

    def close(self) -> None:
        self.repo.close()

    def create_plan(self, title: str) -> int:
        return self.repo.create_plan(title).id

    def create_task(self, plan_id, name, parent_id=None, instruction=None, metadata=None) -> int:
        return self.repo.create_task(plan_id, name=name, parent_id=parent_id,
                                     instruction=instruction, metadata=metadata).id

    def create_tasks(self, plan_id, specs) -> list[int]:
        return [n.id for n in self.repo.create_tasks(plan_id, specs)]

    def update_task(self, plan_id, task_id, status) -> None:
        self.repo.update_task(plan_id, task_id, status=status)

    def get_plan_tree(self, plan_id):
        return self.repo.get_plan_tree(plan_id)

    def list_plans(self):
        return self.repo.list_plans()

    def append_action_log(self, plan_id, job_id, *, action_name, status, message, parameters,
                          details):
        return self.repo.append_action_log(
            plan_id=plan_id, job_id=job_id, action_kind="tool", action_name=action_name,
            status=status, success=True, message=message, parameters=parameters,
            details=details)

    def page_action_logs(self, plan_id, token, limit):
        """One page and the token of the next (None at the end)."""
        return self.repo.list_action_logs(plan_id, limit=limit, cursor=token)


def make_impl(name: str, root: Path, args) -> Any:
    root.mkdir(parents=True, exist_ok=True)
    if name == "plandb":
        return PlandbImpl(root, args.max_open)
    if name == INLINE:
        return PlandbImpl(root, args.max_open, background_checkpoints=False)
    if name == "floor":
        return Floor(root)
    return BaselinePlanner(root)


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Metric:
    """One measured quantity: per-implementation values, one per repetition."""

    key: str
    label: str
    unit: str  # "calls/s" and "MB/s": higher is better; "ms": lower is better; else: a count
    values: dict[str, list[float]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, impl: str, value: float, calls: int | None = None) -> None:
        self.values.setdefault(impl, []).append(value)
        if calls is not None:
            self.calls[impl] = calls

    def median(self, impl: str) -> float | None:
        vals = self.values.get(impl)
        return statistics.median(vals) if vals else None

    @property
    def higher_is_better(self) -> bool:
        return self.unit in ("calls/s", "MB/s")

    def speedup(self, impl: str, other: str) -> float | None:
        """How many times faster plandb (`impl`) is than `other` (>1: faster)."""
        a, b = self.median(impl), self.median(other)
        if not a or not b:
            return None
        return a / b if self.higher_is_better else b / a

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "unit": self.unit}
        for impl, vals in self.values.items():
            out[impl] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
                         "reps": vals, "calls": self.calls.get(impl)}
        return out


@dataclass
class Target:
    """A target from the issue: `metric` of plandb vs `against`, `op` `bound`."""

    label: str
    value: float | None
    op: str  # ">=" or "<="
    bound: float
    note: str = ""

    @property
    def ok(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.bound if self.op == ">=" else self.value <= self.bound

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "op": self.op, "bound": self.bound,
                "ok": self.ok, "note": self.note}


@dataclass
class Result:
    metrics: list[Metric] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def metric(self, key: str, label: str, unit: str) -> Metric:
        m = Metric(key, label, unit)
        self.metrics.append(m)
        return m

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": {m.key: m.to_dict() for m in self.metrics},
            "ratios": {m.key: {"plandb_vs_floor": m.speedup("plandb", "floor"),
                               "plandb_vs_baseline": m.speedup("plandb", "baseline")}
                       for m in self.metrics if m.unit in ("calls/s", "ms", "MB/s")},
            "targets": [t.to_dict() for t in self.targets],
            "info": self.info,
        }


def settle() -> None:
    """Before a timed segment: let plandb's checkpoint thread finish what earlier segments
    asked of it, and the kernel write back what they left dirty, so that no workload is
    charged with another's I/O (what a segment causes itself still runs during it, on the same
    cores and disk); then collect garbage."""
    checkpoints.CHECKPOINTER.wait_idle(timeout=60)
    os.sync()
    gc.collect()


def timed(fn: Callable[[], Any]) -> float:
    settle()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def order(rep: int, names: tuple[str, ...] = IMPLS) -> list[str]:
    """Rotate the implementation order each rep so none always runs first (or last)."""
    k = rep % len(names)
    return list(names[k:] + names[:k])


def cap(args, impl: str, n: int, per: int = 1) -> int:
    """How many calls `impl` makes of a workload of `n` (the baseline may be capped)."""
    if impl != "baseline" or not args.baseline_calls:
        return n
    return max(1, min(n, args.baseline_calls // per))


# --- W1 / W2: per-call writes ----------------------------------------------------------------


def run_creates(impl, plan_id: int, specs: list[dict], parents: Callable[[int, list[int]], Any]):
    """create_task for every spec; returns (ids, total s, first-SEGMENT s, last-SEGMENT s)."""
    ids: list[int] = []
    n = len(specs)
    seg = min(SEGMENT, n)
    marks = {0, seg, n - seg, n}
    stamps: dict[int, float] = {}
    create = impl.create_task
    settle()
    for i, spec in enumerate(specs):
        if i in marks:
            stamps[i] = time.perf_counter()
        ids.append(create(plan_id, spec["name"], parents(i, ids), spec["instruction"],
                          spec["metadata"]))
    stamps[n] = time.perf_counter()
    return ids, stamps[n] - stamps[0], stamps[seg] - stamps[0], stamps[n] - stamps[n - seg]


def tree_parent(i: int, ids: list[int]) -> int | None:
    return None if i == 0 else ids[(i - 1) // FANOUT]


def renamed(specs: list[dict], tag: str) -> list[dict]:
    """`specs` with names no earlier run used: plandb's redactor remembers short strings it
    found clean, and a name seen in the run before would skip its check."""
    return [dict(s, name=f"{s['name']} ({tag})") for s in specs]


def w1_w2(impls: dict[str, Any], args, res: dict[str, Result]) -> None:
    n = args.tasks
    rng = random.Random(1)
    base_specs = [task_spec(i, rng) for i in range(n)]
    w1, w2 = res["W1"], res["W2"]
    tree = w1.metric("create_task_tree", f"W1 create_task, tree fanout {FANOUT} ({n} calls)", "calls/s")
    flat = w1.metric("create_task_flat", f"W1-flat create_task, {n} children of one root", "calls/s")
    first = w1.metric("flat_first200", f"W1-flat first {SEGMENT} calls", "calls/s")
    last = w1.metric("flat_last200", f"W1-flat last {SEGMENT} calls", "calls/s")
    bulk = w1.metric("create_tasks_bulk", f"W1 create_tasks bulk ({n} tasks, one call)", "calls/s")
    upd = w2.metric("update_task", f"W2 update_task status at random ({n} calls)", "calls/s")
    inline = {  # plandb with inline checkpoints, filed under "plandb" beside the same floor
        "tree": w1.metric("create_task_tree_inline", "W1 tree, plandb checkpointing inline",
                          "calls/s"),
        "flat": w1.metric("create_task_flat_inline", "W1-flat, plandb checkpointing inline",
                          "calls/s"),
        "upd": w2.metric("update_task_inline", "W2, plandb checkpointing inline", "calls/s"),
    }
    growth: list[float] = []
    names = IMPLS + ((INLINE,) if INLINE in impls else ())
    for rep in range(args.reps):
        for name in order(rep, names):
            impl = impls[name]
            k = cap(args, name, n)
            key, metrics = ("plandb", inline) if name == INLINE else (name, {
                "tree": tree, "flat": flat, "upd": upd})
            specs = renamed(base_specs[:k], f"{rep} {name} per call")
            # tree
            pid = impl.create_plan(f"w1 tree {rep}")
            ids, total, _, _ = run_creates(impl, pid, specs, tree_parent)
            metrics["tree"].add(key, k / total, k)
            # flat
            fpid = impl.create_plan(f"w1 flat {rep}")
            root = impl.create_task(fpid, "root")
            _, total, t_first, t_last = run_creates(impl, fpid, renamed(specs, "flat"),
                                                    lambda i, ids, root=root: root)
            seg = min(SEGMENT, k)
            metrics["flat"].add(key, k / total, k)
            if name != INLINE:
                first.add(name, seg / t_first, seg)
                last.add(name, seg / t_last, seg)
            if name == "plandb":
                growth.append(t_first / t_last)
            # bulk (the baseline has no bulk call)
            if name not in ("baseline", INLINE):
                bpid = impl.create_plan(f"w1 bulk {rep}")
                bulk_specs = [dict(s, parent_index=None if i == 0 else (i - 1) // FANOUT)
                              for i, s in enumerate(renamed(base_specs, f"{rep} {name} bulk"))]
                t = timed(lambda impl=impl, bpid=bpid, bulk_specs=bulk_specs:
                          impl.create_tasks(bpid, bulk_specs))
                bulk.add(name, n / t, n)
            # W2 on this rep's tree
            urng = random.Random(100 + rep)
            todo = [(urng.choice(ids), urng.choice(("running", "done", "failed", "pending")))
                    for _ in range(k)]
            update = impl.update_task

            def updates(todo=todo, pid=pid, update=update):
                for tid, status in todo:
                    update(pid, tid, status)
            metrics["upd"].add(key, k / timed(updates), k)
            if name == "floor":
                impl.release(pid)
                impl.release(fpid)
    for plain, alt in ((tree, inline["tree"]), (flat, inline["flat"]), (upd, inline["upd"])):
        if "plandb" in alt.values:  # the inline rows compare with the same floor runs
            alt.values["floor"], alt.calls["floor"] = plain.values["floor"], plain.calls["floor"]
        else:
            (w1 if alt in w1.metrics else w2).metrics.remove(alt)
    io_profile(impls, res)
    w1.targets += [
        Target("W1 tree per-call rate vs floor", tree.speedup("plandb", "floor"), ">=", 0.5),
        Target("W1-flat per-call rate vs floor", flat.speedup("plandb", "floor"), ">=", 0.5),
        Target("W1-flat last-200 rate / first-200 rate (plandb)",
               statistics.median(growth) if growth else None, ">=", 0.8),
        Target("create_tasks bulk rate vs floor bulk", bulk.speedup("plandb", "floor"), ">=",
               0.5),
        Target("W1 per-call rate vs baseline (issue: ~50x)", tree.speedup("plandb", "baseline"),
               ">=", 10, "informational"),
    ]
    w2.targets += [
        Target("W2 per-call rate vs floor", upd.speedup("plandb", "floor"), ">=", 0.5),
    ]


def plan_connection(impl, plan_id: int) -> tuple[apsw.Connection, Path]:
    """The open connection to a plan file and the file's path (diagnostics only)."""
    if isinstance(impl, PlandbImpl):
        with impl.repo._plan(plan_id) as store:  # stays open in the pool afterwards
            return store.conn, impl.repo._plan_path(plan_id)
    return impl.conn(plan_id), impl.plan_path(plan_id)


def io_profile(impls, res: dict[str, Result], calls: int = 150) -> None:
    """Statements executed and WAL frames (pages) written per create_task / update_task call.

    On a VM a commit's cost is mostly its page writes, so these counts explain the ratios
    better than any timing. Auto-checkpoint is off while counting, so the -wal only grows.
    """
    rng = random.Random(9)
    specs = [task_spec(i, rng) for i in range(calls)]
    res["W1"].info["per_call_io"] = {name: io_counts(impls[name], specs)
                                     for name in ("plandb", "floor")}


def io_counts(impl, specs: list[dict]) -> dict[str, dict[str, float]]:
    calls = len(specs)
    pid = impl.create_plan("io profile")
    root = impl.create_task(pid, "root")
    pinned = None
    if isinstance(impl, PlandbImpl):
        # Hold the pooled handle for the whole count: with a small --max-open the pool could
        # otherwise evict (close) the traced connection between two calls.
        pinned, path = impl.repo._acquire_plan(pid)
        conn = pinned.conn
    else:
        conn, path = plan_connection(impl, pid)
    wal = Path(f"{path}-wal")
    page = conn.execute("PRAGMA page_size").fetchall()[0][0] + 24
    saved = conn.execute("PRAGMA wal_autocheckpoint").fetchall()[0][0]
    statements = 0

    def tracer(cursor, sql, bindings):
        nonlocal statements
        statements += 1
        return True

    def measure(fn) -> dict[str, float]:
        nonlocal statements
        statements = 0
        size = wal.stat().st_size if wal.exists() else 0
        for i in range(calls):
            fn(i)
        grown = (wal.stat().st_size if wal.exists() else 0) - size
        return {"statements": round(statements / calls, 2),
                "wal_frames": round(grown / page / calls, 2)}

    ids: list[int] = []

    def create(i: int) -> None:
        ids.append(impl.create_task(pid, specs[i]["name"], ids[(i - 1) // FANOUT] if i else root,
                                    specs[i]["instruction"], specs[i]["metadata"]))

    conn.wal_autocheckpoint(0)
    conn.exec_trace = tracer
    try:
        out = {"create_task": measure(create),
               "update_task": measure(lambda i: impl.update_task(pid, ids[(i * 7) % calls],
                                                                 "done"))}
    finally:
        conn.exec_trace = None
        if pinned is not None:
            checkpoints.attach(conn)  # wal_autocheckpoint() replaced plandb's WAL hook
            impl.repo.pool.release(pinned)
        else:
            conn.wal_autocheckpoint(saved)
    if isinstance(impl, Floor):
        impl.release(pid)
    return out


# --- W3: a big tree --------------------------------------------------------------------------


def big_tree_specs(n: int) -> list[dict]:
    rng = random.Random(3)
    specs = []
    for i in range(n):
        s = task_spec(i, rng)
        s["parent_index"] = None if i == 0 else (i - 1) // FANOUT
        # Every 7th task waits on the task before it (a realistic sprinkle of edges).
        if i > 1 and i % 7 == 0:
            s["dependency_indexes"] = [i - 1]
        specs.append(s)
    return specs


def baseline_load(planner: BaselinePlanner, plan_id: int, specs: list[dict]) -> None:
    """Setup only (not timed): fill a baseline plan file in one transaction."""
    conn = sqlite3.connect(planner.plan_path(plan_id))
    ids: list[int] = []
    stamp = "2026-01-01T00:00:00.000000Z"
    positions: dict[int | None, int] = {}
    paths: dict[int, str] = {}
    with conn:
        for i, s in enumerate(specs):
            parent = ids[s["parent_index"]] if s.get("parent_index") is not None else None
            tid = i + 1
            pos = positions.get(parent, 0)
            positions[parent] = pos + 1
            paths[tid] = f"{paths[parent] if parent else ''}/{tid}"
            conn.execute(
                "INSERT INTO tasks (id, name, status, instruction, parent_id, position, path, "
                "depth, metadata, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (tid, s["name"], "pending", s["instruction"], parent, pos, paths[tid],
                 paths[tid].count("/") - 1, json.dumps(s["metadata"]), stamp, stamp))
            for d in s.get("dependency_indexes") or ():
                conn.execute("INSERT INTO task_dependencies VALUES (?, ?)", (tid, ids[d]))
            ids.append(tid)
    conn.close()


def w3(impls, args, res: dict[str, Result]) -> None:
    n = args.tree_tasks
    specs = big_tree_specs(n)
    plans = {}
    for name, impl in impls.items():
        pid = impl.create_plan("w3 big tree")
        if name == "baseline":
            baseline_load(impl, pid, specs)
        else:
            impl.create_tasks(pid, specs)
        plans[name] = pid
    trees = {name: impls[name].get_plan_tree(plans[name]) for name in impls}
    check_same_trees(trees, n)
    m = res["W3"].metric("get_plan_tree", f"W3 get_plan_tree, {n} tasks", "ms")
    calls = 3
    for rep in range(args.reps):
        for name in order(rep):
            impl, pid = impls[name], plans[name]

            def read(impl=impl, pid=pid):
                for _ in range(calls):
                    impl.get_plan_tree(pid)
            m.add(name, timed(read) / calls * 1000, calls)
    if "floor" in impls:
        impls["floor"].release(plans["floor"])
    res["W3"].targets.append(Target("W3 get_plan_tree time / floor's (PlanNode objects)",
                                    _inv(m.speedup("plandb", "floor")), "<=", 1.5))


def check_same_trees(trees: dict[str, Any], n: int) -> None:
    """The three implementations must return the same tree, or the timing means nothing."""
    shapes = {}
    for name, t in trees.items():
        shapes[name] = [(x.name, x.position, x.depth, x.path, x.metadata, x.dependencies)
                        for x in t.ordered_nodes()]
        if len(t) != n:
            raise SystemExit(f"W3: {name} returned {len(t)} nodes, expected {n}")
    ref = shapes.get("floor")
    for name, shape in shapes.items():
        if shape != ref:
            raise SystemExit(f"W3: {name}'s tree differs from the floor's")


def _inv(x: float | None) -> float | None:
    return None if not x else 1 / x


# --- W4: list_plans --------------------------------------------------------------------------


def w4(impls, args, res: dict[str, Result]) -> None:
    plans, per = args.plans, args.plan_tasks
    rng = random.Random(4)
    specs = [dict(task_spec(i, rng), parent_index=None if i < 4 else (i - 4) // 4)
             for i in range(per)]
    for name, impl in impls.items():
        if name == "plandb":
            for i in range(plans):
                pid = impl.create_plan(f"w4 plan {i}")
                impl.create_tasks(pid, specs)
            impl.repo.flush()
        elif name == "floor":  # its measured call is one registry query: rows are all it needs
            with impl.registry:
                impl.registry.executemany(
                    "INSERT INTO plans (title, plan_file, state, task_count, created_at, "
                    "updated_at) VALUES (?, 'plans/none', 'ready', ?, ?, ?)",
                    [(f"w4 plan {i}", per, floor_now(), floor_now()) for i in range(plans)])
        else:  # one real baseline plan, copied: the baseline's create_plan takes ~50 ms
            first = impl.create_plan("w4 plan 0")
            baseline_load(impl, first, specs)
            for i in range(1, plans):
                stamp = "2026-01-01T00:00:00.000000Z"
                cur = impl.registry.execute(
                    "INSERT INTO plans (title, plan_file, state, created_at, updated_at) "
                    "VALUES (?, '', 'ready', ?, ?)", (f"w4 plan {i}", stamp, stamp))
                shutil.copyfile(impl.plan_path(first), impl.plan_path(cur.lastrowid))
    counts = {name: len(impl.list_plans()) for name, impl in impls.items()}
    m = res["W4"].metric("list_plans", f"W4 list_plans, {plans} plans of {per} tasks", "ms")
    for rep in range(args.reps):
        for name in order(rep):
            impl = impls[name]
            calls = 1 if name == "baseline" else 20

            def lists(impl=impl, calls=calls):
                for _ in range(calls):
                    impl.list_plans()
            m.add(name, timed(lists) / calls * 1000, calls)
    res["W4"].info["plans_listed"] = counts
    res["W4"].targets.append(Target("W4 list_plans time / one registry query's",
                                    _inv(m.speedup("plandb", "floor")), "<=", 3.0))


# --- W5: create_plan -------------------------------------------------------------------------


def w5(impls, args, res: dict[str, Result]) -> None:
    n = args.create_plans
    m = res["W5"].metric("create_plan", f"W5 create_plan ({n} calls)", "calls/s")
    for impl in impls.values():
        impl.create_plan("warm-up")  # plandb builds its template once per process
    for rep in range(args.reps):
        for name in order(rep):
            impl = impls[name]
            k = cap(args, name, n, per=15)  # the baseline's create_plan: ~50 ms at best

            def creates(impl=impl, k=k, rep=rep):
                for i in range(k):
                    impl.create_plan(f"w5 {rep} {i}")
            m.add(name, k / timed(creates), k)
    res["W5"].targets.append(Target("W5 create_plan rate vs floor", m.speedup("plandb", "floor"),
                                    ">=", 0.8))


# --- W6: action logs -------------------------------------------------------------------------


def w6(impls, args, res: dict[str, Result]) -> None:
    if not hasattr(impls["plandb"].repo, "append_action_log"):
        res["W6"].info["skipped"] = "plandb has no append_action_log yet"
        return
    n, page = args.logs, args.page_size
    rng = random.Random(6)
    payloads = [action_payload(i, rng)[0] for i in range(n)]
    app = res["W6"].metric("append_action_log", f"W6 append_action_log ({n} calls, redaction on)",
                           "calls/s")
    pg = res["W6"].metric("list_action_logs_page", f"W6 list_action_logs, pages of {page}", "ms")
    for rep in range(args.reps):
        for name in order(rep):
            impl = impls[name]
            k = cap(args, name, n)
            pid = impl.create_plan(f"w6 {rep}")
            job = f"job-{rep}"

            def appends(impl=impl, pid=pid, job=job, k=k):
                for p in payloads[:k]:
                    impl.append_action_log(pid, job, action_name="tool_call", status="ok",
                                           message=p["message"], parameters=p["parameters"],
                                           details=p["details"])
            app.add(name, k / timed(appends), k)
            pages = 0
            seen = 0

            def paging(impl=impl, pid=pid):
                nonlocal pages, seen
                pages = seen = 0
                token = None
                while True:
                    rows, token = page_of(impl, pid, token, page)
                    pages += 1
                    seen += len(rows)
                    if token is None:
                        break
            t = timed(paging)
            if seen != k:
                raise SystemExit(f"W6: {name} paged {seen} log entries, expected {k}")
            pg.add(name, t / max(pages, 1) * 1000, pages)
            if name == "floor":
                impl.release(pid)
    res["W6"].info["payload_json_bytes"] = statistics.mean(
        len(orjson.dumps(p)) for p in payloads[:200])


def page_of(impl, plan_id: int, token: Any, limit: int) -> tuple[list, Any]:
    """One page of action logs and the next page's token, whatever the implementation."""
    if isinstance(impl, PlandbImpl):
        return impl.page_action_logs(plan_id, token, limit)
    if isinstance(impl, Floor):  # keyset paging on id
        rows = impl.list_action_logs(plan_id, after_id=token or 0, limit=limit)
        return rows, (rows[-1][0] if len(rows) == limit else None)
    rows = impl.list_action_logs(plan_id, offset=token or 0, limit=limit)  # LIMIT/OFFSET
    return rows, ((token or 0) + limit if len(rows) == limit else None)


# --- W7: redaction alone ---------------------------------------------------------------------


def w7(args, res: dict[str, Result]) -> None:
    """Redaction alone over two corpora of the same shape and size: tool-call payloads with six
    planted secrets each (every rule at work), and the same payloads with none (the common
    case). Each rep starts from a new Redactor with the default settings: its caches of
    known-clean short strings would otherwise remember the corpus from the rep before."""
    rng = random.Random(7)
    corpus, secrets = [], []
    size = 0
    while size < args.redact_mb * 1_000_000:
        payload, planted = action_payload(len(corpus), rng)
        corpus.append(payload)
        secrets.append(planted)
        size += len(orjson.dumps(payload))
    clean: list[dict[str, Any]] = []
    clean_size = 0
    while clean_size < size:
        clean.append(clean_payload(len(clean), rng))
        clean_size += len(orjson.dumps(clean[-1]))
    mb, clean_mb = size / 1_000_000, clean_size / 1_000_000
    m = res["W7"].metric(
        "redact", f"W7 redact() of {mb:.1f} MB JSON payloads, 6 secrets each", "MB/s")
    m_clean = res["W7"].metric(
        "redact_clean", f"W7 redact() of {clean_mb:.1f} MB of the same without secrets", "MB/s")
    enc = res["W7"].metric("orjson_encode", "W7 orjson.dumps alone (for scale)", "MB/s")
    for _ in range(args.reps):
        redact = Redactor().redact
        m.add("plandb", mb / timed(lambda redact=redact: [redact(p) for p in corpus]),
              len(corpus))
        redact = Redactor().redact
        m_clean.add("plandb", clean_mb / timed(lambda redact=redact: [redact(p) for p in clean]),
                    len(clean))
        enc.add("plandb", mb / timed(lambda: [orjson.dumps(p) for p in corpus]), len(corpus))
    redact = Redactor().redact
    leaked = 0
    total = 0
    kept = 0
    for payload, planted in zip(corpus, secrets, strict=True):
        out = orjson.dumps(redact(payload)).decode()
        total += len(planted)
        leaked += sum(1 for s in planted if s in out)
        kept += '"max_tokens":4000' in out
    unchanged = sum(redact(p) == p for p in clean)
    res["W7"].info.update({"secrets_planted": total, "secrets_leaked": leaked,
                           "payloads": len(corpus), "counts_kept": kept,
                           "clean_payloads": len(clean), "clean_payloads_unchanged": unchanged})
    res["W7"].targets.append(Target("W7 redaction MB/s (aim: tens of MB/s)",
                                    m.median("plandb"), ">=", 10.0))
    res["W7"].targets.append(Target("W7 planted secrets leaked", leaked, "<=", 0))
    res["W7"].targets.append(Target("W7 clean payloads changed by redaction",
                                    len(clean) - unchanged, "<=", 0))


# --- W8: many plan files ---------------------------------------------------------------------


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:  # not Linux
        import psutil

        return psutil.Process().num_fds()


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def w8(args, base: Path, res: dict[str, Result]) -> None:
    n = args.files
    root = base / "w8"
    info = res["W8"].info
    cfg = DatabaseConfig(root, max_open_files=args.max_open)
    fd0 = open_fds()
    peak = fd0
    with PlanRepository(cfg) as repo:
        t0 = time.perf_counter()
        ids = []
        for i in range(n):
            ids.append(repo.create_plan(f"w8 plan {i}").id)
            if i % 100 == 0:
                peak = max(peak, open_fds())
        info["create_plans_per_s"] = n / (time.perf_counter() - t0)
    info["fds_peak_creating"] = peak - fd0
    gc.collect()
    fd0, rss0 = open_fds(), rss_mb()
    peak = fd0
    step = max(1, n // 20)
    samples = []
    with PlanRepository(cfg) as repo:
        t0 = time.perf_counter()
        for i, pid in enumerate(ids):
            node = repo.create_task(pid, name="touched", metadata={"i": i})
            repo.get_node(pid, node.id)
            if i % 25 == 0:
                peak = max(peak, open_fds())
            if (i + 1) % step == 0:
                samples.append({"plans_touched": i + 1, "rss_mb": round(rss_mb(), 1),
                                "fds": open_fds() - fd0, "pool_open": repo.pool.open_count()})
        info["touch_per_s"] = n / (time.perf_counter() - t0)
    info.update({
        "plan_files": n, "max_open_files": args.max_open,
        "fds_before": fd0, "fds_peak_extra": peak - fd0,
        "fds_bound": 3 * args.max_open,  # each WAL connection: db, -wal, -shm
        "rss_before_mb": round(rss0, 1), "rss_samples": samples,
    })
    tenth = samples[min(1, len(samples) - 1)]["rss_mb"] if samples else rss0
    growth = (samples[-1]["rss_mb"] - tenth) if samples else 0.0
    info["rss_growth_mb_after_10pct"] = round(growth, 1)
    res["W8"].targets += [
        Target("W8 extra open fds at peak / connection-cache bound (3 per connection)",
               (peak - fd0) / (3 * args.max_open), "<=", 1.0),
        Target("W8 RSS growth from 10% to 100% of plans touched (MB)", round(growth, 1), "<=",
               max(16.0, 0.1 * rss0)),
    ]
    inspect_time(root, args, res)


def inspect_time(root: Path, args, res: dict[str, Result]) -> None:
    info = res["W8"].info
    exe = Path(sys.executable).with_name("plandb")
    cmd = [str(exe) if exe.exists() else "plandb", "--db-root", str(root), "inspect", "--json"]
    m = res["W8"].metric("inspect", f"W8 plandb inspect --json, {args.files} plan files", "ms")
    try:
        for _ in range(max(1, min(args.reps, 3))):
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            elapsed = time.perf_counter() - t0
            doc = json.loads(out.stdout)
            m.add("plandb", elapsed * 1000, 1)
        info["inspect_exit_code"] = out.returncode
        info["inspect_files"] = len(doc.get("files", ()))
        info["inspect_problems"] = len(doc.get("problems", ()))
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        info["inspect_error"] = f"{type(exc).__name__}: {exc}"[:500]


# --- output ----------------------------------------------------------------------------------


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    if value >= 10_000:
        return f"{value / 1000:.1f}k"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def cell(m: Metric, impl: str) -> str:
    vals = m.values.get(impl)
    if not vals:
        return "-"
    return (f"{fmt(statistics.median(vals), m.unit)} "
            f"[{fmt(min(vals), m.unit)}..{fmt(max(vals), m.unit)}]")


def table(results: dict[str, Result]) -> str:
    rows = [("metric", "unit", "plandb", "floor", "baseline", "vs floor", "vs baseline")]
    for res in results.values():
        for m in res.metrics:
            vf, vb = m.speedup("plandb", "floor"), m.speedup("plandb", "baseline")
            rows.append((m.label, m.unit, cell(m, "plandb"), cell(m, "floor"),
                         cell(m, "baseline") + (f" ({m.calls['baseline']} calls)"
                                                if "baseline" in m.calls and m.unit == "calls/s"
                                                else ""),
                         "-" if vf is None else f"{vf:.2f}x",
                         "-" if vb is None else f"{vb:.0f}x" if vb >= 10 else f"{vb:.1f}x"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if j == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def target_table(results: dict[str, Result]) -> str:
    lines = ["| target | value | goal | met |", "|---|---|---|---|"]
    for res in results.values():
        for t in res.targets:
            val = "-" if t.value is None else f"{t.value:.3g}"
            met = {True: "yes", False: "NO", None: "-"}[t.ok]
            if t.note:
                met += f" ({t.note})"
            lines.append(f"| {t.label} | {val} | {t.op} {t.bound:g} | {met} |")
    return "\n".join(lines)


def speed_note() -> str:
    return ("vs floor / vs baseline: how many times faster plandb is (rate ratio for calls/s, "
            "inverse time ratio for ms); >1 means plandb is faster.")


# --- main ------------------------------------------------------------------------------------


QUICK = {"reps": 5, "tasks": 300, "tree_tasks": 1000, "plans": 50, "plan_tasks": 10,
         "create_plans": 20, "logs": 200, "redact_mb": 0.5, "files": 300,
         "baseline_calls": 100}
DEFAULTS = {"reps": 5, "tasks": 2000, "tree_tasks": 10_000, "plans": 1000, "plan_tasks": 20,
            "create_plans": 100, "logs": 2000, "redact_mb": 4.0, "files": 10_000,
            "baseline_calls": 300}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    p.add_argument("--reps", type=int, help="repetitions per metric (>= 5 recommended)")
    p.add_argument("--tasks", type=int, help="W1/W2 calls (default 2000)")
    p.add_argument("--tree-tasks", type=int, help="W3 plan size (default 10000)")
    p.add_argument("--plans", type=int, help="W4 number of plans (default 1000)")
    p.add_argument("--plan-tasks", type=int, help="W4 tasks per plan (default 20)")
    p.add_argument("--create-plans", type=int, help="W5 create_plan calls per rep (default 100)")
    p.add_argument("--logs", type=int, help="W6 append_action_log calls (default 2000)")
    p.add_argument("--page-size", type=int, default=50, help="W6 page size (default 50)")
    p.add_argument("--redact-mb", type=float, help="W7 corpus size in MB (default 4)")
    p.add_argument("--files", type=int, help="W8 plan files (default 10000)")
    p.add_argument("--max-open", type=int, default=64, help="plandb connection-cache bound")
    p.add_argument("--baseline-calls", type=int,
                   help="cap on the baseline's calls per per-call workload (0 = no cap)")
    p.add_argument("--only", help="comma-separated workloads, e.g. W1,W3")
    p.add_argument("--no-inline", action="store_true",
                   help="skip the W1/W2 rows of plandb with SQLite's inline checkpoints")
    p.add_argument("--root", help="work folder (default: a temp folder, removed afterwards)")
    p.add_argument("--out", default="bench-results.json", help="JSON results file")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.only = [w.strip().upper() for w in args.only.split(",")] if args.only else list(
        WORKLOADS)
    unknown = set(args.only) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    if args.reps < 1:
        p.error("--reps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="plandb-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    results = {w: Result() for w in WORKLOADS}
    started = time.time()
    timings: dict[str, float] = {}
    try:
        impls = {}
        if set(args.only) & {"W1", "W2", "W3", "W4", "W5", "W6"}:
            for name in IMPLS:
                impls[name] = make_impl(name, base / name, args)
            if set(args.only) & {"W1", "W2"} and not args.no_inline:
                impls[INLINE] = make_impl(INLINE, base / INLINE, args)
        try:
            def per_call_writes() -> None:
                w1_w2(impls, args, results)
                if INLINE in impls:  # W1/W2 only
                    impls.pop(INLINE).close()

            steps = [("W1", per_call_writes),
                     ("W3", lambda: w3(impls, args, results)),
                     ("W4", lambda: w4(impls, args, results)),
                     ("W5", lambda: w5(impls, args, results)),
                     ("W6", lambda: w6(impls, args, results)),
                     ("W7", lambda: w7(args, results)),
                     ("W8", lambda: w8(args, base, results))]
            for key, step in steps:
                if key in args.only or (key == "W1" and "W2" in args.only):
                    t0 = time.perf_counter()
                    print(f"running {key}{'/W2' if key == 'W1' else ''} ...", file=sys.stderr,
                          flush=True)
                    step()
                    timings[key] = round(time.perf_counter() - t0, 1)
        finally:
            for impl in impls.values():
                impl.close()
    finally:
        if not args.root:
            shutil.rmtree(base, ignore_errors=True)
    doc = {
        "meta": {
            "plandb_version": __version__, "python": platform.python_version(),
            "apsw": apsw.apswversion(), "sqlite": apsw.sqlite_lib_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 1), "workload_seconds": timings,
            "args": {k: v for k, v in vars(args).items()},
        },
        "workloads": {w: results[w].to_dict() for w in WORKLOADS},
    }
    Path(args.out).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(table(results))
    print()
    print(speed_note())
    print()
    print(target_table(results))
    for w in WORKLOADS:
        if results[w].info:
            print(f"\n{w}: " + json.dumps(results[w].info, default=str))
    print(f"\nresults: {args.out} ({doc['meta']['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
