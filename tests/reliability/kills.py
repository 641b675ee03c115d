"""Kill -9 at random points: a child runs a scripted mix of writes and is SIGKILLed, many times.

The child (`child_main`, started as ``kill_child.py``) loads what is on disk, prints ``ready``,
then loops over a seeded random mix: create/delete plan, create/move/delete tasks,
`upsert_plan_tree` with a snapshot, action-log appends (when that API exists), adopting a
legacy-shaped plan file (a schema upgrade), a whole-root backup, and a call with bad input.
Before each call it writes a ``begin`` record saying what the call will change, after it an
``ack`` record (see `acklog`). Names of plans and tasks are unique, so the checker keys
everything by name, independent of ids.

After each kill the parent (`KillRun.check`):

1. every database file opens (a normal open: hot ``-wal`` recovered) and passes
   ``integrity_check`` and ``foreign_key_check``;
2. `reconcile(repair=True)` runs, then a second reconcile must find nothing, and an
   independent read of the registry and ``plans/`` must agree (every row ready with its file,
   every plan file registered, nothing half-built left in ``temp/``);
3. the state read back through plandb must equal the model built from every ``ack`` so far,
   or that model plus the one call in flight when the kill came (all of it: a call is atomic).
   Anything acknowledged and missing is a lost write; anything else that differs is a phantom.
4. a backup acknowledged in this round verifies and holds every plan acknowledged before it.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plandb import PlanNode, PlanRepository, PlanTree, TreeCycle

from . import features
from .acklog import AckLog, read_records
from .checks import (
    doctor_problems,
    integrity_problems,
    reconcile_root,
    registry_problems,
    subtree,
)
from .legacy import write_legacy_plan

HERE = Path(__file__).resolve().parent
CHILD = HERE / "kill_child.py"

MAX_PLANS = 6
MAX_TASKS = 30
LEGACY_BASE = 1_000_000


# --- the child -----------------------------------------------------------------------------------


class Child:
    """The scripted mix. `plans` mirrors the disk: {title: {"id", "tasks": {name: (id, parent)}}}."""

    def __init__(self, repo: PlanRepository, args: dict[str, Any]):
        self.repo = repo
        self.round = args["round"]
        self.rng = random.Random(f"{args['seed']}-{self.round}")
        self.ack = AckLog(args["ack"])
        self.work = Path(args["work"])
        self.backup = args.get("backup", True) and features.has_backup()
        self.logs = features.has_action_logs(repo)
        self.n = 0
        self.plans: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, int] = {}  # job id -> entries, for the log op's own bookkeeping

    def load(self) -> None:
        for summary in self.repo.list_plans():
            tree = self.repo.get_plan_tree(summary.id)
            tasks = {}
            for node in tree.nodes.values():
                parent = tree.nodes[node.parent_id].name if node.parent_id is not None else None
                tasks[node.name] = (node.id, parent)
            self.plans[tree.title] = {"id": summary.id, "tasks": tasks}

    def name(self, prefix: str) -> str:
        return f"{prefix}{self.round}-{self.n}"

    def begin(self, op: str, **values: Any) -> None:
        self.n += 1
        self.ack.write({"t": "begin", "n": self.n, "op": op, **values})

    def done(self, op: str, **values: Any) -> None:
        self.ack.write({"t": "ack", "n": self.n, "op": op, **values})

    subtree = staticmethod(subtree)  # `top` and its descendants in the model

    def pick_plan(self) -> tuple[str, dict[str, Any]] | None:
        if not self.plans:
            return None
        title = self.rng.choice(sorted(self.plans))
        return title, self.plans[title]

    # -- operations --

    def op_create_plan(self) -> None:
        if len(self.plans) >= MAX_PLANS:
            return self.op_delete_plan()
        title = self.name("p")
        self.begin("create_plan", title=title)
        tree = self.repo.create_plan(title, metadata={"round": self.round})
        self.done("create_plan", title=title, id=tree.id)
        self.plans[title] = {"id": tree.id, "tasks": {}}

    def op_delete_plan(self) -> None:
        # A legacy file adopted in this round has no registry row until reconcile registers
        # it, and delete_plan goes by the registry: leave those alone until the next round.
        registered = sorted(t for t, p in self.plans.items() if not p.get("unregistered"))
        if len(registered) < 3:
            return self.op_create_plan() if len(self.plans) < MAX_PLANS else self.op_create_task()
        title = self.rng.choice(registered)
        plan = self.plans[title]
        self.begin("delete_plan", title=title)
        self.repo.delete_plan(plan["id"])
        self.done("delete_plan", title=title)
        del self.plans[title]

    def op_create_task(self) -> None:
        picked = self.pick_plan()
        if picked is None:
            return self.op_create_plan()
        title, plan = picked
        tasks = plan["tasks"]
        if len(tasks) >= MAX_TASKS:
            return self.op_delete_task()
        parent = self.rng.choice([None, *sorted(tasks)])
        name = self.name("t")
        pos = self.rng.choice([None, None, 0, 2])
        self.begin("create_task", plan=title, name=name, parent=parent)
        node = self.repo.create_task(plan["id"], name=name, position=pos,
                                     parent_id=tasks[parent][0] if parent else None)
        self.done("create_task", plan=title, name=name, parent=parent, id=node.id)
        tasks[name] = (node.id, parent)

    def op_move_task(self) -> None:
        picked = self.pick_plan()
        if picked is None or not picked[1]["tasks"]:
            return self.op_create_task()
        title, plan = picked
        tasks = plan["tasks"]
        name = self.rng.choice(sorted(tasks))
        banned = set(self.subtree(tasks, name))
        parent = self.rng.choice([None, *sorted(set(tasks) - banned)])
        pos = self.rng.choice([None, 0, 1])
        self.begin("move_task", plan=title, name=name, parent=parent)
        self.repo.move_task(plan["id"], tasks[name][0], new_position=pos,
                            new_parent_id=tasks[parent][0] if parent else None)
        self.done("move_task", plan=title, name=name, parent=parent)
        tasks[name] = (tasks[name][0], parent)

    def op_delete_task(self) -> None:
        picked = self.pick_plan()
        if picked is None or not picked[1]["tasks"]:
            return self.op_create_task()
        title, plan = picked
        tasks = plan["tasks"]
        name = self.rng.choice(sorted(tasks))
        gone = self.subtree(tasks, name)
        self.begin("delete_task", plan=title, names=gone)
        self.repo.delete_task(plan["id"], tasks[name][0])
        self.done("delete_task", plan=title, names=gone)
        for x in gone:
            del tasks[x]

    def op_upsert(self) -> None:
        picked = self.pick_plan()
        if picked is None:
            return self.op_create_plan()
        title, plan = picked
        shape = {name: parent for name, (_, parent) in plan["tasks"].items()}
        ids = {name: tid for name, (tid, _) in plan["tasks"].items()}
        if shape and self.rng.random() < 0.5:
            for x in self.subtree(shape, self.rng.choice(sorted(shape))):
                shape.pop(x)
        next_id = max([0, *ids.values()]) + 1
        for i in range(self.rng.randint(1, 3)):
            new = self.name("u") + f"-{i}"
            shape[new] = self.rng.choice([None, *sorted(shape)])
            ids[new] = next_id + i
        tree = PlanTree(id=plan["id"], title=title)
        for i, (name, parent) in enumerate(shape.items()):
            tree.nodes[ids[name]] = PlanNode(
                id=ids[name], plan_id=plan["id"], name=name, position=i,
                parent_id=ids[parent] if parent else None)
        tree.relink()
        note = self.name("s")
        self.begin("upsert", plan=title, tasks=shape, note=note)
        self.repo.upsert_plan_tree(tree, note=note)
        self.done("upsert", plan=title, tasks=shape, note=note)
        plan["tasks"] = {name: (ids[name], parent) for name, parent in shape.items()}

    def op_legacy(self) -> None:
        if len(self.plans) >= MAX_PLANS:
            return self.op_delete_plan()
        plan_id = LEGACY_BASE + self.round * 1000 + self.n + 1
        title = self.name("L")
        a, b, c = (f"{title}-a", f"{title}-b", f"{title}-c")
        spec = [(a, None), (b, a), (c, None)]
        self.begin("legacy", title=title, id=plan_id, tasks=dict(spec))
        build = self.work / f"legacy-{plan_id}.sqlite"
        write_legacy_plan(build, plan_id=plan_id, title=title, tasks=spec)
        os.replace(build, self.repo.config.plan_db_path(plan_id))  # appears in plans/ at once
        tree = self.repo.get_plan_tree(plan_id)  # the first open adopts it (schema upgrade)
        self.done("legacy", title=title, id=plan_id, tasks=dict(spec))
        self.plans[title] = {"id": plan_id, "unregistered": True, "tasks": {
            n.name: (n.id, tree.nodes[n.parent_id].name if n.parent_id else None)
            for n in tree.nodes.values()}}

    def op_log(self) -> None:
        if not self.logs:
            return self.op_create_task()
        picked = self.pick_plan()
        if picked is None:
            return self.op_create_plan()
        title, plan = picked
        job = f"job-{title}"
        message = self.name("m")
        self.begin("log", plan=title, job=job, message=message)
        entry = features.append_log(self.repo, plan["id"], job, message)
        self.done("log", plan=title, job=job, message=message, seq=entry.sequence)

    def op_backup(self) -> None:
        if not self.backup:
            return self.op_create_task()
        dest = self.work / f"backup-{self.round}-{self.n + 1}"
        titles = sorted(self.plans)
        self.begin("backup", dest=str(dest), titles=titles)
        features.backup(self.repo.config.root, dest)
        self.done("backup", dest=str(dest), titles=titles)

    def op_bad(self) -> None:
        picked = self.pick_plan()
        if picked is None:
            return self.op_create_plan()
        title, plan = picked
        tasks = plan["tasks"]
        parents = [n for n, (_, p) in tasks.items() if p is not None]
        if not parents:
            return self.op_create_task()
        child = self.rng.choice(sorted(parents))
        top = tasks[child][1]
        self.begin("bad", plan=title)
        try:
            self.repo.move_task(plan["id"], tasks[top][0], new_parent_id=tasks[child][0])
        except TreeCycle as exc:
            self.ack.write({"t": "fail", "n": self.n, "op": "bad", "error": type(exc).__name__})
            return
        raise AssertionError("moving a task under its own child was accepted")

    OPS = (("op_create_plan", 6), ("op_delete_plan", 3), ("op_create_task", 25),
           ("op_move_task", 12), ("op_delete_task", 7), ("op_upsert", 8), ("op_legacy", 3),
           ("op_log", 12), ("op_backup", 1), ("op_bad", 3))

    def run(self, max_ops: int, first: str | None = None) -> None:
        if first:
            getattr(self, first)()
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        for _ in range(max_ops):
            getattr(self, self.rng.choices(names, weights)[0])()


def child_main(args: dict[str, Any]) -> int:
    """Body of the child: load, say ready, run the mix until killed (or max_ops)."""
    err = Path(args["errors"])
    try:
        with PlanRepository(args["root"]) as repo:
            child = Child(repo, args)
            child.load()
            if hasattr(repo, "_template_bytes"):
                repo._template_bytes()  # built once per process: not what the kills are about
            os.write(1, f"ready {os.getpid()}\n".encode())
            child.run(args.get("max_ops", 100_000), args.get("first"))
    except BaseException as exc:  # noqa: BLE001 - report everything the parent must count
        with AckLog(err) as log:
            log.write({"type": f"{type(exc).__module__}.{type(exc).__name__}",
                       "message": str(exc)[:1000], "tb": traceback.format_exc()[-4000:]})
        return 1
    return 0


def zygote_main() -> int:
    """Fork one child per request line on stdin, report ``forked``/``exit`` on stdout.

    Python start-up and imports are paid once here instead of once per kill; each child is
    still its own process, SIGKILLed by the parent. No threads and no open files here, so
    forking is safe.
    """
    for line in sys.stdin:
        args = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: never returns into this loop
            code = 1
            try:
                code = child_main(args)
            finally:
                os._exit(code)
        os.write(1, f"forked {pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        os.write(1, f"exit {pid} {code}\n".encode())
    return 0


class Launcher:
    """The parent's end of the zygote: start a child, wait for ready / exit."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(CHILD), "--zygote"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def start(self, args: dict[str, Any]) -> int:
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.flush()
        word, pid = self.line()
        assert word == "forked", (word, pid)
        return int(pid)

    def line(self) -> tuple[str, str]:
        """("forked", pid), ("ready", pid) or ("exit", exit code: -9 for SIGKILL)."""
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote died: {self.proc.stderr.read()[-3000:]}")
        parts = line.split()
        return parts[0], parts[-1]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.proc.stderr.close()


