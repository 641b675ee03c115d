"""`plandb backup`, `restore`, `vacuum` and `migrate` on real roots, with a real writer."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import (
    cli,
    cli_json,
    downgrade_registry,
    fingerprint,
    integrity,
    make_plan,
    run_plandb,
)

from plandb.repository import PlanRepository


@pytest.fixture
def root(db_root: Path) -> Path:
    with PlanRepository(db_root) as repo:
        make_plan(repo, "alpha", tasks=3)
        make_plan(repo, "beta", tasks=4)
    return db_root


def _tree_dump(root: Path) -> dict:
    with PlanRepository(root) as repo:
        return {p.id: repo.get_plan_tree(p.id).to_dict() for p in repo.list_plans()}


def test_backup_manifest_matches_the_files(root: Path, tmp_path: Path):
    dest = tmp_path / "bk"
    out = cli_json(root, "backup", str(dest))
    assert out["ok"] is True and out["dest"] == str(dest.resolve())
    m = json.loads((dest / "manifest.json").read_bytes())
    assert m == out["manifest"]
    assert m["format"] == "plandb-backup/1" and m["errors"] == []
    paths = {e["path"] for e in m["files"]}
    assert {"main/plan_registry.db", "plans/plan_1.sqlite", "plans/plan_2.sqlite"} <= paths
    for e in m["files"]:
        data = (dest / e["path"]).read_bytes()
        assert len(data) == e["bytes"]
        assert hashlib.sha256(data).hexdigest() == e["sha256"]
        assert e["kind"] in ("registry", "plan", "jobs", "session", "cache")
        assert isinstance(e["schema_version"], int)
        assert integrity(dest / e["path"]) == ["ok"]
        assert not Path(f"{dest / e['path']}-wal").exists()
        assert (dest / e["path"]).stat().st_mode & 0o777 == 0o600
    assert m["totals"] == {"files": len(m["files"]),
                           "bytes": sum(e["bytes"] for e in m["files"])}


def test_default_dest_is_under_backups_and_not_backed_up_again(root: Path):
    first = cli_json(root, "backup")
    assert Path(first["dest"]).parent == (root / "backups").resolve()
    assert Path(first["dest"]).name.startswith("full-")
    second = cli_json(root, "backup")
    assert second["dest"] != first["dest"]
    assert all(not e["path"].startswith("backups/") for e in second["manifest"]["files"])
    assert len(second["manifest"]["files"]) == len(first["manifest"]["files"])


def test_backup_refuses_a_dest_inside_the_data_folders_or_not_empty(root: Path, tmp_path: Path):
    result = cli(root, "backup", str(root / "plans" / "bk"), "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["code"] == "backup_error"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    result = cli(root, "backup", str(busy), "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["code"] == "backup_error"
    assert (busy / "something").read_text() == "x"


def test_restore_into_a_new_root_round_trips(root: Path, tmp_path: Path):
    dest = tmp_path / "bk"
    cli_json(root, "backup", str(dest))
    new_root = tmp_path / "restored"
    out = cli_json(new_root, "restore", str(dest))
    assert out["ok"] is True and out["moved_aside"] is None
    assert {f["check"] for f in out["files"]} == {"ok"}
    assert _tree_dump(new_root) == _tree_dump(root)
    assert (new_root / "plans").stat().st_mode & 0o777 == 0o700
    assert cli(new_root, "doctor").exit_code == 0


def test_restore_refuses_a_live_root_and_force_moves_it_aside(root: Path, tmp_path: Path):
    dest = tmp_path / "bk"
    cli_json(root, "backup", str(dest))
    with PlanRepository(root) as repo:  # the root moves on after the backup
        make_plan(repo, "gamma", tasks=2)
    before = fingerprint(root)
    result = cli(root, "restore", str(dest))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: DB_ROOT ") and "--force" in result.stderr
    assert fingerprint(root) == before  # refused: nothing touched
    out = cli_json(root, "restore", str(dest), "--force")
    aside = Path(out["moved_aside"])
    assert aside.parent == (root / "backups").resolve()
    assert (aside / "plans" / "plan_3.sqlite").exists()  # gamma kept, not deleted
    assert json.loads((aside / "MOVED.json").read_bytes())["restored_from"] == str(dest.resolve())
    assert sorted(_tree_dump(root)) == [1, 2]


def test_restore_verifies_checksums_first(root: Path, tmp_path: Path):
    dest = tmp_path / "bk"
    cli_json(root, "backup", str(dest))
    target = dest / "plans" / "plan_2.sqlite"
    data = bytearray(target.read_bytes())
    data[-100] ^= 0xFF
    target.write_bytes(bytes(data))
    new_root = tmp_path / "restored"
    result = cli(new_root, "restore", str(dest), "--json")
    assert result.exit_code == 1
    err = json.loads(result.stdout)
    assert err["code"] == "backup_error" and "plans/plan_2.sqlite" in err["error"]
    assert not (new_root / "plans" / "plan_1.sqlite").exists()


def test_restore_rejects_a_manifest_path_outside_the_layout(root: Path, tmp_path: Path):
    dest = tmp_path / "bk"
    cli_json(root, "backup", str(dest))
    m = json.loads((dest / "manifest.json").read_bytes())
    m["files"][0]["path"] = "../escape.db"
    (dest / "manifest.json").write_text(json.dumps(m))
    result = cli(tmp_path / "restored", "restore", str(dest), "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["code"] == "backup_error"
    assert not (tmp_path / "escape.db").exists()


WRITER = """
import sys
from plandb.repository import PlanRepository
root, plan_a, plan_b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with PlanRepository(root) as repo:
    i = 0
    while True:
        pid = plan_a if i % 2 == 0 else plan_b
        node = repo.create_task(pid, name=f"w{i}", instruction="z" * 500)
        print(pid, node.id, flush=True)  # acknowledged: create_task returned
        if i % 7 == 0:  # new plans too: the registry and the plan files move together
            print("plan", repo.create_plan(f"made {i}").id, flush=True)
        i += 1
