"""`--dry-run` changes nothing: every byte, mtime and mode of both legacy shapes stays as it
was, no side file appears, no DB_ROOT is created; and the plan it prints is the plan a real
run then carries out. Also: a -wal with no -shm (readable only by writing) is read from a
private scratch copy, in a dry run and in a real one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import legacy_fixtures as lf
import pytest

from plandb import DatabaseConfig, PlanRepository
from plandb.maintenance.legacy import migrate_existing_databases


@pytest.fixture
def legacy(legacy_template, tmp_path):
    shutil.copytree(legacy_template / "flat", tmp_path / "flat")
    shutil.copytree(legacy_template / "root", tmp_path / "root")
    return tmp_path


def plan_of(report) -> list[tuple[str, str]]:
    return [(s.action, s.target) for s in report.steps]


def test_dry_run_creates_no_root_and_touches_no_legacy_file(legacy):
    flat, new_root = legacy / "flat", legacy / "not-yet" / "db"
    before = lf.snapshot_files(legacy)
    report = migrate_existing_databases(new_root, legacy_dir=flat, dry_run=True)
    assert not (legacy / "not-yet").exists()
    assert lf.snapshot_files(legacy) == before
    assert report.dry_run and not report.changed and report.steps
    assert {s.status for s in report.steps} == {"planned"}
    imports = [s for s in report.steps if s.action == "import_plan"]
    assert [s.data["old_plan_id"] for s in imports] == [1, 2, 3, 4]  # the WAL-only plan too
    assert report.backups == [] and report.run_folder is None


def test_dry_run_on_an_old_root_changes_no_byte_and_matches_the_real_run(legacy):
    root, flat = legacy / "root", legacy / "flat"
    before = lf.snapshot_files(legacy)
    names_before = sorted(p.name for p in legacy.rglob("*"))
    dry = migrate_existing_databases(root, legacy_dir=flat, dry_run=True, redact=True)
    assert lf.snapshot_files(legacy) == before
    assert sorted(p.name for p in legacy.rglob("*")) == names_before  # no -shm, no lock file
    planned = plan_of(dry)
    assert ("redact", "jobs/system_jobs.sqlite") in planned
    assert ("quarantine", "plans/plan_5.sqlite") in planned
    assert {p.code for p in dry.problems} >= {"missing_plan_file", "orphan_plan_file",
                                              "unreadable_file", "unsafe_session_id"}
    real = migrate_existing_databases(root, legacy_dir=flat, redact=True)
    assert plan_of(real) == planned
    assert real.ok and all(s.status == "done" for s in real.steps)


def test_dry_run_after_a_migration_plans_nothing(legacy):
    root, flat = legacy / "root", legacy / "flat"
    migrate_existing_databases(root, legacy_dir=flat)
    before = lf.snapshot_files(root, flat)
    dry = migrate_existing_databases(root, legacy_dir=flat, dry_run=True)
    assert dry.nothing_to_do
    assert lf.snapshot_files(root, flat) == before


def test_wal_without_shm_is_read_from_a_scratch_copy(legacy):
    """tasks.db-shm gone (the old process died and something removed it): SQLite would have
    to write to read the -wal. Neither run creates a side file in the legacy directory, and
    the WAL-only rows still arrive."""
    flat, root = legacy / "flat", legacy / "fresh-root"
    os.unlink(flat / "tasks.db-shm")
    before = lf.snapshot_files(flat)
    dry = migrate_existing_databases(root, legacy_dir=flat, dry_run=True)
    assert [s.data["old_plan_id"] for s in dry.steps if s.action == "import_plan"] == [1, 2, 3, 4]
    assert lf.snapshot_files(flat) == before and not Path(f"{flat}/tasks.db-shm").exists()
    report = migrate_existing_databases(root, legacy_dir=flat)
    assert report.ok
    assert lf.snapshot_files(flat) == before and not Path(f"{flat}/tasks.db-shm").exists()
    with PlanRepository(DatabaseConfig(root, create=False)) as repo:
        titles = {s.title for s in repo.list_plans()}
    assert "WAL-only plan" in titles


def test_database_config_entry_point_is_the_same_migration(legacy):
    root, flat = legacy / "root", legacy / "flat"
    via_function = migrate_existing_databases(root, legacy_dir=flat, dry_run=True)
    via_config = DatabaseConfig(root, create=False).migrate_existing_databases(
        legacy_dir=flat, dry_run=True)
    assert plan_of(via_config) == plan_of(via_function) != []


def test_an_ordinary_plandb_root_has_nothing_to_migrate(tmp_path):
    """A root written by plandb itself, and a legacy directory with nothing in it: no step is
    planned and no byte of the root changes."""
    root, empty = tmp_path / "root", tmp_path / "empty"
    empty.mkdir()
    with PlanRepository(DatabaseConfig(root)) as repo:
        plan = repo.create_plan("normal plan", owner="x")
        first = repo.create_task(plan.id, name="a")
        repo.create_task(plan.id, name="b", dependencies=[first.id])
        repo.create_chat_session("s1", plan_id=plan.id)
        repo.append_chat_message("s1", role="user", content="hi")
        repo.add_memory("sess-1", content="remember this")
        repo.cache("llm").put("m", "q", "a")
    before = lf.snapshot_files(root)
    report = migrate_existing_databases(root, legacy_dir=empty)
    assert report.nothing_to_do and report.ok and report.problems == []
    assert lf.snapshot_files(root) == before
