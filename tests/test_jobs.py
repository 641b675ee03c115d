"""Decomposition jobs and job logs: routing (plan file / system jobs file), upserts, status
updates, the registry's job index (lookup by id alone, conflicts, crash repair), typed errors."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import apsw
import pytest

from plandb import InvalidId, InvalidInput, PlanNotFound, RecordNotFound
from plandb.errors import RecordConflict


@pytest.fixture
def plan(repo):
    return repo.create_plan("Jobs")


def _rows(path: Path, sql: str) -> list:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_record_load_round_trip_with_logs(repo, plan):
    job = repo.record_decomposition_job(
        plan.id, job_id="job-1", job_type="plan_decompose", mode="full_tree",
        target_task_id=7, status="queued", params={"depth": 2, "name": "B€rkeley"},
        metadata={"owner": "ana"})
    assert (job.plan_id, job.job_type, job.mode, job.target_task_id, job.status) == (
        plan.id, "plan_decompose", "full_tree", 7, "queued")
    assert job.params == {"depth": 2, "name": "B€rkeley"} and job.metadata == {"owner": "ana"}
    logs = [repo.append_decomposition_job_log(plan.id, job_id="job-1", level=lvl,
                                              message=f"step {i}", metadata={"i": i},
                                              timestamp=f"2026-01-01T00:00:0{i}Z")
            for i, lvl in enumerate(["info", "debug", "error"])]
    loaded = repo.load_decomposition_job(plan.id, "job-1")
    assert loaded.logs == logs
    assert [entry.message for entry in loaded.logs] == ["step 0", "step 1", "step 2"]
    assert loaded.logs[2].timestamp == "2026-01-01T00:00:02.000000Z"
    assert [entry.message for entry in
            repo.load_decomposition_job(plan.id, "job-1", log_limit=2).logs] == [
        "step 1", "step 2"]
    loaded.logs = []
    assert loaded == job
    assert job.to_dict()["params"]["depth"] == 2


def test_upsert_keeps_history_and_replaces_definition(repo, plan):
    first = repo.record_decomposition_job(plan.id, job_id="j", status="queued",
                                          params={"a": 1})
    repo.update_decomposition_job_status(plan.id, job_id="j", status="running",
                                         started_at=datetime(2026, 1, 1, tzinfo=UTC),
                                         stats={"tasks": 3})
    again = repo.record_decomposition_job(plan.id, job_id="j", job_type="plan_execute",
                                          status="queued", params={"a": 2})
    assert again.created_at == first.created_at
    assert again.started_at == "2026-01-01T00:00:00.000000Z"
    assert again.stats == {"tasks": 3}
    assert (again.job_type, again.status, again.params) == ("plan_execute", "queued",
                                                            {"a": 2})
    assert len(repo.list_decomposition_jobs(plan.id)) == 1
    assert repo.list_job_index(plan_id=plan.id)[0].job_type == "plan_execute"


def test_update_status_fields(repo, plan):
    repo.record_decomposition_job(plan.id, job_id="j")
    done = repo.update_decomposition_job_status(
        plan.id, job_id="j", status="failed", error="boom", started_at=1_767_225_600,
        finished_at="2026-01-01 00:05:00", result={"created": [1, 2]})
    assert (done.status, done.error, done.result) == ("failed", "boom", {"created": [1, 2]})
    assert done.started_at == "2026-01-01T00:00:00.000000Z"
    assert done.finished_at == "2026-01-01T00:05:00.000000Z"
    same = repo.update_decomposition_job_status(plan.id, job_id="j")
    assert same.status == "failed" and same.updated_at == done.updated_at


def test_system_jobs_live_in_their_own_file(repo, plan, config):
    repo.record_decomposition_job(None, job_id="sys-1", status="queued")
    repo.append_decomposition_job_log(None, job_id="sys-1", message="hello")
    assert _rows(config.system_jobs_db_path, "SELECT job_id FROM decomposition_jobs") == [
        ("sys-1",)]
    assert _rows(config.plan_db_path(plan.id), "SELECT job_id FROM decomposition_jobs") == []
    assert repo.load_decomposition_job(None, "sys-1").logs[0].message == "hello"
    assert repo.find_job("sys-1").plan_id is None
    with pytest.raises(RecordNotFound):
        repo.load_decomposition_job(plan.id, "sys-1")


def test_found_by_id_alone(repo, plan):
    other = repo.create_plan("Other")
    repo.record_decomposition_job(plan.id, job_id="p1-job")
    repo.record_decomposition_job(other.id, job_id="p2-job", job_type="plan_execute")
    repo.append_decomposition_job_log(other.id, job_id="p2-job", message="x")
    assert repo.find_job("p2-job").plan_id == other.id
    assert repo.find_job("p2-job").logs[0].message == "x"
    assert repo.load_decomposition_job(None, "p1-job").plan_id == plan.id
    entries = repo.list_job_index()
    assert {(e.job_id, e.plan_id) for e in entries} == {("p1-job", plan.id),
                                                        ("p2-job", other.id)}
    assert [e.job_id for e in repo.list_job_index(job_type="plan_execute")] == ["p2-job"]
    assert repo.list_job_index(system_only=True) == []


def test_list_jobs_filters_newest_first(repo, plan):
    for i in range(5):
        repo.record_decomposition_job(plan.id, job_id=f"j{i}",
                                      status="done" if i % 2 else "queued")
    assert [j.job_id for j in repo.list_decomposition_jobs(plan.id)] == [
        "j4", "j3", "j2", "j1", "j0"]
    assert [j.job_id for j in repo.list_decomposition_jobs(plan.id, status="done")] == [
        "j3", "j1"]
    assert [j.job_id for j in repo.list_decomposition_jobs(plan.id, limit=2, offset=1)] == [
        "j3", "j2"]
    assert repo.list_decomposition_jobs(None) == []


def test_typed_errors(repo, plan):
    repo.record_decomposition_job(plan.id, job_id="j")
    with pytest.raises(RecordNotFound):
        repo.update_decomposition_job_status(plan.id, job_id="nope", status="x")
    with pytest.raises(RecordNotFound):
        repo.append_decomposition_job_log(plan.id, job_id="nope", message="x")
    with pytest.raises(RecordNotFound):
        repo.load_decomposition_job(plan.id, "nope")
    with pytest.raises(RecordNotFound):
        repo.load_decomposition_job(None, "nope")
    with pytest.raises(RecordNotFound):
        repo.find_job("nope")
    with pytest.raises(RecordNotFound, match="plan"):  # says where the job really is
        repo.update_decomposition_job_status(None, job_id="j", status="x")
    with pytest.raises(PlanNotFound):
        repo.record_decomposition_job(plan.id + 50, job_id="k")
    with pytest.raises(PlanNotFound):
        repo.load_decomposition_job(plan.id + 50, "j")
    with pytest.raises(InvalidId):
        repo.record_decomposition_job(-1, job_id="k")
    with pytest.raises(InvalidId):
        repo.record_decomposition_job(plan.id, job_id=" ")
    with pytest.raises(InvalidId):
        repo.load_decomposition_job(plan.id, 5)
    with pytest.raises(InvalidInput):
        repo.record_decomposition_job(plan.id, job_id="k", metadata=["not", "a", "dict"])
    with pytest.raises(InvalidInput):
        repo.update_decomposition_job_status(plan.id, job_id="j", started_at="soon")
    assert [j.job_id for j in repo.list_decomposition_jobs(plan.id)] == ["j"]


def test_failed_update_changes_nothing(repo, plan):
    before = repo.record_decomposition_job(plan.id, job_id="j", status="queued")
    with pytest.raises(InvalidInput):
        repo.update_decomposition_job_status(plan.id, job_id="j", status="running",
                                             finished_at="not a time")
    after = repo.load_decomposition_job(plan.id, "j")
    after.logs = []
    assert after == before


def test_job_id_taken_by_another_plan_is_a_conflict(repo, plan):
    other = repo.create_plan("Other")
    repo.record_decomposition_job(plan.id, job_id="j")
    with pytest.raises(RecordConflict):
        repo.record_decomposition_job(other.id, job_id="j")
    with pytest.raises(RecordConflict):
        repo.record_decomposition_job(None, job_id="j")
    assert repo.list_decomposition_jobs(other.id) == []
    repo.delete_plan(plan.id)  # its jobs went with its file: the id is free again
    assert repo.list_job_index(plan_id=plan.id) == []
    assert repo.record_decomposition_job(other.id, job_id="j").plan_id == other.id


def test_index_entry_lost_in_a_crash_is_repaired(repo, plan, db_root):
    """SIGKILL after the job's file committed and before the index write: the job is kept,
    find_job(scan=True) and reindex_jobs() put the entry back."""
    env = dict(os.environ, PLANDB_CRASH_AT="job:file",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    code = ("import sys; from plandb import PlanRepository; "
            "PlanRepository(sys.argv[1]).record_decomposition_job("
            f"{plan.id}, job_id='crashed', status='queued')")
    proc = subprocess.run([sys.executable, "-c", code, str(db_root)], env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    assert repo.load_decomposition_job(plan.id, "crashed").status == "queued"
    with pytest.raises(RecordNotFound, match="scan=True"):
        repo.find_job("crashed")
    report = repo.reindex_jobs(repair=False)
    assert report.missing == ["crashed"] and not report.repaired and not report.clean
    assert repo.find_job("crashed", scan=True).plan_id == plan.id  # repairs on the way
    assert repo.find_job("crashed").plan_id == plan.id
    assert repo.reindex_jobs().clean


def test_reindex_reports_and_repairs(repo, plan, config):
    other = repo.create_plan("Other")
    repo.record_decomposition_job(plan.id, job_id="ok")
    repo.record_decomposition_job(plan.id, job_id="moved")
    repo.record_decomposition_job(None, job_id="gone")
    # Damage the registry's index and files directly, as a crash or an old tool might.
    conn = apsw.Connection(str(config.main_db_path))
    try:
        conn.execute("UPDATE plan_decomposition_job_index SET plan_id = ? WHERE job_id = "
                     "'moved'", (other.id,))
        conn.execute("INSERT INTO plan_decomposition_job_index VALUES "
                     "('ghost', NULL, 'plan_decompose', '2026-01-01T00:00:00.000000Z')")
    finally:
        conn.close()
    conn = apsw.Connection(str(config.system_jobs_db_path))
    try:
        conn.execute("DELETE FROM decomposition_jobs WHERE job_id = 'gone'")
    finally:
        conn.close()
    report = repo.reindex_jobs()
    assert report.wrong == ["moved"]
    assert sorted(report.stale) == ["ghost", "gone"]
    assert report.repaired and report.files_scanned == 3 and report.jobs_seen == 2
    assert repo.find_job("moved").plan_id == plan.id
    assert repo.reindex_jobs().clean


def test_index_failure_does_not_fail_the_acknowledged_write(repo, plan, config, caplog):
    """The job commits to its file first; if the registry cannot take the index entry, the
    call still succeeds and the entry is written later (here: on close)."""
    blocker = apsw.Connection(str(config.main_db_path))
    blocker.set_busy_timeout(0)
    repo.config.busy_timeout_ms = 50
    repo.pool.busy_timeout_ms = 50
    repo.pool.discard(config.main_db_path)
    repo.config.write_retries = 0
    try:
        blocker.execute("BEGIN IMMEDIATE")
        job = repo.record_decomposition_job(plan.id, job_id="late")
        assert job.job_id == "late"
        assert "job index not updated yet" in caplog.text
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()
    assert repo.load_decomposition_job(plan.id, "late").job_id == "late"
    repo.close()
    rows = _rows(config.main_db_path, "SELECT job_id, plan_id FROM plan_decomposition_job_index")
    assert rows == [("late", plan.id)]