"""


def test_backup_while_another_process_writes(root: Path, tmp_path: Path):
    """Every task the writer acknowledged before the backup began is in the restored copy,
    and every restored file passes integrity_check."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root), "1", "2"],
                              stdout=subprocess.PIPE, text=True)
    try:
        acked: dict[int, set[int]] = {1: set(), 2: set()}
        plans: set[int] = set()

        def read_ack() -> None:
            a, b = writer.stdout.readline().split()
            if a == "plan":
                plans.add(int(b))
            else:
                acked[int(a)].add(int(b))

        while sum(map(len, acked.values())) < 60:
            read_ack()
        plans_before = set(plans)
        acked_before = {pid: set(ids) for pid, ids in acked.items()}
        dest = tmp_path / "bk"
        proc = run_plandb("--db-root", str(root), "backup", str(dest), "--json")
        assert proc.returncode == 0, proc.stderr
        seen = sum(map(len, acked.values())) + len(plans)
        read_ack()  # the writer kept going during the backup
        assert sum(map(len, acked.values())) + len(plans) == seen + 1
    finally:
        writer.kill()
        writer.wait(timeout=60)
    new_root = tmp_path / "restored"
    cli_json(new_root, "restore", str(dest))
    for e in json.loads((dest / "manifest.json").read_bytes())["files"]:
        assert integrity(new_root / e["path"]) == ["ok"], e["path"]
    with PlanRepository(new_root) as repo:
        for plan_id, ids in acked_before.items():
            stored = set(repo.get_plan_tree(plan_id).nodes)
            assert ids <= stored, (plan_id, sorted(ids - stored))
            # A consistent snapshot: the writer's tasks are a prefix, with no gaps.
            assert stored == set(range(1, max(stored) + 1))
    # Plans created while the backup ran are at worst orphans, which repair registers.
    assert cli(new_root, "doctor", "--repair").exit_code == 0
    restored_plans = {p["id"] for p in cli_json(new_root, "plans", "list")["plans"]}
    assert plans_before <= restored_plans


