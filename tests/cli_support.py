"""Helpers for the CLI tests: run the real `plandb` group, seed roots, fingerprint files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner, Result

from plandb.cli import main
from plandb.maintenance.scan import read_snapshot
from plandb.repository import PlanRepository

REPO_DIR = Path(__file__).resolve().parent.parent
PLANDB_BIN = REPO_DIR / ".venv" / "bin" / "plandb"


def cli(root: Path | None, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run `plandb [--db-root root] args...` in-process through click's runner."""
    argv = (["--db-root", str(root)] if root is not None else []) + list(args)
    return CliRunner(env=env).invoke(main, argv, catch_exceptions=False)


def cli_json(root: Path | None, *args: str, code: int | None = 0) -> dict[str, Any]:
    """Run with --json appended; check the exit status; parse stdout as one JSON document."""
    result = cli(root, *args, "--json")
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return json.loads(result.stdout)


def run_plandb(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
               module: bool = False) -> subprocess.CompletedProcess:
    """Run the installed entry point (or `python -m plandb`) as a real process."""
    cmd = [sys.executable, "-m", "plandb", *args] if module else [str(PLANDB_BIN), *args]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


def make_plan(repo: PlanRepository, title: str, tasks: int = 3, *, padding: int = 0) -> int:
    """A plan with a small tree: one root, `tasks - 1` children, the first one done."""
    plan = repo.create_plan(title, owner="ana")
    root = repo.create_task(plan.id, name=f"{title} root", instruction="x" * padding)
    for i in range(tasks - 1):
        repo.create_task(plan.id, name=f"step {i}", parent_id=root.id, instruction="y" * padding,
                         status="done" if i == 0 else "pending")
    return plan.id


def fingerprint(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """(size, mtime_ns, bytes) of every file under root, -shm excluded only if asked."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, p.read_bytes())
    return out


def sql(path: Path, statement: str, params: tuple = ()) -> None:
    """Change a database file behind plandb's back (to seed problems)."""
    conn = apsw.Connection(str(path))
    try:
        conn.set_busy_timeout(5000)
        conn.execute(statement, params)
    finally:
        conn.close()


def make_too_new(path: Path, version: int = 99) -> None:
    """Make a file look written by a newer plandb: user_version and plan_meta both."""
    conn = apsw.Connection(str(path))
    try:
        conn.execute("UPDATE plan_meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        conn.execute(f"PRAGMA user_version = {int(version)}")
    finally:
        conn.close()


def truncate_half(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def integrity(path: Path) -> list[str]:
    """PRAGMA integrity_check, read without leaving -wal/-shm files behind."""
    return read_snapshot(path, lambda c: [r[0] for r in c.execute("PRAGMA integrity_check")])


def kinds(report: dict[str, Any]) -> dict[str, set[str]]:
    """problem kind -> set of paths, from any report with a "problems" list."""
    out: dict[str, set[str]] = {}
    for p in report["problems"]:
        out.setdefault(p["kind"], set()).add(p["path"])
    return out


def seed_problem_root(root: Path) -> dict[str, set[str]]:
    """A root with one of each problem a crash or a disk can leave; returns kind -> paths.

    healthy plans 1-2; missing file (3); orphan file (4); garbage bytes (5); truncated (6);
    schema too new (7); row left 'creating' with its file (8); row left 'deleting' (9);
    row left 'creating' with no file (500).
    """
    with PlanRepository(root) as repo:
        ids = [make_plan(repo, f"plan {i}", tasks=4, padding=3000 if i == 6 else 0)
               for i in range(1, 10)]
    assert ids == list(range(1, 10))
    plans = root / "plans"
    registry = root / "main" / "plan_registry.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{plans / 'plan_3.sqlite'}{suffix}").unlink(missing_ok=True)
    sql(registry, "DELETE FROM plans WHERE id = 4")
    (plans / "plan_5.sqlite").write_bytes(os.urandom(16384))
    truncate_half(plans / "plan_6.sqlite")
    make_too_new(plans / "plan_7.sqlite")
    sql(registry, "UPDATE plans SET state = 'creating' WHERE id = 8")
    sql(registry, "UPDATE plans SET state = 'deleting' WHERE id = 9")
    sql(registry, "INSERT INTO plans (id, title, plan_file, state, created_at, updated_at) "
                  "VALUES (500, 'cut', 'plans/plan_500.sqlite', 'creating', 'x', 'x')")
    return {
        "missing_file": {"plans/plan_3.sqlite"},
        "orphan_file": {"plans/plan_4.sqlite"},
        "corrupt": {"plans/plan_5.sqlite"},
        "damaged": {"plans/plan_6.sqlite"},  # corrupt or check_failed, depending on the pages cut
        "schema_too_new": {"plans/plan_7.sqlite"},
        "creating_row": {"plans/plan_8.sqlite", "plans/plan_500.sqlite"},
        "deleting_row": {"plans/plan_9.sqlite"},
    }


def downgrade_registry(root: Path) -> None:
    """Rebuild the registry as schema v1 (only step 0001), as an older plandb left it."""
    from plandb import schema

    if schema.latest_version("registry") < 2:
        pytest.skip("the registry has a single schema step: nothing to downgrade to")
    path = root / "main" / "plan_registry.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = apsw.Connection(str(path))
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN")
        conn.execute(schema.steps("registry")[0].sql)
        schema.set_meta(conn, "registry", 1)
        conn.execute("COMMIT")
    finally:
        conn.close()


def on_a_terminal(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run `argv` with stdout and stderr on a pseudo-terminal; (exit status, output)."""
    import pty

    main_fd, child_fd = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdout=child_fd, stderr=child_fd,
                                stdin=subprocess.DEVNULL)
        os.close(child_fd)
        chunks = []
        while True:
            try:
                data = os.read(main_fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        return proc.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(main_fd)
