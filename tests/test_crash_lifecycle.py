"""Crash safety of the multi-file steps: real `kill -9` of a writing child process, then
`reconcile(repair=True)`, then proof that nothing acknowledged was lost.

The child (tests/crash_child.py) prints ``DO ...`` before and ``ACK ...`` after each call. After
the kill the parent knows every call that returned (must be visible) and the one call that may
have been cut (either outcome is fine; anything else is not). The model of what must be on disk
is re-based on the verified state after each kill, so kills accumulate on one DB_ROOT.

Long form: PLANDB_STRESS=1 runs 300 kills instead of 40.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import apsw
import pytest

from plandb.maintenance.reconcile import reconcile
from plandb.repository import PlanRepository, try_lock

CHILD = Path(__file__).with_name("crash_child.py")
KILLS = 300 if os.environ.get("PLANDB_STRESS") == "1" else 40

# plan id -> (title, {task id: (name, parent id)})
State = dict[int, tuple[str, dict[int, tuple[str, int | None]]]]


# --- running the child -------------------------------------------------------------------------


def start_child(root: Path, mode: str, seed: int, crash_at: str | None = None):
    env = {k: v for k, v in os.environ.items() if k != "PLANDB_CRASH_AT"}
    if crash_at:
        env["PLANDB_CRASH_AT"] = crash_at
    # stderr goes to a file: a pipe read by communicate() would skip what readline() buffered.
    err = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(root), mode, str(seed)],
        stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    proc.err = err
    first = proc.stdout.readline()
    if first.strip() != "READY":
        proc.kill()
        proc.wait()
        err.seek(0)
        pytest.fail(f"child did not start: {first!r}{proc.stdout.read()}\n{err.read()}")
    return proc


def kill_child(proc: subprocess.Popen) -> list[str]:
    """SIGKILL the child (if still alive) and return its output lines after READY."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    out = proc.stdout.read()
    proc.stdout.close()
    proc.err.seek(0)
    err = proc.err.read()
    proc.err.close()
    assert proc.returncode == -signal.SIGKILL, f"child died on its own ({proc.returncode}):\n{err}"
    assert "Traceback" not in err, err
    return out.splitlines()


def parse(lines: list[str]) -> tuple[list[list[str]], list[str] | None]:
    """(acknowledged calls, the call that was cut or None)."""
    acked: list[list[str]] = []
    pending = None
    for line in lines:
        word, *rest = line.split()
        if word == "DO":
            pending = rest
        elif word == "ACK":
            acked.append(rest)
            pending = None
    return acked, pending


# --- the model -----------------------------------------------------------------------------


def _parent(text: str) -> int | None:
    return None if text == "-" else int(text)


def _subtree(tasks: dict, root: int) -> set[int]:
    out, grew = {root}, True
    while grew:
        grew = False
        for tid, (_name, parent) in tasks.items():
            if parent in out and tid not in out:
                out.add(tid)
                grew = True
    return out


def apply(state: State, call: list[str], actual: State | None = None) -> State | None:
    """`state` after `call`; unknown ids ('?' in a cut call) are looked up in `actual`.
    None if the call cannot have happened (its new rows are not in `actual`)."""
    s = copy.deepcopy(state)
    op, *a = call
    if op == "create":
        pid, seq = a
        if pid == "?":
            found = [p for p, (title, _t) in actual.items() if p not in s and title == f"p{seq}"]
            if not found:
                return None
            pid = found[0]
        s[int(pid)] = (f"p{seq}", {})
    elif op == "delete":
        s.pop(int(a[0]), None)
    elif op == "retitle":
        pid = int(a[0])
        s[pid] = (f"t{a[1]}", s[pid][1])
    elif op in ("task", "bulk"):
        pid, ids, parent, seq = int(a[0]), a[1], _parent(a[2]), a[3]
        tasks = s[pid][1]
        prefix = f"n{seq}" if op == "task" else f"b{seq}."
        if ids == "?":
            new = sorted((t for t, (name, _p) in actual.get(pid, ("", {}))[1].items()
                          if t not in tasks and name.startswith(prefix)),
                         key=lambda t: actual[pid][1][t][0])
            if not new:
                return None
        else:
            new = [int(x) for x in ids.split(",")]
        if op == "task":
            tasks[new[0]] = (f"n{seq}", parent)
        else:
            for i, tid in enumerate(new):
                tasks[tid] = (f"b{seq}.{i}", parent if i == 0 else new[0])
    elif op == "rename":
        pid, tid = int(a[0]), int(a[1])
        tasks = s[pid][1]
        tasks[tid] = (f"u{a[2]}", tasks[tid][1])
    elif op == "drop":
        pid, tid = int(a[0]), int(a[1])
        tasks = s[pid][1]
        for gone in _subtree(tasks, tid):
            del tasks[gone]
    else:
        raise AssertionError(call)
    return s


