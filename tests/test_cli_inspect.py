"""`plandb inspect`: what it reports on real roots, and that it never changes a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import apsw
import pytest
from cli_support import (
    cli,
    cli_json,
    fingerprint,
    kinds,
    make_plan,
    run_plandb,
    seed_problem_root,
)

from plandb import schema
from plandb.repository import PlanRepository

FILE_KEYS = {"path", "folder", "kind", "expected_kind", "plan_id", "schema_version",
             "latest_version", "schema_status", "legacy", "size_bytes", "wal_bytes",
             "modified_at", "tables", "rows", "check", "error"}


@pytest.fixture
def healthy_root(db_root: Path) -> Path:
    with PlanRepository(db_root) as repo:
        make_plan(repo, "alpha", tasks=3)
        make_plan(repo, "beta", tasks=5)
    return db_root


def test_healthy_root_shape_and_counts(healthy_root: Path):
    report = cli_json(healthy_root, "inspect")
    assert set(report) == {"ok", "db_root", "files", "folders", "totals", "problems"}
    assert report["ok"] is True and report["problems"] == []
    by_path = {f["path"]: f for f in report["files"]}
    assert {"main/plan_registry.db", "plans/plan_1.sqlite", "plans/plan_2.sqlite"} <= set(by_path)
    for f in report["files"]:
        assert set(f) == FILE_KEYS
        assert f["schema_status"] == "current"
        assert f["schema_version"] == schema.latest_version(f["kind"])
        assert f["check"] == "ok"
        assert f["size_bytes"] == (healthy_root / f["path"]).stat().st_size + f["wal_bytes"]
        assert f["rows"] == sum(v for v in f["tables"].values() if v)
    assert by_path["plans/plan_1.sqlite"]["tables"]["tasks"] == 3
    assert by_path["plans/plan_2.sqlite"]["tables"]["tasks"] == 5
    assert by_path["plans/plan_2.sqlite"]["plan_id"] == 2
    assert by_path["main/plan_registry.db"]["tables"]["plans"] == 2
    plans = report["folders"]["plans"]
    assert plans["files"] == 2
    assert plans["rows"] == by_path["plans/plan_1.sqlite"]["rows"] + by_path[
        "plans/plan_2.sqlite"]["rows"]
    assert report["totals"]["files"] == len(report["files"])
    assert report["totals"]["bytes"] == sum(f["size_bytes"] for f in report["files"])
    assert {"temp", "backups"} <= set(report["folders"])


def test_healthy_root_text(healthy_root: Path):
    result = cli(healthy_root, "inspect")
    assert result.exit_code == 0, result.output
    assert "plans/plan_2.sqlite" in result.stdout
    assert "No problems found." in result.stdout
    assert result.stderr == ""


def test_every_problem_kind_is_found(db_root: Path):
    expected = seed_problem_root(db_root)
    report = cli_json(db_root, "inspect", code=1)
    found = kinds(report)
    damaged = expected.pop("damaged")
    assert damaged <= found.get("corrupt", set()) | found.get("check_failed", set())
    for kind, paths in expected.items():
        assert paths <= found.get(kind, set()), (kind, found)
    too_new = next(f for f in report["files"] if f["path"] == "plans/plan_7.sqlite")
    assert too_new["schema_status"] == "too_new" and too_new["schema_version"] == 99
    garbage = next(f for f in report["files"] if f["path"] == "plans/plan_5.sqlite")
    assert garbage["check"] == "not_run" and garbage["error"]
    healthy = next(f for f in report["files"] if f["path"] == "plans/plan_1.sqlite")
    assert healthy["check"] == "ok"
    # The healthy plans raise nothing.
    assert not any(p["path"] in ("plans/plan_1.sqlite", "plans/plan_2.sqlite")
                   for p in report["problems"])


def test_inspect_changes_no_file(db_root: Path):
    seed_problem_root(db_root)
    before = fingerprint(db_root)
    for args in (("inspect",), ("inspect", "--json"), ("inspect", "--check", "integrity")):
        cli(db_root, *args)
    assert fingerprint(db_root) == before


LIVE_WRITER = """
import apsw, sys
c = apsw.Connection(sys.argv[1])
c.wal_autocheckpoint(0)
c.execute("PRAGMA journal_mode=WAL")
for i in range(7):
    c.execute("INSERT INTO snapshots (snapshot, note, created_at) VALUES ('{}', ?, 'x')", (i,))