def test_vacuum_shrinks_and_keeps_data(root: Path):
    with PlanRepository(root) as repo:
        pid = make_plan(repo, "big", tasks=200, padding=2000)
        tree = repo.get_plan_tree(pid)
        for node_id in tree.children[tree.roots[0]][1:]:
            repo.delete_task(pid, node_id)
    before = _tree_dump(root)
    out = cli_json(root, "vacuum")
    assert out["ok"] is True and out["problems"] == []
    big = next(f for f in out["files"] if f["path"] == f"plans/plan_{pid}.sqlite")
    assert big["bytes_after"] < big["bytes_before"]
    assert out["totals"]["bytes_after"] <= out["totals"]["bytes_before"]
    assert _tree_dump(root) == before
    for f in out["files"]:
        assert integrity(root / f["path"]) == ["ok"]


def test_migrate_dry_run_then_migrate(root: Path):
    downgrade_registry(root)
    before = fingerprint(root)
    dry = cli_json(root, "migrate", "--dry-run")
    assert fingerprint(root) == before  # a dry run writes nothing
    reg = next(f for f in dry["files"] if f["path"] == "main/plan_registry.db")
    assert reg["action"] == "pending" and reg["from_version"] == 1 and reg["steps"]
    assert dry["totals"]["pending"] == 1 and dry["totals"]["changed"] == 0
    done = cli_json(root, "migrate")
    reg = next(f for f in done["files"] if f["path"] == "main/plan_registry.db")
    assert reg["action"] == "upgrade" and reg["to_version"] >= 2
    assert reg["backup"] and (root / reg["backup"]).exists()
    assert {f["action"] for f in done["files"] if f["path"] != reg["path"]} == {"current"}
    again = cli_json(root, "migrate", "--dry-run")
    assert {f["action"] for f in again["files"]} == {"current"}


def test_migrate_leaves_a_too_new_file_alone(root: Path):
    from cli_support import make_too_new

    path = root / "plans" / "plan_2.sqlite"
    make_too_new(path)
    data = path.read_bytes()
    result = cli(root, "migrate", "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert [p["kind"] for p in out["problems"]] == ["schema_too_new"]
    assert path.read_bytes() == data


def test_backup_copies_the_rest_when_one_file_is_corrupt(root: Path, tmp_path: Path):
    bad = root / "plans" / "plan_9.sqlite"
    bad.write_bytes(b"garbage" * 1000)
    dest = tmp_path / "bk"
    result = cli(root, "backup", str(dest), "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert [e["path"] for e in out["manifest"]["errors"]] == ["plans/plan_9.sqlite"]
    assert out["manifest"]["errors"][0]["code"] == "corrupt_database"
    assert {"plans/plan_1.sqlite", "plans/plan_2.sqlite"} <= {
        e["path"] for e in out["manifest"]["files"]}
    assert not (dest / "plans" / "plan_9.sqlite").exists()
    assert bad.read_bytes() == b"garbage" * 1000
    # What was copied restores fine.
    assert cli(tmp_path / "restored", "restore", str(dest)).exit_code == 0


def test_vacuum_reports_a_corrupt_file_and_does_the_rest(root: Path):
    (root / "plans" / "plan_9.sqlite").write_bytes(b"garbage" * 1000)
    result = cli(root, "vacuum", "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert [p["path"] for p in out["problems"]] == ["plans/plan_9.sqlite"]
    assert {f["path"] for f in out["files"] if f["error"] is None} >= {
        "main/plan_registry.db", "plans/plan_1.sqlite", "plans/plan_2.sqlite"}
