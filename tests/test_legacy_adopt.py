"""Adopting reference-era plan files of any shape: whatever subset of the old task columns a
file has, in whatever order, with timestamps in any of the old formats, every row arrives with
every value it had, copied by column name (hypothesis generates the shapes and the rows).
Also: quarantine moves a database with its side files as one set, even across a kill."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plandb import DatabaseConfig, PlanRepository
from plandb.maintenance.legacy import migrate_existing_databases
from plandb.maintenance.legacy_files import finish_quarantines, quarantine, read_json

OPTIONAL = {
    "status": "TEXT", "instruction": "TEXT", "position": "INTEGER", "path": "TEXT",
    "depth": "INTEGER", "metadata_json": "TEXT", "execution_result": "TEXT",
    "context_combined": "TEXT", "context_sections_json": "TEXT", "context_meta_json": "TEXT",
    "created_at": "TIMESTAMP", "updated_at": "TIMESTAMP",
}
STAMPS = {  # how the old code may have written 2024-05-06 07:08:09 UTC
    "sqlite": "2024-05-06 07:08:09", "iso": "2024-05-06T07:08:09", "isoz": "2024-05-06T07:08:09Z",
    "epoch": 1714979289, "frac": "2024-05-06 07:08:09.5",
}
STORED = {"sqlite": "2024-05-06T07:08:09.000000Z", "iso": "2024-05-06T07:08:09.000000Z",
          "isoz": "2024-05-06T07:08:09.000000Z", "epoch": "2024-05-06T07:08:09.000000Z",
          "frac": "2024-05-06T07:08:09.500000Z"}
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=20).filter(str.strip)


@st.composite
def legacy_plan(draw):
    columns = draw(st.sets(st.sampled_from(sorted(OPTIONAL))))
    order = draw(st.permutations(["id", "name", "parent_id", *sorted(columns)]))
    n = draw(st.integers(0, 7))
    stamp = draw(st.sampled_from(sorted(STAMPS)))
    rows = []
    for tid in range(1, n + 1):
        parent = draw(st.none() | st.integers(1, tid - 1)) if tid > 1 else None
        row = {"id": tid, "name": draw(text), "parent_id": parent}
        for c in columns:
            if c in ("created_at", "updated_at"):
                row[c] = STAMPS[stamp]
            elif c in ("position", "depth"):
                row[c] = draw(st.integers(0, 5))
            elif c.endswith("_json"):
                row[c] = draw(st.none() | st.just('{"k": 1}') | st.just("[1, 2]") | text)
            elif c == "path":
                row[c] = draw(st.none() | st.just("/x"))  # old paths may be anything
            else:
                row[c] = draw(st.none() | text)
        rows.append(row)
    deps = draw(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), max_size=6))
    deps = sorted({(a, b) for a, b in deps if a != b})
    version = draw(st.sampled_from([None, "1", "2"]))
    return order, rows, deps, version, stamp


def write_plan(path: Path, order, rows, deps, version) -> None:
    cols = ", ".join(f"{c} {'INTEGER PRIMARY KEY' if c == 'id' else OPTIONAL.get(c, 'TEXT')}"
                     for c in order)
    con = sqlite3.connect(path)
    try:
        con.execute("CREATE TABLE plan_meta (key TEXT PRIMARY KEY, value TEXT)")
        if version is not None:
            con.execute("INSERT INTO plan_meta VALUES ('schema_version', ?)", (version,))
        con.execute(f"CREATE TABLE tasks ({cols})")
        con.execute("CREATE TABLE task_dependencies (depends_on INTEGER, task_id INTEGER)")
        for row in rows:
            con.execute(f"INSERT INTO tasks ({', '.join(order)}) VALUES "
                        f"({', '.join('?' * len(order))})", [row[c] for c in order])
        con.executemany("INSERT INTO task_dependencies (task_id, depends_on) VALUES (?, ?)",
                        deps)
        con.commit()
    finally:
        con.close()


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(legacy_plan())
def test_any_old_task_table_is_adopted_with_every_row_and_value(case):
    order, rows, deps, version, stamp = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "plans").mkdir(parents=True)
        write_plan(root / "plans" / "plan_3.sqlite", order, rows, deps, version)
        report = migrate_existing_databases(root, legacy_dir=Path(tmp) / "no-flat-dir")
        assert report.ok, [(s.action, s.error) for s in report.steps]
        ids = {r["id"] for r in rows}
        dangling = [d for d in deps if d[0] not in ids or d[1] not in ids]
        assert [p.code for p in report.problems] == ["orphan_plan_file", "legacy_dir_missing"] \
            + (["dangling_dependency"] if dangling else [])
        with PlanRepository(DatabaseConfig(root, create=False)) as repo:
            tree = repo.get_plan_tree(3)  # the orphan is registered with its own id
            assert repo.get_plan_summary(3).task_count == len(rows)
        assert sorted(tree.nodes) == [r["id"] for r in rows]
        for row in rows:
            node = tree.nodes[row["id"]]
            assert node.name == row["name"] and node.parent_id == row["parent_id"]
            for col, attr in (("instruction", "instruction"), ("execution_result",
                              "execution_result"), ("context_combined", "context_combined")):
                if col in row:
                    assert getattr(node, attr) == row[col]
            if "status" in row:
                assert node.status == (row["status"] or "pending")
            if "metadata_json" in row and row["metadata_json"] == '{"k": 1}':
                assert node.metadata == {"k": 1}
            if "created_at" in row:
                assert node.created_at == STORED[stamp]
        kept = sorted((n.id, d) for n in tree.nodes.values() for d in n.dependencies)
        assert kept == [(a, b) for a, b in deps if a in ids and b in ids]


# --- quarantine ------------------------------------------------------------------------------


def _wal_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    Path(f"{path}-wal").write_bytes(b"wal frames")  # side files that must travel with it
    Path(f"{path}-shm").write_bytes(b"shm index")


def test_quarantine_moves_the_database_with_its_side_files(tmp_path):
    root = tmp_path / "root"
    db = root / "plans" / "plan_8.sqlite"
    db.parent.mkdir(parents=True)
    _wal_db(db)
    content = {p.name: p.read_bytes() for p in db.parent.iterdir()}
    qdir = quarantine(root, db, "plans/plan_8.sqlite", "test", move=True)
    assert list(db.parent.iterdir()) == []
    assert {p.name: p.read_bytes() for p in qdir.iterdir() if p.name != "note.json"} == content
    note = read_json(qdir / "note.json", None)
    assert note["state"] == "done" and note["reason"] == "test"
    assert oct(qdir.stat().st_mode & 0o777) == "0o700"


def test_an_interrupted_quarantine_is_finished_and_never_deletes_a_stranger(tmp_path):
    """Killed after the links and the note, before the unlinks: the next run removes only the
    originals that are the very files placed in quarantine."""
    root = tmp_path / "root"
    db = root / "plans" / "plan_8.sqlite"
    db.parent.mkdir(parents=True)
    _wal_db(db)
    qdir = root / "backups" / "quarantine" / "x-plans__plan_8.sqlite"
    qdir.mkdir(parents=True)
    files = []
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        os.link(p, qdir / p.name)
        files.append({"original": str(p), "copy": p.name})
    from plandb.maintenance.legacy_files import write_json_atomic

    write_json_atomic(qdir / "note.json", {"source": str(db), "files": files,
                                           "state": "moving"})
    os.unlink(f"{db}-shm")
    Path(f"{db}-shm").write_bytes(b"a new index of someone else")  # not ours: must stay
    assert finish_quarantines(root) == ["backups/quarantine/x-plans__plan_8.sqlite"]
    assert not db.exists() and not Path(f"{db}-wal").exists()
    assert Path(f"{db}-shm").read_bytes() == b"a new index of someone else"
    assert read_json(qdir / "note.json", None)["state"] == "done"
    assert finish_quarantines(root) == []