def read_state(repo: PlanRepository) -> State:
    """What callers can see: listed plans, with the plan file's own title and tasks."""
    state: State = {}
    for summary in repo.list_plans(owner="crash"):
        tree = repo.get_plan_tree(summary.id)
        state[summary.id] = (tree.title, {
            n.id: (n.name, n.parent_id) for n in tree.nodes.values()})
    return state


def check_files(root: Path) -> None:
    """Every database file opens and passes integrity_check; registry rows == plan files."""
    files = sorted((root / "plans").glob("plan_*.sqlite")) + [root / "main" / "plan_registry.db"]
    for path in files:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], path
        finally:
            conn.close()
    conn = apsw.Connection(str(root / "main" / "plan_registry.db"),
                           flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute("SELECT id, state FROM plans").fetchall()
    finally:
        conn.close()
    assert {state for _id, state in rows} <= {"ready"}, rows
    on_disk = {int(p.name[5:-7]) for p in (root / "plans").glob("plan_*.sqlite")}
    assert {pid for pid, _s in rows} == on_disk
    assert not [p for p in (root / "plans").iterdir() if not p.name.endswith(".sqlite")
                and not p.name.endswith((".sqlite-wal", ".sqlite-shm"))]
    assert sorted(p.name for p in (root / "temp").iterdir()) == []


def check_registry_mirrors_files(repo: PlanRepository) -> None:
    for summary in repo.list_plans():
        tree = repo.get_plan_tree(summary.id)
        assert (summary.title, summary.description, summary.metadata, summary.task_count) == (
            tree.title, tree.description, tree.metadata, len(tree)), summary


def assert_allowed(expected: State, acked: list[list[str]], pending: list[str] | None,
                   actual: State, maybe_titles: set[str], where: str) -> None:
    """`actual` is `expected` after every acknowledged call, with or without the cut one.
    `maybe_titles` collects cut create_plans, which a later reconcile may complete."""
    for pid, (title, tasks) in actual.items():
        if pid not in expected and title in maybe_titles and not tasks:
            expected[pid] = (title, {})  # a cut create_plan that reconcile completed
    after = expected
    for call in acked:
        after = apply(after, call)
    candidates = [after]
    if pending is not None:
        cut = apply(after, pending, actual)
        if cut is not None:
            candidates.append(cut)
        if pending[0] == "create":
            maybe_titles.add(f"p{pending[2]}")
    assert actual in candidates, (
        f"{where}: state differs from every allowed outcome\nacked: {acked}\n"
        f"cut: {pending}\nactual: {actual}\nexpected one of: {candidates}")


# --- tests -------------------------------------------------------------------------------------


def test_random_kills_lose_nothing_acknowledged(db_root: Path):
    """Kill -9 the child at random moments, KILLS times; reconcile after most kills (the child
    sometimes restarts on an unreconciled root). Nothing acknowledged may be lost."""
    seed = int(os.environ.get("PLANDB_CRASH_SEED", "0")) or random.randrange(1, 10**6)
    rng = random.Random(seed)
    seed0 = rng.randrange(1, 1000)
    expected: State = {}
    maybe_titles: set[str] = set()  # cut create_plans: may show up once reconciled
    kinds_seen: dict[str, int] = {}
    survived = 0
    for i in range(KILLS):
        proc = start_child(db_root, "random", seed0 + i)
        time.sleep(rng.uniform(0.0, 0.25))
        lines = kill_child(proc)
        survived += 1
        acked, pending = parse(lines)
        repair = i == KILLS - 1 or rng.random() < 0.75
        with PlanRepository(db_root) as repo:
            if repair:
                report = reconcile(repo, repair=True)
                assert report.ok, (f"kill {i} (PLANDB_CRASH_SEED={seed})", report.to_dict())
                for p in report.problems:
                    kinds_seen[p.kind] = kinds_seen.get(p.kind, 0) + 1
                again = reconcile(repo)
                assert again.problems == [], (f"kill {i} (seed {seed})", again.to_dict())
            actual = read_state(repo)
            if repair:
                check_registry_mirrors_files(repo)
        if repair:
            check_files(db_root)
        assert_allowed(expected, acked, pending, actual, maybe_titles,
                       f"kill {i} (PLANDB_CRASH_SEED={seed})")
        expected = actual
    print(f"\n{survived} kills survived; reconcile repaired: {kinds_seen}")
    assert survived == KILLS


STEPS = {
    # step -> problem kinds reconcile must find (report only, before repair)
    "create:row": {"creating_row"},
    "create:built": {"creating_row"},
    "create:renamed": {"creating_row"},
    "update_plan:file": {"registry_meta_mismatch", "stale_counts"},
    "delete:marked": {"deleting_row"},
    "delete:unlinked": {"deleting_row"},
    "delete:unlinked-wal": {"deleting_row"},
}


def test_reconcile_beside_a_live_writer_breaks_nothing(db_root: Path):
    """reconcile(repair=True) may run while another process writes: a create_plan in progress
    is left alone (its lock is held), nothing is dropped, and what it finishes or refreshes is
    what the writer would have done anyway."""
    proc = start_child(db_root, "random", 4242)
    runs = 0
    try:
        with PlanRepository(db_root) as repo:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline or runs < 5:
                report = reconcile(repo, repair=True)
                runs += 1
                kinds = {p.kind for p in report.problems}
                # The writer syncs counts lazily, and may be between the steps of an
                # update_plan or a delete_plan; nothing else is a problem.
                assert kinds <= {"stale_counts", "registry_meta_mismatch", "deleting_row"}, (
                    report.to_dict())
    finally:
        lines = kill_child(proc)
    acked, pending = parse(lines)
    assert len(acked) > 20 and runs >= 5
    with PlanRepository(db_root) as repo:
        assert reconcile(repo, repair=True).ok
        assert reconcile(repo).problems == []
        actual = read_state(repo)
        check_registry_mirrors_files(repo)
    check_files(db_root)
    assert_allowed({}, acked, pending, actual, set(), "after a live reconcile")


@pytest.mark.parametrize("step", sorted(STEPS))
def test_kill_at_each_step_is_detected_and_repaired(db_root: Path, step: str):
    proc = start_child(db_root, "script", 1, crash_at=step)
    proc.wait(timeout=60)  # it kills itself at `step`
    lines = kill_child(proc)
    acked, pending = parse(lines)
    assert pending is not None and "DONE" not in lines
    with PlanRepository(db_root) as repo:
        before = reconcile(repo)
        assert {p.kind for p in before.problems} == STEPS[step], before.to_dict()
        assert not before.ok
        fixed = reconcile(repo, repair=True)
        assert fixed.ok and {p.kind for p in fixed.problems} == STEPS[step], fixed.to_dict()
        assert reconcile(repo).problems == []
        actual = read_state(repo)
        check_registry_mirrors_files(repo)
    check_files(db_root)
    after: State = {}
    for call in acked:
        after = apply(after, call)
    allowed = [after, apply(after, pending, actual)]
    assert actual in allowed
    if step == "create:renamed":  # the file was complete: the plan is kept
        assert [t for t, _ in actual.values()] == ["p1"]
    if step.startswith("create:") and step != "create:renamed":
        assert actual == {}
    if step.startswith("delete:"):
        assert actual == {}


def test_registry_counts_behind_after_kill_are_recomputed(db_root: Path):
    """The child syncs task counts to the registry lazily; after a kill they lag, reconcile
    finds stale_counts and recomputes them from the file."""
    proc = start_child(db_root, "script", 1, crash_at="update_plan:file")
    proc.wait(timeout=60)
    kill_child(proc)
    with PlanRepository(db_root) as repo:
        report = reconcile(repo)
        stale = [p for p in report.problems if p.kind == "stale_counts"]
        assert stale and "task_count=0" in stale[0].detail
        reconcile(repo, repair=True)
        (summary,) = repo.list_plans()
        assert summary.task_count == 1 and summary.title == "t3"


# --- states built by hand ----------------------------------------------------------------------


def registry_sql(root: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = apsw.Connection(str(root / "main" / "plan_registry.db"))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def tree_of_files(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under root: (size, mtime_ns, bytes) by relative path."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def messy_root(root: Path) -> dict[str, int]:
    """One of each problem reconcile knows, made with a closed repository (no -wal left)."""
    with PlanRepository(root) as repo:
        ids = {name: repo.create_plan(name, owner="o", metadata={"n": name}).id
               for name in ("orphan", "deleting", "creating", "missing", "stale", "renamed")}
        for name in ("orphan", "stale"):
            repo.create_tasks(ids[name], [{"name": "a"}, {"name": "b"}])
        repo.create_plan("fine")
    registry_sql(root, "DELETE FROM plans WHERE id = ?", (ids["orphan"],))
    registry_sql(root, "UPDATE plans SET state = 'deleting' WHERE id = ?", (ids["deleting"],))
    registry_sql(root, "UPDATE plans SET state = 'creating' WHERE id = ?", (ids["creating"],))
    registry_sql(root, "UPDATE plans SET task_count = 0 WHERE id = ?", (ids["stale"],))
    registry_sql(root, "UPDATE plans SET title = 'old' WHERE id = ?", (ids["renamed"],))
    (root / "plans" / f"plan_{ids['missing']}.sqlite").unlink()
    (root / "plans" / "plan_90.sqlite").write_bytes(b"garbage" * 500)
    (root / "temp" / "plan_91.building").write_bytes(b"half a file")
    return ids


def test_report_only_changes_nothing_and_repair_fixes_everything_it_can(db_root: Path):
    ids = messy_root(db_root)
    with PlanRepository(db_root) as repo:
        before = tree_of_files(db_root)
        report = reconcile(repo)
        assert tree_of_files(db_root) == before  # not a byte, not an mtime
        found = sorted((p.kind, p.plan_id) for p in report.problems)
        assert found == sorted([
            ("orphan_file", ids["orphan"]), ("deleting_row", ids["deleting"]),
            ("creating_row", ids["creating"]), ("missing_file", ids["missing"]),
            ("stale_counts", ids["stale"]), ("registry_meta_mismatch", ids["renamed"]),
            ("unreadable_file", 90), ("stale_building_file", 91)])
        assert not report.ok and not any(p.repaired for p in report.problems)
        assert report.to_dict()["problems"][0].keys() == {
            "kind", "plan_id", "path", "detail", "repaired"}

        fixed = reconcile(repo, repair=True)
        assert sorted((p.kind, p.plan_id) for p in fixed.problems) == found
        assert {p.kind for p in fixed.unrepaired} == {"missing_file", "unreadable_file"}
        assert not fixed.ok
        again = reconcile(repo)
        assert {p.kind for p in again.problems} == {"missing_file", "unreadable_file"}

        summaries = {s.id: s for s in repo.list_plans()}
        orphan = summaries[ids["orphan"]]
        assert (orphan.title, orphan.owner, orphan.metadata, orphan.task_count) == (
            "orphan", "o", {"n": "orphan"}, 2)
        assert summaries[ids["creating"]].title == "creating"  # its file was complete
        assert ids["deleting"] not in summaries
        assert not repo.config.plan_db_path(ids["deleting"]).exists()
        assert summaries[ids["stale"]].task_count == 2
        assert summaries[ids["renamed"]].title == "renamed"
        assert ids["missing"] in summaries  # the row is kept (and still listed)
        assert registry_sql(db_root, "SELECT state FROM plans WHERE id = ?",
                            (ids["missing"],)) == [("ready",)]
    assert (db_root / "plans" / "plan_90.sqlite").read_bytes() == b"garbage" * 500
    assert list((db_root / "temp").iterdir()) == []


def test_reconcile_without_a_registry_creates_none(db_root: Path):
    with PlanRepository(db_root) as repo:
        pid = repo.create_plan("p").id
    for p in (db_root / "main").iterdir():
        p.unlink()
    with PlanRepository(db_root) as repo:
        report = reconcile(repo)
        assert [(p.kind, p.plan_id) for p in report.problems] == [("orphan_file", pid)]
        assert list((db_root / "main").iterdir()) == []
        reconcile(repo, repair=True)
        assert [s.title for s in repo.list_plans()] == ["p"]
        assert repo.create_plan("next").id == pid + 1


def test_a_plan_file_claiming_another_id_is_reported_not_registered(db_root: Path):
    with PlanRepository(db_root) as repo:
        pid = repo.create_plan("p").id
    shutil.copy(db_root / "plans" / f"plan_{pid}.sqlite", db_root / "plans" / "plan_40.sqlite")
    with PlanRepository(db_root) as repo:
        report = reconcile(repo, repair=True)
        assert [(p.kind, p.plan_id, p.repaired) for p in report.problems] == [
            ("misplaced_file", 40, False)]
        assert [s.id for s in repo.list_plans()] == [pid]
    assert (db_root / "plans" / "plan_40.sqlite").exists()


def test_a_create_plan_in_progress_is_left_alone(db_root: Path):
    """The creation lock tells a live create_plan (lock held) from a dead one (lock free)."""
    with PlanRepository(db_root) as repo:
        repo.create_plan("first")
        registry_sql(db_root, "INSERT INTO plans (id, title, plan_file, state, created_at, "
                     "updated_at) VALUES (2, 'busy', 'plans/plan_2.sqlite', 'creating', 'x', 'x')")
        building = repo._building_path(2)
        building.write_bytes(b"being written")
        held = try_lock(repo._creation_lock_path(2))
        assert held is not None
        try:
            assert reconcile(repo).problems == []
            assert reconcile(repo, repair=True).problems == []
            assert building.exists()
            assert registry_sql(db_root, "SELECT state FROM plans WHERE id = 2") == [
                ("creating",)]
        finally:
            os.close(held)  # as if the creator died
        report = reconcile(repo, repair=True)
        assert [(p.kind, p.plan_id, p.repaired) for p in report.problems] == [
            ("creating_row", 2, True)]
        assert registry_sql(db_root, "SELECT id FROM plans") == [(1,)]
        assert list((db_root / "temp").iterdir()) == []


def test_templates_of_dead_processes_are_removed(db_root: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    temp = db_root / "temp"
    with PlanRepository(db_root) as repo:
        for pid in (dead.pid, os.getpid()):
            (temp / f"template-{pid}-7.sqlite").write_bytes(b"x")
            (temp / f"template-{pid}-7.sqlite.lock").write_bytes(b"")
        report = reconcile(repo, repair=True)
        assert [(p.kind, p.repaired) for p in report.problems] == [("stale_building_file", True)]
        assert str(dead.pid) in report.problems[0].detail
    assert sorted(p.name for p in temp.iterdir()) == [
        f"template-{os.getpid()}-7.sqlite", f"template-{os.getpid()}-7.sqlite.lock"]


def test_values_a_plan_file_does_not_hold_are_kept_in_the_registry(db_root: Path):
    """A legacy file without owner/description in plan_meta says nothing about them: the
    registry keeps its values instead of losing them to None."""
    with PlanRepository(db_root) as repo:
        pid = repo.create_plan("p", owner="ana", description="d", metadata={"k": 1}).id
    conn = apsw.Connection(str(db_root / "plans" / f"plan_{pid}.sqlite"))
    try:
        conn.execute("DELETE FROM plan_meta WHERE key IN ('owner', 'description', 'metadata')")
        conn.execute("UPDATE plan_meta SET value = 'new title' WHERE key = 'title'")
    finally:
        conn.close()
    with PlanRepository(db_root) as repo:
        report = reconcile(repo, repair=True)
        assert [(p.kind, p.detail) for p in report.problems] == [
            ("registry_meta_mismatch", "registry values differ from the file's plan_meta: title")]
        s = repo.get_plan_summary(pid)
        assert (s.title, s.owner, s.description, s.metadata) == ("new title", "ana", "d", {"k": 1})
        assert reconcile(repo).problems == []
