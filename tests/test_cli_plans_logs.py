"""`plandb plans list|show` and `plandb logs` (with --follow) on real roots."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import PLANDB_BIN, cli, cli_json, fingerprint, make_plan

from plandb.repository import PlanRepository

SECRET = "sk-proj-" + "A1b2C3d4E5" * 4


@pytest.fixture
def root(db_root: Path) -> Path:
    with PlanRepository(db_root) as repo:
        make_plan(repo, "alpha", tasks=3)
        make_plan(repo, "beta", tasks=2)
        repo.create_plan("gamma", owner="bo")
    return db_root


def _has_logs_api() -> bool:
    return hasattr(PlanRepository, "append_action_log") and hasattr(
        PlanRepository, "record_decomposition_job")


needs_logs = pytest.mark.skipif(not _has_logs_api(), reason="jobs/action-log API not present")


# --- plans -----------------------------------------------------------------------------------


def test_plans_list_json_and_filters(root: Path):
    out = cli_json(root, "plans", "list")
    assert set(out) == {"ok", "plans"}
    assert [p["title"] for p in out["plans"]] == ["gamma", "beta", "alpha"]  # newest first
    assert set(out["plans"][0]) == {"id", "title", "description", "metadata", "task_count",
                                    "updated_at", "created_at", "owner", "state"}
    assert {p["title"]: p["task_count"] for p in out["plans"]} == {
        "alpha": 3, "beta": 2, "gamma": 0}
    assert [p["title"] for p in cli_json(root, "plans", "list", "--owner", "bo")["plans"]] == [
        "gamma"]
    assert len(cli_json(root, "plans", "list", "--limit", "1", "--offset", "1")["plans"]) == 1


def test_plans_list_text_and_empty_root(root: Path, tmp_path: Path):
    text = cli(root, "plans", "list").stdout
    assert text.splitlines()[0].split() == ["ID", "TITLE", "OWNER", "TASKS", "UPDATED"]
    assert "alpha" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(empty, "plans", "list").stdout.strip() == "No plans."
    assert list(empty.iterdir()) == []  # listing created nothing


def test_plans_show_outline_and_json(root: Path):
    text = cli(root, "plans", "show", "1").stdout
    lines = text.splitlines()
    assert lines[0] == "Plan #1: alpha"
    assert lines[1] == "- [pending] alpha root (#1)"
    assert lines[2] == "  - [done] step 0 (#2)"
    assert lines[3] == "  - [pending] step 1 (#3)"
    assert "(3 tasks)" in text
    tree = cli_json(root, "plans", "show", "1")
    assert set(tree) == {"id", "title", "description", "metadata", "nodes"}
    assert [(n["name"], n["status"], n["depth"]) for n in tree["nodes"]] == [
        ("alpha root", "pending", 0), ("step 0", "done", 1), ("step 1", "pending", 1)]
    short = cli(root, "plans", "show", "1", "--max-depth", "1").stdout
    assert "step 0" not in short and "2 more tasks not shown" in short


def test_plans_show_unknown_plan(root: Path):
    result = cli(root, "plans", "show", "99", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["code"] == "plan_not_found"


# --- logs ------------------------------------------------------------------------------------


def _log(repo, plan_id, job, i, **kw):
    return repo.append_action_log(plan_id=plan_id, job_id=job, action_kind="tool",
                                  action_name=f"step{i}", status="done", success=i % 2 == 0,
                                  message=f"message {i}", **kw)


@pytest.fixture
def logged(root: Path) -> Path:
    if not _has_logs_api():
        pytest.skip("jobs/action-log API not present")
    with PlanRepository(root) as repo:
        repo.record_decomposition_job(1, job_id="job-a", job_type="plan_decompose",
                                      mode="full", target_task_id=1, status="running")
        repo.append_decomposition_job_log(1, job_id="job-a", timestamp="2026-01-01T00:00:00Z",
                                          level="info", message="started")
        for i in range(5):
            _log(repo, 1, "job-a", i, parameters={"api_key": SECRET, "n": i})
        _log(repo, 1, "job-b", 99)
        _log(repo, None, "sys-job", 7, details={"note": f"token {SECRET}"})
    return root


@needs_logs
def test_logs_json_shape_and_redaction(logged: Path):
    out = cli_json(logged, "logs", "--plan", "1")
    assert set(out) == {"ok", "plan_id", "job_id", "job", "job_logs", "action_logs"}
    assert out["plan_id"] == 1 and out["job"] is None and out["job_logs"] == []
    assert [e["action_name"] for e in out["action_logs"]] == [
        "step0", "step1", "step2", "step3", "step4", "step99"]
    assert SECRET not in json.dumps(out)  # stored redacted, shown as stored
    assert out["action_logs"][0]["parameters"]["n"] == 0


@needs_logs
def test_logs_of_one_job_with_its_job_log(logged: Path):
    out = cli_json(logged, "logs", "--plan", "1", "--job", "job-a", "--limit", "2")
    assert out["job"]["job_id"] == "job-a" and out["job"]["status"] == "running"
    assert [x["message"] for x in out["job_logs"]] == ["started"]
    assert [e["sequence"] for e in out["action_logs"]] == [4, 5]  # the newest two, in order
    text = cli(logged, "logs", "--plan", "1", "--job", "job-a").stdout
    assert text.startswith("job job-a (plan_decompose, running)")
    assert "tool/step3" in text and SECRET not in text


@needs_logs
def test_logs_system(logged: Path, tmp_path: Path):
    out = cli_json(logged, "logs", "--system")
    assert [e["job_id"] for e in out["action_logs"]] == ["sys-job"]
    assert SECRET not in json.dumps(out)
    fresh = tmp_path / "fresh"
    with PlanRepository(fresh):
        pass
    before = fingerprint(fresh)
    assert cli(fresh, "logs", "--system").stdout.strip() == "No log entries."
    assert fingerprint(fresh) == before  # no system jobs file was created


@needs_logs
def test_logs_follow_bounded_in_process(logged: Path):
    result = cli(logged, "logs", "--plan", "1", "--job", "job-b", "--follow", "--json",
                 "--interval", "0.05", "--follow-seconds", "0.2")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [(x["type"], x["entry"]["action_name"]) for x in lines] == [("action_log", "step99")]


FOLLOW_WRITER = """
import sys, time
from plandb.repository import PlanRepository
with PlanRepository(sys.argv[1]) as repo:
    for i in range(100, 106):
        repo.append_action_log(plan_id=1, job_id="job-f", action_kind="tool",
                               action_name=f"live{i}", status="done", success=True)
        time.sleep(0.05)
"""


@needs_logs
def test_logs_follow_sees_another_process_append(logged: Path):
    """A real `plandb logs --follow` process prints entries a second process appends."""
    follower = subprocess.Popen(
        [str(PLANDB_BIN), "--db-root", str(logged), "logs", "--plan", "1", "--job", "job-f",
         "--follow", "--json", "--interval", "0.05", "--follow-seconds", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # it is polling by now (no entries yet)
        subprocess.run([sys.executable, "-c", FOLLOW_WRITER, str(logged)], check=True,
                       timeout=60)
        names = []
        while len(names) < 6:
            line = follower.stdout.readline()
            assert line, follower.stderr.read()
            names.append(json.loads(line)["entry"]["action_name"])
        assert names == [f"live{i}" for i in range(100, 106)]
        follower.send_signal(signal.SIGINT)  # Ctrl-C ends a follow cleanly
        assert follower.wait(timeout=60) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(timeout=60)


def test_logs_needs_plan_or_system(root: Path):
    assert cli(root, "logs").exit_code == 2
    assert cli(root, "logs", "--plan", "1", "--system").exit_code == 2
