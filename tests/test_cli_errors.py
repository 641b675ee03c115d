"""The CLI's error contract: one JSON error shape, `Error:` + hint on stderr, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import cli, make_plan, make_too_new, run_plandb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plandb.repository import PlanRepository

ERROR_KEYS = {"ok", "error", "code"}


@pytest.fixture
def root(db_root: Path) -> Path:
    with PlanRepository(db_root) as repo:
        make_plan(repo, "alpha")
    return db_root


def _json_error(root: Path | None, *args: str, code: str) -> dict:
    result = cli(root, *args, "--json")
    assert result.exit_code == 1, result.output
    err = json.loads(result.stdout)
    assert set(err) == ERROR_KEYS, err  # pinned: scripts rely on exactly this shape
    assert err["ok"] is False and err["code"] == code and err["error"]
    assert result.stderr == ""
    return err


def test_json_error_shape_plan_not_found(root: Path):
    err = _json_error(root, "plans", "show", "424242", code="plan_not_found")
    assert "424242" in err["error"]


def test_json_error_shape_root_not_found(tmp_path: Path):
    _json_error(tmp_path / "absent", "plans", "list", code="root_not_found")
    assert not (tmp_path / "absent").exists()


def test_json_error_shape_schema_too_new(root: Path):
    make_too_new(root / "plans" / "plan_1.sqlite")
    err = _json_error(root, "plans", "show", "1", code="schema_too_new")
    assert "Upgrade plandb" in err["error"]


def test_json_error_shape_backup_error(root: Path, tmp_path: Path):
    dest = tmp_path / "bk"
    assert cli(root, "backup", str(dest)).exit_code == 0
    _json_error(root, "restore", str(dest), code="backup_error")


def test_human_error_goes_to_stderr_with_a_hint(root: Path):
    result = cli(root, "plans", "show", "424242")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Error: plan 424242 not found")
    assert lines[1].startswith("Hint: ") and "plandb plans list" in lines[1]


@pytest.mark.parametrize("args", [
    ("no-such-command",),
    ("plans", "show", "abc"),
    ("plans", "show", "0"),
    ("plans", "show"),
    ("plans", "list", "--limit", "-1"),
    ("inspect", "--check", "sometimes"),
    ("inspect", "--no-such-option"),
    ("inspect", "--json", "--no-such-option"),
    ("logs",),
    ("logs", "--plan", "1", "--system"),
])
def test_usage_errors_exit_2(root: Path, args: tuple[str, ...]):
    result = cli(root, *args)
    assert result.exit_code == 2, (args, result.output)
    assert "Usage:" in result.stderr or "Error:" in result.stderr


def test_errors_through_a_real_process(tmp_path: Path):
    proc = run_plandb("--db-root", str(tmp_path / "absent"), "inspect", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["code"] == "root_not_found"
    proc = run_plandb("--db-root", str(tmp_path / "absent"), "inspect")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("Error: DB_ROOT ") and "\nHint: " in proc.stderr
    proc = run_plandb("plans", "show", "not-a-number")
    assert proc.returncode == 2


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arg=st.text(max_size=40))
def test_any_plan_argument_gives_a_clean_exit(root: Path, arg: str):
    """Whatever is typed as an id, the command ends with 0, 1 or 2, never a traceback."""
    result = cli(root, "plans", "show", "--", arg)
    assert result.exit_code in (0, 1, 2), result.output
    result = cli(root, "logs", "--plan", "1", "--job", arg, "--json")
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code == 1:
        assert set(json.loads(result.stdout)) == ERROR_KEYS


def test_legacy_command_is_registered_when_present():
    import importlib.util

    from plandb.cli import main

    if importlib.util.find_spec("plandb.cli_legacy") is None:
        pytest.skip("plandb.cli_legacy is not there yet")
    from plandb.cli_legacy import migrate_legacy

    assert main.commands[migrate_legacy.name] is migrate_legacy


def test_read_commands_refuse_to_upgrade_an_older_file(root: Path):
    from cli_support import downgrade_registry, fingerprint

    downgrade_registry(root)
    before = fingerprint(root)
    for args in (("plans", "list"), ("logs", "--plan", "1")):
        err = _json_error(root, *args, code="schema_outdated")
        assert "plandb migrate" in err["error"]
    assert fingerprint(root) == before  # not upgraded, not backed up, nothing written
    assert cli(root, "migrate").exit_code == 0
    assert cli(root, "plans", "list").exit_code == 0