print("ready", flush=True)
sys.stdin.readline()
c.close()
"""


def test_inspect_reads_a_live_wal_without_writing(healthy_root: Path):
    """Another process holds the file open with commits only in its -wal: inspect sees them
    and leaves the file, the -wal and the -shm byte-for-byte as they were."""
    path = healthy_root / "plans" / "plan_1.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        assert Path(f"{path}-wal").stat().st_size > 0
        before = fingerprint(healthy_root)
        report = cli_json(healthy_root, "inspect")
        assert fingerprint(healthy_root) == before
    finally:
        writer.communicate("done\n", timeout=60)
    entry = next(f for f in report["files"] if f["path"] == "plans/plan_1.sqlite")
    assert entry["tables"]["snapshots"] == 7
    assert entry["wal_bytes"] > 0


CRASH_WRITER = """
import apsw, os, sys
c = apsw.Connection(sys.argv[1])
c.wal_autocheckpoint(0)
c.execute("PRAGMA journal_mode=WAL")
for i in range(5):
    c.execute("INSERT INTO snapshots (snapshot, note, created_at) VALUES ('{}', 'crash', 'x')")
os._exit(0)  # no close: the -wal and -shm stay, as after a kill -9
"""


def _crash_write(path: Path) -> None:
    subprocess.run([sys.executable, "-c", CRASH_WRITER, str(path)], check=True, timeout=60)
    assert Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()


def test_inspect_after_a_crashed_writer_reads_its_wal(healthy_root: Path):
    path = healthy_root / "plans" / "plan_2.sqlite"
    _crash_write(path)
    before = fingerprint(healthy_root)
    report = cli_json(healthy_root, "inspect")
    assert fingerprint(healthy_root) == before
    entry = next(f for f in report["files"] if f["path"] == "plans/plan_2.sqlite")
    assert entry["tables"]["snapshots"] == 5 and entry["check"] == "ok"


def test_wal_without_shm_is_reported_not_written(healthy_root: Path):
    path = healthy_root / "plans" / "plan_2.sqlite"
    _crash_write(path)
    Path(f"{path}-shm").unlink()
    before = fingerprint(healthy_root)
    report = cli_json(healthy_root, "inspect", code=1)
    assert fingerprint(healthy_root) == before
    assert kinds(report) == {"needs_recovery": {"plans/plan_2.sqlite"}}


def test_check_none_skips_the_check(healthy_root: Path):
    report = cli_json(healthy_root, "inspect", "--check", "none")
    assert {f["check"] for f in report["files"]} == {"skipped"}


def test_stray_database_file_is_reported(healthy_root: Path):
    stray = healthy_root / "plans" / "notes.db"
    conn = apsw.Connection(str(stray))
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    report = cli_json(healthy_root, "inspect", code=1)
    assert kinds(report) == {"unexpected_file": {"plans/notes.db"}}
    entry = next(f for f in report["files"] if f["path"] == "plans/notes.db")
    assert entry["schema_status"] == "unknown" and entry["tables"] == {"t": 0}


def test_missing_root_is_an_error_and_is_not_created(tmp_path: Path):
    root = tmp_path / "nope"
    result = cli(root, "inspect", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["code"] == "root_not_found"
    assert not root.exists()


def test_many_files_collapse_in_text_but_not_in_json(db_root: Path):
    with PlanRepository(db_root) as repo:
        for i in range(45):
            repo.create_plan(f"p{i}")
    text = cli(db_root, "inspect").stdout
    assert "... 5 more files in plans/" in text
    assert "plans/plan_45.sqlite" in cli(db_root, "inspect", "--all").stdout
    assert len(cli_json(db_root, "inspect")["files"]) == 46


def test_inspect_through_the_installed_entry_point(healthy_root: Path):
    before = fingerprint(healthy_root)
    proc = run_plandb("inspect", "--json", env={"DB_ROOT": str(healthy_root)})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["db_root"] == str(healthy_root.resolve())
    assert report["totals"]["files"] == 3
    assert proc.stderr == ""  # no progress bar when stdout is a pipe
    assert fingerprint(healthy_root) == before
    assert os.environ.get("DB_ROOT") != str(healthy_root)


def _on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the real command with stdout and stderr on a pseudo-terminal; (status, output)."""
    from cli_support import PLANDB_BIN, on_a_terminal

    return on_a_terminal([str(PLANDB_BIN), *args])


def test_progress_bar_only_on_a_terminal_and_never_with_json(db_root: Path):
    with PlanRepository(db_root) as repo:
        for i in range(30):
            repo.create_plan(f"p{i}")
    code, out = _on_a_terminal("--db-root", str(db_root), "inspect")
    assert code == 0 and "inspecting" in out
    code, out = _on_a_terminal("--db-root", str(db_root), "inspect", "--json")
    assert code == 0 and "inspecting" not in out
    assert json.loads(out)["totals"]["files"] == 31
    proc = run_plandb("--db-root", str(db_root), "inspect")  # stdout is a pipe: no bar
    assert proc.returncode == 0 and "inspecting" not in proc.stdout + proc.stderr
