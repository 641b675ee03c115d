"""`plandb info`, root resolution, --help of every command, and the real entry points."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from cli_support import cli, cli_json, run_plandb

from plandb import schema
from plandb.cli import main


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


ALL_COMMANDS = [path for path, _cmd in _commands(main)]


def test_info_shape_and_nothing_created(tmp_path: Path):
    root = tmp_path / "not-yet"
    out = cli_json(root, "info")
    assert set(out) == {"ok", "db_root", "exists", "source", "folders", "files",
                        "max_open_files", "busy_timeout_ms", "background_checkpoints",
                        "schema_versions", "versions"}
    assert out["ok"] is True and out["exists"] is False and out["source"] == "option"
    assert out["db_root"] == str(root.resolve())
    assert out["folders"]["plans"] == str(root.resolve() / "plans")
    assert out["schema_versions"] == {k: schema.latest_version(k) for k in schema.KINDS}
    assert set(out["versions"]) == {"plandb", "sqlite", "apsw"}
    assert not root.exists()


def test_db_root_comes_from_env_when_no_option(tmp_path: Path):
    result = cli(None, "info", "--json", env={"DB_ROOT": str(tmp_path)})
    out = json.loads(result.stdout)
    assert out["db_root"] == str(tmp_path.resolve()) and out["source"] == "env"
    assert out["exists"] is True
    # The option wins over the environment.
    other = tmp_path / "other"
    result = cli(other, "info", "--json", env={"DB_ROOT": str(tmp_path)})
    assert json.loads(result.stdout)["db_root"] == str(other.resolve())


def test_db_root_default_is_platformdirs(monkeypatch: pytest.MonkeyPatch):
    from plandb.config import default_root

    result = cli(None, "info", "--json", env={"DB_ROOT": None})
    out = json.loads(result.stdout)
    assert out["source"] == "default" and out["db_root"] == str(default_root().resolve())


def test_info_text(tmp_path: Path):
    result = cli(tmp_path, "info")
    assert result.exit_code == 0
    assert f"DB_ROOT  {tmp_path.resolve()}" in result.stdout
    assert "schema versions:" in result.stdout


def test_the_expected_commands_exist():
    names = {" ".join(p) for p in ALL_COMMANDS}
    assert {"info", "inspect", "plans", "plans list", "plans show", "logs", "doctor",
            "migrate", "backup", "restore", "vacuum"} <= names


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]):
    result = cli(None, *path, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    cmd = main
    for name in path:
        cmd = cmd.commands[name]
    if not isinstance(cmd, click.Group):
        params = {p.name for p in cmd.params}
        if "as_json" in params:
            # Every command taking --json documents its JSON shape in its help.
            assert "JSON" in result.stdout, path


def test_group_help_lists_commands_and_exit_codes():
    out = cli(None, "--help").stdout
    for name in ("inspect", "doctor", "backup", "restore", "vacuum", "migrate", "plans"):
        assert name in out
    assert "2 usage error" in out


def test_python_dash_m_and_the_script_agree(tmp_path: Path):
    module = run_plandb("--db-root", str(tmp_path), "info", "--json", module=True)
    script = run_plandb("--db-root", str(tmp_path), "info", "--json")
    assert module.returncode == script.returncode == 0, (module.stderr, script.stderr)
    assert json.loads(module.stdout) == json.loads(script.stdout)
    assert run_plandb("--help", module=True).stdout.startswith("Usage: plandb ")


def test_version_option():
    result = cli(None, "--version")
    assert result.exit_code == 0 and "0." in result.stdout


def test_every_command_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## CLI", 1)[1].split("\n## ", 1)[0]
    for path in ALL_COMMANDS:
        if path[0] == "plans" and len(path) == 1:
            continue  # the group; its subcommands are listed
        if path[0] == "migrate-legacy" or "legacy" in path[0]:
            continue  # documented with the legacy import
        assert f"`plandb {' '.join(path)}" in section, path
    assert '{"ok": false, "error": ' in section and '"code": ' in section


def _json_block(cmd: click.Command) -> str:
    import inspect

    doc = inspect.cleandoc(cmd.help or "")
    return " ".join(doc[doc.index("JSON"):].replace("\b", "").split())


def test_readme_json_shapes_match_the_help():
    """README's "JSON shapes" are the --help texts: change one, change the other."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### JSON shapes", 1)[1].split("\n## ", 1)[0]
    flat = " ".join(section.split())
    for path, cmd in _commands(main):
        if isinstance(cmd, click.Group) or cmd.callback.__module__ != "plandb.cli":
            continue
        assert f"`plandb {' '.join(path)}`" in section, path
        assert _json_block(cmd) in flat, path