# --- the parent ----------------------------------------------------------------------------------


def _parent_name(tree: PlanTree, node: PlanNode) -> str | None:
    if node.parent_id is None:
        return None
    parent = tree.nodes.get(node.parent_id)
    return parent.name if parent is not None else f"<missing task {node.parent_id}>"


def empty_plan() -> dict[str, Any]:
    return {"tasks": {}, "notes": set(), "logs": {}}


def apply(model: dict[str, dict[str, Any]], rec: dict[str, Any]) -> None:
    """Apply one begin/ack record's effect to a model {title: {tasks, notes, logs}}."""
    op = rec["op"]
    if op in ("create_plan",):
        model[rec["title"]] = empty_plan()
    elif op == "legacy":
        plan = model[rec["title"]] = empty_plan()
        plan["tasks"] = dict(rec["tasks"])
    elif op == "delete_plan":
        model.pop(rec["title"], None)
    elif op in ("create_task", "move_task"):
        model[rec["plan"]]["tasks"][rec["name"]] = rec["parent"]
    elif op == "delete_task":
        for x in rec["names"]:
            model[rec["plan"]]["tasks"].pop(x, None)
    elif op == "upsert":
        plan = model[rec["plan"]]
        plan["tasks"] = dict(rec["tasks"])
        plan["notes"].add(rec["note"])
    elif op == "log":
        logs = model[rec["plan"]]["logs"].setdefault(rec["job"], {})
        seq = rec.get("seq", len(logs) + 1)
        logs[seq] = rec["message"]
    # "backup" and "bad" change nothing in the model


