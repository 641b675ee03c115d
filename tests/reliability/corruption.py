"""A damaged plan file breaks only its own plan.

`build_root` makes a root with a few plans big enough that half a file holds real b-tree pages;
`damage` applies one kind of damage to one plan file (with every connection closed, so the file
is the whole database: no ``-wal`` beside it); `isolation_problems` then checks, through a fresh
repository and the real ``plandb`` command, that:

- the damaged plan raises `CorruptDatabase` (reads and writes) whose message and ``.path`` name
  the file; nothing else escapes;
- the registry, the other plans (reads and writes), `list_plans`, `create_plan` keep working
  and the other plans hold exactly what they held;
- the damaged file's bytes are exactly what the damage left (plandb never "fixes" it by
  writing into it);
- ``plandb inspect --json`` exits 1 (problems found) without a traceback and names the file,
  and lists the other files as fine.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from collections.abc import Callable
from pathlib import Path

from plandb import CorruptDatabase, PlanDBError, PlanRepository

from .checks import plandb_command

TASKS_PER_PLAN = 400


def build_root(root: Path, plans: int = 3) -> dict[int, dict[int, tuple[str, int | None]]]:
    """Plans with TASKS_PER_PLAN tasks each; returns {plan id: {task id: (name, parent)}}."""
    out = {}
    with PlanRepository(root) as repo:
        for i in range(plans):
            pid = repo.create_plan(f"plan-{i}", metadata={"i": i}).id
            specs = [{"name": f"t{i}-{k}", "metadata": {"pad": "x" * 200, "k": k},
                      **({"parent_index": k // 4} if k else {})}
                     for k in range(TASKS_PER_PLAN)]
            repo.create_tasks(pid, specs)
            out[pid] = shape(repo, pid)
    return out


def shape(repo: PlanRepository, pid: int) -> dict[int, tuple[str, int | None]]:
    return {n.id: (n.name, n.parent_id) for n in repo.get_plan_tree(pid).nodes.values()}


def _garbage(path: Path, rng: random.Random) -> None:
    path.write_bytes(rng.randbytes(path.stat().st_size))


def _truncate_half(path: Path, rng: random.Random) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _header(path: Path, rng: random.Random) -> None:
    with open(path, "r+b") as f:
        f.write(rng.randbytes(100))


def _pages(path: Path, rng: random.Random) -> None:
    """Random bytes over a few pages past the schema (the data b-trees)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        for _ in range(4):
            f.seek(rng.randrange(4096 * 2, size - 4096))
            f.write(rng.randbytes(4096))


def _zero_length(path: Path, rng: random.Random) -> None:
    os.truncate(path, 0)


DAMAGE: dict[str, Callable[[Path, random.Random], None]] = {
    "garbage": _garbage,
    "truncated_half": _truncate_half,
    "header_garbage": _header,
    "page_garbage": _pages,
    "zero_length": _zero_length,
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def damage(root: Path, plan_id: int, kind: str, seed: int = 0) -> Path:
    path = root / "plans" / f"plan_{plan_id}.sqlite"
    assert not Path(f"{path}-wal").exists(), "close every repository before damaging a file"
    DAMAGE[kind](path, random.Random(seed))
    return path


def _expect_corrupt(label: str, path: Path, fn: Callable[[], object],
                    may_succeed: bool = False) -> list[str]:
    try:
        fn()
    except CorruptDatabase as exc:
        out = []
        if exc.path != str(path):
            out.append(f"{label}: CorruptDatabase.path is {exc.path!r}, not {str(path)!r}")
        if path.name not in str(exc):
            out.append(f"{label}: the message does not name {path.name}: {exc}")
        return out
    except PlanDBError as exc:
        return [f"{label}: {type(exc).__name__} instead of CorruptDatabase: {exc}"]
    except Exception as exc:  # noqa: BLE001
        return [f"{label}: leaked {type(exc).__name__}: {exc}"]
    return [] if may_succeed else [f"{label}: succeeded on a damaged file"]


def isolation_problems(root: Path, victim: int, before: dict[int, dict], kind: str) -> list[str]:
    """Everything that breaks the isolation rules (empty list: all good)."""
    path = root / "plans" / f"plan_{victim}.sqlite"
    damaged = digest(path)
    # Garbage over a few pages may miss every page a call reads: SQLite cannot notice, so
    # success is allowed there (anything but CorruptDatabase escaping is still a failure).
    lenient = kind == "page_garbage"
    problems: list[str] = []
    with PlanRepository(root) as repo:
        problems += _expect_corrupt(f"{kind}: get_plan_tree", path,
                                    lambda: repo.get_plan_tree(victim), lenient)
        problems += _expect_corrupt(f"{kind}: create_task", path,
                                    lambda: repo.create_task(victim, name="x"), lenient)
        problems += _expect_corrupt(f"{kind}: get_node", path,
                                    lambda: repo.get_node(victim, 1), lenient)
        try:
            listed = {p.id for p in repo.list_plans()}
            if set(before) - listed:
                problems.append(f"{kind}: list_plans lost {sorted(set(before) - listed)}")
            for pid, expect in before.items():
                if pid == victim:
                    continue
                if shape(repo, pid) != expect:
                    problems.append(f"{kind}: plan {pid} changed")
                node = repo.create_task(pid, name="after damage")
                if repo.get_node(pid, node.id).name != "after damage":
                    problems.append(f"{kind}: plan {pid} write not read back")
            fresh = repo.create_plan("after damage")
            repo.create_task(fresh.id, name="works")
            repo.delete_plan(fresh.id)
        except Exception as exc:  # noqa: BLE001 - anything here means the damage spread
            problems.append(f"{kind}: the rest of the root broke: {type(exc).__name__}: {exc}")
    if digest(path) != damaged and not lenient:
        problems.append(f"{kind}: plandb wrote into the damaged file")
    problems += inspect_problems(root, path, kind, lenient)
    return problems


def inspect_problems(root: Path, path: Path, kind: str, lenient: bool = False) -> list[str]:
    """`plandb inspect --json` must exit 1, name the damaged file, and pass the others
    (`lenient`: only run cleanly, when the damage may be invisible to quick_check)."""
    proc = subprocess.run([*plandb_command(), "--db-root", str(root), "inspect", "--json"],
                          capture_output=True, text=True, timeout=120)
    out: list[str] = []
    if "Traceback" in proc.stderr or "Traceback" in proc.stdout:
        return [f"{kind}: plandb inspect crashed: {proc.stderr[-1500:]}"]
    if lenient:
        return out if proc.returncode in (0, 1) else [f"{kind}: inspect exited {proc.returncode}"]
    if proc.returncode != 1:
        out.append(f"{kind}: plandb inspect exited {proc.returncode}, expected 1")
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return out + [f"{kind}: plandb inspect --json printed no JSON: {proc.stdout[:300]}"]
    rel = f"plans/{path.name}"
    named = [p for p in data.get("problems", []) if p.get("path") in (rel, str(path))]
    if not named:
        out.append(f"{kind}: plandb inspect does not name {rel} among its problems: "
                   f"{data.get('problems')}")
    for f in data.get("files", []):
        if f["path"] != rel and f.get("error"):
            out.append(f"{kind}: plandb inspect reports {f['path']} as broken too: {f['error']}")
    return out
