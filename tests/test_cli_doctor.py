"""`plandb doctor [--repair]` on roots seeded with every kind of damage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import (
    cli,
    cli_json,
    fingerprint,
    integrity,
    kinds,
    make_plan,
    run_plandb,
    seed_problem_root,
)

from plandb.repository import PlanRepository

DOCTOR_KEYS = {"ok", "db_root", "repair", "files_checked", "problems", "counts", "reconcile", "job_index",
               "quarantine", "notes"}


def _plan_ids(root: Path) -> list[int]:
    return sorted(p["id"] for p in cli_json(root, "plans", "list")["plans"])


def test_doctor_finds_everything_and_writes_nothing(db_root: Path):
    expected = seed_problem_root(db_root)
    before = fingerprint(db_root)
    report = cli_json(db_root, "doctor", code=1)
    assert fingerprint(db_root) == before
    assert set(report) == DOCTOR_KEYS and report["repair"] is False and report["ok"] is False
    found = kinds(report)
    assert expected.pop("damaged") <= found.get("corrupt", set()) | found.get("check_failed",
                                                                            set())
    for kind, paths in expected.items():
        assert paths <= found.get(kind, set()), (kind, found)
    assert not any(p["repaired"] for p in report["problems"])
    assert report["counts"]["remaining"] == len(report["problems"])
    assert report["files_checked"] >= 9


def test_repair_fixes_what_it_can_and_never_deletes_data(db_root: Path):
    seed_problem_root(db_root)
    garbage = (db_root / "plans" / "plan_5.sqlite").read_bytes()
    truncated = (db_root / "plans" / "plan_6.sqlite").read_bytes()
    too_new = (db_root / "plans" / "plan_7.sqlite").read_bytes()
    report = cli_json(db_root, "doctor", "--repair", code=1)  # some things cannot be fixed
    by_kind = {}
    for p in report["problems"]:
        by_kind.setdefault(p["kind"], []).append(p)
    # Quarantined: moved with a note, bytes intact.
    qdir = Path(report["quarantine"])
    assert qdir.parent == (db_root / "backups" / "quarantine").resolve()
    assert (qdir / "plans" / "plan_5.sqlite").read_bytes() == garbage
    assert (qdir / "plans" / "plan_6.sqlite").read_bytes() == truncated
    note = json.loads((qdir / "plans" / "plan_5.sqlite.note.json").read_bytes())
    assert note["original_path"] == str((db_root / "plans" / "plan_5.sqlite").resolve())
    assert note["reason"].startswith("corrupt") and note["quarantined_at"].endswith("Z")
    assert not (db_root / "plans" / "plan_5.sqlite").exists()
    assert all(p["repaired"] for p in by_kind["corrupt"])
    # Left alone: the too-new file, byte for byte.
    assert (db_root / "plans" / "plan_7.sqlite").read_bytes() == too_new
    assert [p["repaired"] for p in by_kind["schema_too_new"]] == [False]
    # Reconcile: orphan registered, creating rows settled, deleting row finished.
    assert [p["repaired"] for p in by_kind["orphan_file"]] == [True]
    assert all(p["repaired"] for p in by_kind["creating_row"])
    assert all(p["repaired"] for p in by_kind["deleting_row"])
    ids = _plan_ids(db_root)
    assert {1, 2, 4, 8} <= set(ids) and 9 not in ids and 500 not in ids
    # What remains: rows whose file is gone (3, and the two quarantined) and the too-new file.
    again = cli_json(db_root, "doctor", code=1)
    remaining = kinds(again)
    assert remaining.pop("schema_too_new") == {"plans/plan_7.sqlite"}
    assert remaining.pop("missing_file") == {"plans/plan_3.sqlite", "plans/plan_5.sqlite",
                                             "plans/plan_6.sqlite"}
    assert remaining.pop("unreadable_file", {"plans/plan_7.sqlite"}) == {"plans/plan_7.sqlite"}
    assert remaining == {}
    for rel in ("main/plan_registry.db", "plans/plan_1.sqlite", "plans/plan_4.sqlite"):
        assert integrity(db_root / rel) == ["ok"]


def test_healthy_root_is_fine_with_and_without_repair(db_root: Path):
    with PlanRepository(db_root) as repo:
        make_plan(repo, "alpha")
    assert cli(db_root, "doctor").exit_code == 0
    report = cli_json(db_root, "doctor", "--repair")
    assert report["ok"] is True and report["problems"] == [] and report["quarantine"] is None
    assert not (db_root / "backups" / "quarantine").exists()
    text = cli(db_root, "doctor").stdout
    assert "No problems found." in text


def test_corrupt_registry_is_quarantined_and_rebuilt_from_the_plan_files(db_root: Path):
    with PlanRepository(db_root) as repo:
        for title in ("alpha", "beta", "gamma"):
            make_plan(repo, title)
    registry = db_root / "main" / "plan_registry.db"
    registry.write_bytes(os.urandom(20000))
    for suffix in ("-wal", "-shm"):
        Path(f"{registry}{suffix}").unlink(missing_ok=True)
    result = cli(db_root, "plans", "list", "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["code"] == "corrupt_database"
    report = cli_json(db_root, "doctor", "--repair")
    assert report["ok"] is True, report["problems"]
    assert sorted(p["title"] for p in cli_json(db_root, "plans", "list")["plans"]) == [
        "alpha", "beta", "gamma"]
    assert (Path(report["quarantine"]) / "main" / "plan_registry.db").exists()


CRASH_WRITER = """
import apsw, os, sys
c = apsw.Connection(sys.argv[1])
c.wal_autocheckpoint(0)
c.execute("PRAGMA journal_mode=WAL")
c.execute("UPDATE tasks SET status = 'done'")
os._exit(0)
"""


def test_repair_replays_a_wal_left_without_its_shm(db_root: Path):
    with PlanRepository(db_root) as repo:
        pid = make_plan(repo, "alpha", tasks=3)
    path = db_root / "plans" / f"plan_{pid}.sqlite"
    subprocess.run([sys.executable, "-c", CRASH_WRITER, str(path)], check=True, timeout=60)
    Path(f"{path}-shm").unlink()
    report = cli_json(db_root, "doctor", code=1)
    assert kinds(report) == {"needs_recovery": {f"plans/plan_{pid}.sqlite"}}
    report = cli_json(db_root, "doctor", "--repair")
    assert [p["action"] for p in report["problems"]] == ["recovered: the -wal was replayed"]
    tree = cli_json(db_root, "plans", "show", str(pid))
    assert {n["status"] for n in tree["nodes"]} == {"done"}  # the -wal's commit survived


@pytest.mark.parametrize("repair", [False, True])
def test_doctor_through_a_real_process(db_root: Path, repair: bool):
    with PlanRepository(db_root) as repo:
        make_plan(repo, "alpha")
    (db_root / "plans" / "plan_77.sqlite").write_bytes(b"not a database at all" * 100)
    args = ["--db-root", str(db_root), "doctor", "--json"] + (["--repair"] if repair else [])
    proc = run_plandb(*args)
    report = json.loads(proc.stdout)
    assert proc.returncode == (0 if repair else 1), proc.stderr
    assert report["ok"] is repair
    assert (db_root / "plans" / "plan_77.sqlite").exists() is (not repair)


def test_job_index_is_checked_and_repaired(db_root: Path):
    from cli_support import sql

    with PlanRepository(db_root) as repo:
        pid = make_plan(repo, "alpha")
        repo.record_decomposition_job(pid, job_id="job-1", job_type="plan_decompose",
                                      status="done")
        repo.record_decomposition_job(None, job_id="sys-1", job_type="plan_decompose",
                                      status="done")
    registry = db_root / "main" / "plan_registry.db"
    sql(registry, "DELETE FROM plan_decomposition_job_index WHERE job_id = 'job-1'")
    before = fingerprint(db_root)
    report = cli_json(db_root, "doctor", code=1)
    assert fingerprint(db_root) == before
    assert [(p["kind"], p["repaired"]) for p in report["problems"]] == [
        ("job_index_missing", False)]
    assert report["job_index"]["missing"] == ["job-1"]
    report = cli_json(db_root, "doctor", "--repair")
    assert [(p["kind"], p["repaired"]) for p in report["problems"]] == [
        ("job_index_missing", True)]
    assert cli_json(db_root, "doctor")["problems"] == []
    with PlanRepository(db_root) as repo:
        assert repo.find_job("job-1").plan_id == pid


def test_confirm_damage_rechecks_through_a_normal_connection(db_root: Path):
    """Quarantine needs a second opinion from a locking reader: healthy files pass it."""
    from plandb.maintenance.doctor import confirm_damage

    with PlanRepository(db_root) as repo:
        pid = make_plan(repo, "alpha")
    path = db_root / "plans" / f"plan_{pid}.sqlite"
    assert confirm_damage(path) is None
    garbage = db_root / "plans" / "plan_50.sqlite"
    garbage.write_bytes(os.urandom(9000))
    assert confirm_damage(garbage)


def test_an_empty_plan_file_is_reported_and_quarantined(db_root: Path):
    """A plan file truncated to 0 bytes would pass integrity_check (an empty database is
    valid SQLite); it is reported as lost data and moved aside, not treated as healthy."""
    with PlanRepository(db_root) as repo:
        pid = make_plan(repo, "alpha")
    path = db_root / "plans" / f"plan_{pid}.sqlite"
    path.write_bytes(b"")
    report = cli_json(db_root, "inspect", code=1)
    assert kinds(report) == {"empty_plan_file": {f"plans/plan_{pid}.sqlite"}}
    report = cli_json(db_root, "doctor", "--repair", code=1)
    found = {p["kind"]: p for p in report["problems"]}
    assert found["empty_plan_file"]["repaired"] is True
    assert (Path(report["quarantine"]) / "plans" / f"plan_{pid}.sqlite").exists()
    assert found["missing_file"]["repaired"] is False  # the row stays for a person to decide
