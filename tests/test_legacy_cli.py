"""`plandb migrate-legacy` and scripts/migrate_existing_databases.py: the same options, the
same JSON report (shape pinned here), exit codes, the error shape, and a progress bar only on
a terminal."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import legacy_fixtures as lf
import pytest
from cli_support import on_a_terminal
from click.testing import CliRunner

from plandb.cli import main
from plandb.cli_legacy import migrate_legacy

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "migrate_existing_databases.py"
REPORT_KEYS = {"report_version", "ok", "changed", "nothing_to_do", "dry_run", "redact",
               "summary", "db_root", "legacy_dir", "started_at", "finished_at", "run_folder",
               "counts", "steps", "backups", "problems", "leftovers"}
STEP_KEYS = {"action", "target", "detail", "data", "status", "error"}
PROBLEM_KEYS = {"code", "path", "message", "data"}
BACKUP_KEYS = {"source", "copy", "bytes", "sha256", "reused"}
LEFTOVER_KEYS = {"source", "what", "name", "rows", "kept_in"}


@pytest.fixture
def legacy(legacy_template, tmp_path):
    shutil.copytree(legacy_template, tmp_path, dirs_exist_ok=True)
    return tmp_path


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_registered_on_the_plandb_group():
    assert main.commands["migrate-legacy"] is migrate_legacy
    out = run_cli("migrate-legacy", "--help").output
    for option in ("--db-root", "--legacy-dir", "--dry-run", "--json", "--redact"):
        assert option in out


def test_json_report_shape_and_exit_codes(legacy):
    root, flat = legacy / "root", legacy / "flat"
    dry = run_cli("migrate-legacy", "--db-root", str(root), "--legacy-dir", str(flat),
                  "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    doc = json.loads(dry.output)
    assert set(doc) == REPORT_KEYS
    assert doc["dry_run"] and not doc["changed"] and doc["report_version"] == 1
    assert all(set(s) == STEP_KEYS and s["status"] == "planned" for s in doc["steps"])
    assert all(set(p) == PROBLEM_KEYS for p in doc["problems"])
    assert all(set(x) == LEFTOVER_KEYS for x in doc["leftovers"])

    real = run_cli("--db-root", str(root), "migrate-legacy", "--legacy-dir", str(flat),
                   "--json")  # the group's --db-root works too
    assert real.exit_code == 0, real.output
    doc = json.loads(real.output)
    assert doc["ok"] and doc["changed"] and doc["run_folder"].startswith("backups/legacy/")
    assert all(set(b) == BACKUP_KEYS for b in doc["backups"]) and doc["backups"]
    assert [s["status"] for s in doc["steps"]] == ["done"] * len(doc["steps"])
    imports = [s for s in doc["steps"] if s["action"] == "import_plan"]
    assert all(isinstance(s["data"]["new_plan_id"], int) for s in imports)

    again = run_cli("migrate-legacy", "--db-root", str(root), "--legacy-dir", str(flat))
    assert again.exit_code == 0
    assert "nothing to do" in again.output


def test_the_script_is_the_same_command(legacy):
    root, flat = legacy / "root", legacy / "flat"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--db-root", str(root), "--legacy-dir",
                           str(flat), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == REPORT_KEYS and doc["ok"] and doc["changed"]
    assert proc.stderr == ""  # no progress bar when not on a terminal
    proc = subprocess.run([sys.executable, str(SCRIPT), "--db-root", str(root),
                           "--legacy-dir", str(flat)], capture_output=True, text=True,
                          timeout=120, cwd=flat)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout


def test_legacy_dir_defaults_to_the_current_directory(legacy):
    root, flat = legacy / "new-root", legacy / "flat"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--db-root", str(root), "--dry-run",
                           "--json"], capture_output=True, text=True, timeout=120, cwd=flat)
    doc = json.loads(proc.stdout)
    assert doc["legacy_dir"] == str(flat.resolve())
    assert any(s["action"] == "import_plan" for s in doc["steps"])
    assert not root.exists()


def test_a_concurrent_migration_is_refused_with_the_error_shape(legacy):
    root, flat = legacy / "root", legacy / "flat"
    folder = root / "backups" / "legacy"
    folder.mkdir(parents=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another migration holds the root
        res = run_cli("migrate-legacy", "--db-root", str(root), "--legacy-dir", str(flat),
                      "--json")
        assert res.exit_code == 1
        assert json.loads(res.output) == {
            "ok": False, "code": "lock_timeout",
            "error": json.loads(res.output)["error"]}
        text = run_cli("migrate-legacy", "--db-root", str(root), "--legacy-dir", str(flat))
        assert text.exit_code == 1 and "another legacy migration" in text.output
    finally:
        os.close(fd)
    assert lf.main_file_only(root / "plans" / "plan_9.sqlite", "SELECT count(*) FROM tasks") \
        == [(1,)]  # nothing was touched while refused


def test_a_failed_step_exits_1_leaves_its_file_and_the_next_run_retries_it(legacy):
    """Legacy data the current schema refuses (two action logs with the same job and sequence)
    fails that file's adoption: rolled back, reported, exit 1, and every other step still
    runs. Once the data is fixed, the next run finishes."""
    root, flat = legacy / "root", legacy / "flat"
    plan9 = root / "plans" / "plan_9.sqlite"
    con = sqlite3.connect(plan9)
    con.executemany("INSERT INTO plan_action_logs (job_id, sequence, action_name) "
                    "VALUES ('j', 1, ?)", [("first",), ("second",)])
    con.commit()
    con.close()
    before = lf.main_file_only(plan9, "SELECT id, name FROM tasks ORDER BY id")
    res = run_cli("migrate-legacy", "--db-root", str(root), "--legacy-dir", str(flat),
                  "--json")
    assert res.exit_code == 1
    doc = json.loads(res.output)
    assert not doc["ok"]
    by = {(s["action"], s["target"]): s for s in doc["steps"]}
    assert by[("adopt", "plans/plan_9.sqlite")]["status"] == "failed"
    assert "UNIQUE" in by[("adopt", "plans/plan_9.sqlite")]["error"]
    assert by[("fill_plan_meta", "plans/plan_9.sqlite")]["status"] == "skipped"
    assert by[("adopt", "plans/plan_1.sqlite")]["status"] == "done"
    assert all(s["status"] == "done" for s in doc["steps"] if s["action"] == "import_plan")
    con = sqlite3.connect(plan9)
    try:
        assert con.execute("SELECT id, name FROM tasks ORDER BY id").fetchall() == before
        assert con.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'plan_meta' ").\
            fetchone() == (1,)
        assert dict(con.execute("SELECT key, value FROM plan_meta")).get("kind") is None
        con.execute("DELETE FROM plan_action_logs WHERE action_name = 'second'")
        con.commit()
    finally:
        con.close()
    res = run_cli("migrate-legacy", "--db-root", str(root), "--legacy-dir", str(flat),
                  "--json")
    doc = json.loads(res.output)
    assert res.exit_code == 0 and doc["ok"]
    assert ("adopt", "plans/plan_9.sqlite") in {(s["action"], s["target"]) for s in doc["steps"]}


def test_progress_bar_only_on_a_terminal(legacy):
    root, flat = legacy / "root", legacy / "flat"
    status, out = on_a_terminal([sys.executable, str(SCRIPT), "--db-root", str(root),
                                 "--legacy-dir", str(flat)], timeout=120)
    assert status == 0
    assert "migrating" in out and "steps done" in out