@dataclass(slots=True)
class KillResult:
    rounds: int = 0
    kills: int = 0            # rounds that ended in a SIGKILL (not a clean or early exit)
    ops_acked: int = 0
    in_flight_applied: int = 0
    in_flight_dropped: int = 0
    backups_checked: int = 0
    lost: list[str] = field(default_factory=list)
    phantom: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)      # completed (ack or typed fail)
    started: dict[str, int] = field(default_factory=dict)  # begun (some cut by the kill)

    def failures(self) -> list[str]:
        return ([f"lost: {x}" for x in self.lost] + [f"phantom: {x}" for x in self.phantom]
                + [f"leaked: {x}" for x in self.leaked] + [f"problem: {x}" for x in self.problems])


class KillRun:
    """Drives rounds against one root and keeps the model of what was acknowledged."""

    SLOW = ("op_backup", "op_legacy", "op_create_plan")

    def __init__(self, root: Path, work: Path, *, seed: int = 0,
                 delay_ms: tuple[float, float] = (5, 80), long_every: int = 8,
                 long_delay_ms: tuple[float, float] = (200, 500), reconcile: bool = True):
        self.root = Path(root)
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.delay_ms = delay_ms
        # Every `long_every`-th round lives longer, so that the slow steps (backup, legacy
        # upgrade, create_plan's fsyncs) also complete and get acknowledged, not only cut.
        self.long_every = long_every
        self.long_delay_ms = long_delay_ms
        self.rng = random.Random(f"parent-{seed}")
        self.model: dict[str, dict[str, Any]] = {}
        self.result = KillResult()
        self.reconcile = reconcile
        with PlanRepository(self.root):
            pass  # the layout and the registry exist before the first child
        self.launcher = Launcher()

    def close(self) -> None:
        self.launcher.close()

    def round(self, i: int) -> None:
        ack = self.work / f"ack-{i}.jsonl"
        errors = self.work / f"errors-{i}.jsonl"
        long = bool(self.long_every) and i % self.long_every == self.long_every - 1
        args = {"root": str(self.root), "work": str(self.work), "ack": str(ack),
                "errors": str(errors), "seed": self.seed, "round": i,
                # A long round starts with one of the slow steps, so those complete too.
                "first": self.SLOW[(i // max(1, self.long_every)) % len(self.SLOW)]
                if long else None}
        pid = self.launcher.start(args)
        word, code = self.launcher.line()
        if word == "ready":
            time.sleep(self.rng.uniform(*(self.long_delay_ms if long else self.delay_ms)) / 1000)
            try:  # the zygote reaps it only once it is dead, so the pid is still ours
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it died by itself (its errors file says why); "exit" tells the code
            word, code = self.launcher.line()
        assert word == "exit", word
        self.result.rounds += 1
        if int(code) == -signal.SIGKILL:
            self.result.kills += 1
        else:
            self.result.leaked.append(f"round {i}: child exited {code} before the kill")
        for rec in read_records(errors):
            self.result.leaked.append(f"round {i}: {rec['type']}: {rec['message']}\n{rec['tb']}")
        self.check(i, list(read_records(ack)))

    def check(self, i: int, records: list[dict[str, Any]]) -> None:
        res = self.result
        open_rec: dict[str, Any] | None = None
        acked_backups = []
        for rec in records:
            if rec["t"] == "begin":
                open_rec = rec
                res.started[rec["op"]] = res.started.get(rec["op"], 0) + 1
            elif rec["t"] == "ack":
                apply(self.model, rec)
                res.ops_acked += 1
                res.ops[rec["op"]] = res.ops.get(rec["op"], 0) + 1
                open_rec = None
                if rec["op"] == "backup":
                    acked_backups.append(rec)
            elif rec["t"] == "fail":
                res.ops[rec["op"]] = res.ops.get(rec["op"], 0) + 1
                open_rec = None
        res.problems.extend(f"round {i}: {p}" for p in integrity_problems(self.root))
        if self.reconcile:
            first = reconcile_root(self.root, repair=True)
            if first is not None:
                again = reconcile_root(self.root, repair=False)
                if again:
                    res.problems.append(f"round {i}: a second reconcile still finds {again[:5]} "
                                        f"(the first reported {first[:5]})")
        res.problems.extend(f"round {i}: {p}" for p in registry_problems(self.root))
        observed = self.observe()
        candidates = [self.model]
        if open_rec is not None and open_rec["op"] not in ("backup", "bad"):
            after = copy.deepcopy(self.model)
            try:
                apply(after, open_rec)
                candidates.append(after)
            except KeyError:
                pass
        for k, cand in enumerate(candidates):
            if observed == cand:
                if k == 1:
                    res.in_flight_applied += 1
                    self.model = cand
                elif open_rec is not None:
                    res.in_flight_dropped += 1
                break
        else:
            self.diff(i, candidates[-1], observed)
            self.model = observed  # go on from what is there, so one loss is counted once
        for rec in acked_backups:
            self.check_backup(i, rec)
        for p in self.work.glob("legacy-*.sqlite*"):  # a legacy build cut before its rename
            p.unlink()

    def observe(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with PlanRepository(self.root) as repo:
            for summary in repo.list_plans():
                tree = repo.get_plan_tree(summary.id)
                plan = out[tree.title] = empty_plan()
                plan["tasks"] = {n.name: _parent_name(tree, n) for n in tree.nodes.values()}
                plan["notes"] = {s.note for s in repo.list_snapshots(summary.id)}
                if features.has_action_logs(repo):
                    plan["logs"] = features.logs_by_job(repo, summary.id)
        return out

    def diff(self, i: int, expect: dict[str, Any], observed: dict[str, Any]) -> None:
        res = self.result
        for title in sorted(set(expect) - set(observed)):
            res.lost.append(f"round {i}: plan {title!r} acknowledged, missing")
        for title in sorted(set(observed) - set(expect)):
            res.phantom.append(f"round {i}: plan {title!r} never acknowledged")
        for title in sorted(set(expect) & set(observed)):
            e, o = expect[title], observed[title]
            for name, parent in e["tasks"].items():
                if name not in o["tasks"]:
                    res.lost.append(f"round {i}: {title}/{name} acknowledged, missing")
                elif o["tasks"][name] != parent:
                    res.lost.append(f"round {i}: {title}/{name} under {o['tasks'][name]!r}, "
                                    f"acknowledged under {parent!r}")
            for name in sorted(set(o["tasks"]) - set(e["tasks"])):
                res.phantom.append(f"round {i}: {title}/{name} never acknowledged (or deleted)")
            for note in sorted(e["notes"] - o["notes"]):
                res.lost.append(f"round {i}: {title} snapshot {note!r} missing")
            for note in sorted(o["notes"] - e["notes"]):
                res.phantom.append(f"round {i}: {title} snapshot {note!r} never acknowledged")
            if e["logs"] != o["logs"]:
                for job, entries in e["logs"].items():
                    got = o["logs"].get(job, {})
                    for seq, msg in entries.items():
                        if got.get(seq) != msg:
                            res.lost.append(f"round {i}: log {job} seq {seq} {msg!r} "
                                            f"missing (found {got.get(seq)!r})")
                res.phantom.append(f"round {i}: logs of {title} differ: {o['logs']} vs "
                                   f"acknowledged {e['logs']}")

    def check_backup(self, i: int, rec: dict[str, Any]) -> None:
        dest = Path(rec["dest"])
        self.result.backups_checked += 1
        for p in features.backup_problems(dest, rec["titles"]):
            self.result.lost.append(f"round {i}: backup {dest.name}: {p}")
        shutil.rmtree(dest, ignore_errors=True)


def run_kills(root: Path, work: Path, *, kills: int, seed: int = 0,
              delay_ms: tuple[float, float] = (5, 80), max_rounds: int | None = None,
              progress=None) -> KillResult:
    """Run rounds until `kills` children were SIGKILLed (or `max_rounds`), checking each."""
    run = KillRun(root, work, seed=seed, delay_ms=delay_ms)
    limit = max_rounds if max_rounds is not None else kills * 2
    i = 0
    try:
        while run.result.kills < kills and i < limit:
            run.round(i)
            i += 1
            if progress is not None:
                progress(run.result)
        # Once at the end, the operator's view: `plandb doctor` through the real command.
        run.result.problems.extend(f"final: {p}" for p in doctor_problems(run.root))
    finally:
        run.close()
    return run.result
