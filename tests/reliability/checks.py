"""Checks that read files independently of the code under test (stdlib sqlite3 / raw apsw).

- `integrity_problems(root)`: every database file opens (a normal open, so a hot ``-wal`` left
  by a killed writer is recovered) and passes ``integrity_check`` and ``foreign_key_check``.
- `dump_root(root)`: the rows of every table of every file, to compare before/after a call.
- `registry_problems(root)`: the registry and the plan files agree (every row ready with its
  file, every plan file registered, nothing half-built left in temp/).
- `reconcile_root(root, repair=)`: plandb's own reconcile, when it is available.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import apsw

from plandb.config import plan_id_from_filename
from plandb.maintenance.scan import database_files


def integrity_problems(root: Path) -> list[str]:
    """'<file>: <problem>' for every database file under `root` that is not healthy."""
    problems = []
    for f in database_files(Path(root)):
        try:
            conn = apsw.Connection(str(f.path), flags=apsw.SQLITE_OPEN_READWRITE)
        except apsw.Error as exc:
            problems.append(f"{f.rel}: does not open: {exc}")
            continue
        try:
            conn.set_busy_timeout(10_000)
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            if rows != ["ok"]:
                problems.append(f"{f.rel}: integrity_check: {rows[:5]}")
            fk = conn.execute("PRAGMA foreign_key_check").fetchall()
            if fk:
                problems.append(f"{f.rel}: foreign_key_check: {fk[:5]}")
        except apsw.Error as exc:
            problems.append(f"{f.rel}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()
    return problems


def _ro(path: Path) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro"
    con = sqlite3.connect(uri, uri=True, timeout=10)
    con.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
    return con


def dump_file(path: Path) -> list[Any]:
    """Schema, user_version and every row of every table, in a stable order."""
    con = _ro(path)
    try:
        out: list[Any] = [("user_version", con.execute("PRAGMA user_version").fetchone()[0])]
        out.append(("schema", con.execute(
            "SELECT type, name, sql FROM sqlite_schema ORDER BY type, name").fetchall()))
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
        for t in tables:
            if t.endswith(("_data", "_idx", "_docsize", "_config", "_content")) and \
                    t.rsplit("_", 1)[0] in tables:
                continue  # FTS shadow tables mirror their table; its rows are compared
            qt = '"' + t.replace('"', '""') + '"'  # names from sqlite_schema, not from input
            rows = con.execute(f"SELECT * FROM {qt}").fetchall()
            out.append((t, sorted(rows, key=repr)))
        return out
    finally:
        con.close()


def dump_root(root: Path) -> dict[str, Any]:
    """{relative path: dump} of every database file under `root`, plus the file list."""
    root = Path(root)
    return {f.rel: dump_file(f.path) for f in database_files(root)}


def registry_problems(root: Path) -> list[str]:
    """Disagreements between main/plan_registry.db and plans/ (read-only)."""
    root = Path(root)
    problems: list[str] = []
    reg = root / "main" / "plan_registry.db"
    files = {}
    for p in (root / "plans").glob("plan_*.sqlite"):
        pid = plan_id_from_filename(p.name)
        if pid is not None:
            files[pid] = p
    rows: dict[int, tuple[str, str]] = {}
    if reg.exists():
        con = _ro(reg)
        try:
            for pid, state, plan_file in con.execute("SELECT id, state, plan_file FROM plans"):
                rows[pid] = (state, plan_file)
        finally:
            con.close()
    for pid, (state, plan_file) in sorted(rows.items()):
        if state != "ready":
            problems.append(f"registry row {pid} is in state {state!r}")
        if pid not in files:
            problems.append(f"registry row {pid} has no file ({plan_file})")
        elif plan_file != f"plans/{files[pid].name}":
            problems.append(f"registry row {pid} points at {plan_file!r}")
    for pid in sorted(set(files) - set(rows)):
        problems.append(f"plans/{files[pid].name} has no registry row")
    temp = root / "temp"
    if temp.is_dir():
        left = sorted(p.name for p in temp.iterdir() if p.name.startswith("plan_"))
        if left:
            problems.append(f"temp/ still holds {left[:5]}")
    return problems


def reconcile_available() -> bool:
    try:
        from plandb.maintenance.reconcile import reconcile  # noqa: F401
    except ImportError:
        return False
    return True


def reconcile_root(root: Path, *, repair: bool) -> list[str] | None:
    """Run plandb's reconcile on `root`; the problems it reported (None: not available)."""
    try:
        from plandb.maintenance.reconcile import reconcile
    except ImportError:
        return None
    from plandb import PlanRepository

    with PlanRepository(root) as repo:
        report = reconcile(repo, repair=repair)
    return [f"{getattr(p, 'kind', '?')}: {getattr(p, 'detail', p)}"
            for p in getattr(report, "problems", [])]


def plandb_command() -> list[str]:
    """How to run the installed `plandb` command of this interpreter's environment."""
    exe = Path(sys.executable).with_name("plandb")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "plandb"]


def doctor_problems(root: Path, *, repair: bool = False) -> list[str]:
    """`plandb doctor --json [--repair]` through the real command: its remaining problems."""
    cmd = [*plandb_command(), "--db-root", str(root), "doctor", "--json"]
    if repair:
        cmd.append("--repair")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if "Traceback" in proc.stderr:
        return [f"plandb doctor crashed: {proc.stderr[-2000:]}"]
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return [f"plandb doctor printed no JSON (exit {proc.returncode}): {proc.stderr[-500:]}"]
    out = [f"doctor: {p['kind']}: {p.get('path')}: {p['detail']}"
           for p in data.get("problems", []) if not p.get("repaired")]
    if proc.returncode != 0 and not out:
        out.append(f"plandb doctor exited {proc.returncode}: {data}")
    return out


def subtree(parent_of: dict[Any, Any], top: Any) -> list[Any]:
    """`top` and its descendants in a model tree given as {node: parent or None}.

    A value may also be an ``(id, parent)`` tuple (the kill driver's model)."""
    kids: dict[Any, list[Any]] = {}
    for node, value in parent_of.items():
        parent = value[1] if isinstance(value, tuple) else value
        kids.setdefault(parent, []).append(node)
    out, stack = [], [top]
    while stack:
        x = stack.pop()
        out.append(x)
        stack.extend(kids.get(x, ()))
    return out
