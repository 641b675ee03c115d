"""Versioned schemas: create, upgrade with data kept, refuse too new / wrong kind, dry run,
a failed upgrade leaves the file as it was, concurrent first opens."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import apsw
import pytest

from plandb import (
    CorruptDatabase,
    DatabaseConfig,
    PlanRepository,
    SchemaTooNew,
    WrongDatabaseKind,
)
from plandb import schema as sch
from plandb.errors import MigrationFailed


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump(path: Path) -> list:
    """Schema and rows of a file, read with the stdlib module (independent of plandb)."""
    con = sqlite3.connect(path)
    try:
        out = [("user_version", con.execute("PRAGMA user_version").fetchone()[0])]
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name")]
        out.append(("schema", con.execute(
            "SELECT type, name, sql FROM sqlite_schema ORDER BY name").fetchall()))
        for t in tables:
            out.append((t, con.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall()))
        return out
    finally:
        con.close()


@pytest.fixture
def extra_step(tmp_path, monkeypatch):
    """A copy of the real schemas/ with one more plan step, used through the real runner."""
    src = sch.schemas_dir()
    dst = tmp_path / "schemas"
    shutil.copytree(src, dst)

    def add(sql: str, name: str = "0002_extra.sql") -> Path:
        (dst / "plan" / name).write_text(sql)
        sch.steps.cache_clear()
        return dst

    monkeypatch.setattr(sch, "schemas_dir", lambda: dst)
    sch.steps.cache_clear()
    yield add
    sch.steps.cache_clear()


def test_every_kind_creates_fresh_with_kind_and_version(tmp_path):
    cfg = DatabaseConfig(tmp_path)
    with PlanRepository(cfg) as repo:
        plan_file = cfg.plan_db_path(repo.create_plan("p").id)
        for kind in sch.KINDS:
            # Plan files only come from create_plan (an empty plan file is lost data).
            path = plan_file if kind == "plan" else cfg.temp_db_path(f"fresh-{kind}")
            with repo._open(path, kind) as conn:
                state = sch.read_state(conn)
            assert state.kind == kind
            assert state.user_version == sch.latest_version(kind)
            assert state.meta_version == str(sch.latest_version(kind))


def test_pending_steps_is_read_only_and_creates_nothing(tmp_path):
    missing = tmp_path / "nope.sqlite"
    assert [s.version for s in sch.pending_steps(missing, "plan")] == list(
        range(1, sch.latest_version("plan") + 1))
    assert not missing.exists()
    with PlanRepository(tmp_path / "r") as repo:
        plan = repo.create_plan("p")
        path = repo.config.plan_db_path(plan.id)
    assert sch.pending_steps(path, "plan") == []


def test_upgrade_keeps_data_and_backs_up_first(tmp_path, extra_step):
    root = tmp_path / "root"
    with PlanRepository(root) as repo:
        plan = repo.create_plan("before upgrade")
        task = repo.create_task(plan.id, name="sentinel", metadata={"keep": "me"})
        path = repo.config.plan_db_path(plan.id)
    before = dump(path)
    extra_step("ALTER TABLE tasks ADD COLUMN estimate INTEGER NOT NULL DEFAULT 3;\n"
               "CREATE INDEX tasks_estimate ON tasks (estimate);")
    with PlanRepository(root) as repo:
        node = repo.get_node(plan.id, task.id)
        assert node.name == "sentinel" and node.metadata == {"keep": "me"}
        with repo._open(path, "plan") as conn:
            assert sch.read_state(conn).user_version == 2
            assert conn.execute("SELECT estimate FROM tasks").fetchall() == [(3,)]
    backups = list((root / "backups").glob(f"{path.name}.v1.*.bak"))
    assert len(backups) == 1
    assert dump(backups[0]) == before  # the backup is the file as it was


def test_failed_upgrade_leaves_the_file_exactly_as_it_was(tmp_path, extra_step):
    root = tmp_path / "root"
    with PlanRepository(root) as repo:
        plan = repo.create_plan("p")
        repo.create_task(plan.id, name="t")
        path = repo.config.plan_db_path(plan.id)
    before = dump(path)
    extra_step("CREATE TABLE half_done (x);\nINSERT INTO tasks (nonexistent) VALUES (1);")
    with PlanRepository(root) as repo, pytest.raises(MigrationFailed) as err:
        repo.get_plan_tree(plan.id)
    assert str(path) in str(err.value)
    assert dump(path) == before


def test_too_new_file_is_refused_untouched(tmp_path):
    root = tmp_path / "root"
    with PlanRepository(root) as repo:
        plan = repo.create_plan("p")
        path = repo.config.plan_db_path(plan.id)
    con = sqlite3.connect(path)
    con.execute("UPDATE plan_meta SET value = '99' WHERE key = 'schema_version'")
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    before = digest(path)
    with PlanRepository(root) as repo:
        with pytest.raises(SchemaTooNew) as err:
            repo.get_plan_tree(plan.id)
        assert err.value.found == 99 and "Upgrade plandb" in str(err.value)
        assert repo.list_plans()[0].id == plan.id  # the registry is unaffected
    assert digest(path) == before
    with pytest.raises(SchemaTooNew):
        sch.pending_steps(path, "plan")


def test_wrong_kind_is_refused_untouched(tmp_path):
    cfg = DatabaseConfig(tmp_path / "root")
    with PlanRepository(cfg) as repo:
        plan = repo.create_plan("p")
    # A registry file where a plan file should be.
    shutil.copyfile(cfg.main_db_path, cfg.plan_db_path(plan.id))
    before = digest(cfg.plan_db_path(plan.id))
    with PlanRepository(cfg) as repo, pytest.raises(WrongDatabaseKind) as err:
        repo.get_plan_tree(plan.id)
    assert err.value.found == "registry" and err.value.expected == "plan"
    assert digest(cfg.plan_db_path(plan.id)) == before


def test_foreign_database_is_refused_and_not_switched_to_wal(tmp_path):
    cfg = DatabaseConfig(tmp_path / "root")
    foreign = cfg.plan_db_path(5)
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    con.execute("INSERT INTO invoices VALUES (1, 9.5)")
    con.commit()
    con.close()
    before = digest(foreign)
    with PlanRepository(cfg) as repo, pytest.raises(WrongDatabaseKind) as err:
        repo.get_plan_tree(5)
    assert err.value.found is None
    assert digest(foreign) == before
    assert not Path(f"{foreign}-wal").exists()


def test_garbage_file_raises_corrupt_database_naming_the_file(tmp_path):
    cfg = DatabaseConfig(tmp_path / "root")
    bad = cfg.plan_db_path(3)
    bad.write_bytes(b"this is not sqlite" * 100)
    with PlanRepository(cfg) as repo, pytest.raises(CorruptDatabase) as err:
        repo.get_node(3, 1)
    assert str(bad) in str(err.value)
    assert bad.read_bytes() == b"this is not sqlite" * 100


CONCURRENT_OPEN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from plandb import PlanRepository
    root, go = sys.argv[1], Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.001)
    with PlanRepository(root) as repo:
        repo.list_plans()
        with repo._open(repo.config.system_jobs_db_path, "jobs") as conn:
            conn.execute("SELECT count(*) FROM plan_meta").fetchall()
    print("ok")
""")


def test_processes_opening_the_same_new_files_at_once_all_succeed(tmp_path):
    root = tmp_path / "root"
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_OPEN, str(root), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "ok"
    cfg = DatabaseConfig(root)
    for path, kind in ((cfg.main_db_path, "registry"), (cfg.system_jobs_db_path, "jobs")):
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA user_version").fetchone()[0] == sch.latest_version(kind)
        assert con.execute("SELECT value FROM plan_meta WHERE key='kind'").fetchall() == [(kind,)]
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()


def test_step_numbering_has_no_gaps_and_includes_resolve():
    for kind in sch.KINDS:
        steps = sch.steps(kind)
        assert [s.version for s in steps] == list(range(1, len(steps) + 1))
        assert all("@include" not in s.sql for s in steps)
        conn = apsw.Connection(":memory:")
        for s in steps:
            conn.execute(s.sql)  # every step is valid SQL on top of the previous ones
        conn.close()
