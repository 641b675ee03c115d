"""DatabaseConfig: root resolution, layout, permissions, and the id -> file name mapping."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plandb import DatabaseConfig, InvalidId, PlanRepository
from plandb.config import FOLDERS, plan_id_from_filename, safe_name


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_root_from_argument_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv("DB_ROOT", str(tmp_path / "env"))
    assert DatabaseConfig(tmp_path / "arg").root == (tmp_path / "arg").resolve()
    assert DatabaseConfig().root == (tmp_path / "env").resolve()
    monkeypatch.delenv("DB_ROOT")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = DatabaseConfig(create=False).root
    assert root.name == "databases" and root.parent.name == "plandb"


def test_relative_and_home_paths_are_resolved_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = DatabaseConfig("rel/root")
    assert cfg.root == (tmp_path / "rel" / "root").resolve()
    monkeypatch.chdir("/")
    assert cfg.plan_db_path(1).is_relative_to(tmp_path)  # not re-resolved against the new cwd
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert DatabaseConfig("~/db").root == (tmp_path / "h" / "db").resolve()


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_folders_0700_and_files_0600_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        root = tmp_path / "root"
        with PlanRepository(root) as repo:
            plan = repo.create_plan("p")
            repo.create_task(plan.id, name="t")
            repo.list_plans()
            files = [repo.config.main_db_path, repo.config.plan_db_path(plan.id)]
            wal = Path(f"{files[1]}-wal")
            if wal.exists():
                files.append(wal)
            for f in files:
                assert mode(f) == 0o600, f
        for name in FOLDERS:
            assert mode(root / name) == 0o700, name
        assert mode(root) == 0o700
    finally:
        os.umask(old)


def test_paths_and_describe(tmp_path):
    cfg = DatabaseConfig(tmp_path)
    r = cfg.root
    assert cfg.main_db_path == r / "main" / "plan_registry.db"
    assert cfg.plan_db_path(7) == r / "plans" / "plan_7.sqlite"
    assert cfg.system_jobs_db_path == r / "jobs" / "system_jobs.sqlite"
    assert cfg.session_db_path("abc") == r / "sessions" / "session_abc.sqlite"
    assert cfg.cache_db_path("llm") == r / "cache" / "llm_cache.db"
    assert cfg.temp_db_path("x").parent == r / "temp"
    assert cfg.backup_path("registry", "20260101").parent == r / "backups"
    d = cfg.describe()
    assert d["db_root"] == str(r) and set(d["folders"]) == set(FOLDERS)


@pytest.mark.parametrize(
    "bad", [0, -1, 2**63, True, False, 1.0, "1", None, "../1", b"1", [1]]
)
def test_plan_ids_must_be_positive_integers(tmp_path, bad):
    cfg = DatabaseConfig(tmp_path)
    with pytest.raises(InvalidId):
        cfg.plan_db_path(bad)


def test_plan_file_names_round_trip():
    assert plan_id_from_filename("plan_42.sqlite") == 42
    for name in ("plan_042.sqlite", "plan_0.sqlite", "plan_-1.sqlite", "plan_1.sqlite-wal",
                 "plan_1.building", "xplan_1.sqlite", "plan_99999999999999999999.sqlite"):
        assert plan_id_from_filename(name) is None, name


@pytest.mark.parametrize(
    "value",
    ["../x", "a/b", "a b", "ünïcödé", "x" * 200, "", ".", "..", "a\\b", "a\x00b", "~abc",
     "/etc/passwd", "C:\\win", "a/../../b"],
)
def test_unsafe_ids_map_to_hashed_names_inside_the_folder(tmp_path, value):
    cfg = DatabaseConfig(tmp_path)
    path = cfg.session_db_path(value)
    assert path.parent == cfg.root / "sessions"
    assert path.resolve().parent == (cfg.root / "sessions").resolve()
    name = safe_name(value)
    assert name.startswith("~") and len(name) == 65
    assert "/" not in name and "\\" not in name and "\x00" not in name


def test_safe_ids_map_to_themselves_and_look_alikes_do_not_collide():
    assert safe_name("session-1_A") == "session-1_A"
    assert safe_name("a" * 64) == "a" * 64
    assert safe_name("a/b") != safe_name("a_b")
    assert safe_name("a" * 65) != "a" * 65
    with pytest.raises(InvalidId):
        safe_name(123)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_id_mapping_is_injective_stable_and_contained(a, b):
    na, nb = safe_name(a), safe_name(b)
    assert safe_name(a) == na  # stable
    if a != b:
        assert na != nb  # injective
    for n in (na, nb):
        assert "/" not in n and n not in ("", ".", "..") and "\x00" not in n
        assert len(n) <= 65


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab/._-~\\ "), max_size=12))
def test_look_alike_ids_never_share_a_file(value):
    root = Path("/nonexistent-root")
    mapped = root / "sessions" / f"session_{safe_name(value)}.sqlite"
    assert mapped.parent == root / "sessions"
    other = value.replace("/", "_")
    if other != value:
        assert safe_name(other) != safe_name(value)
