"""Migrating both legacy shapes into one DB_ROOT: every row arrives (sentinels compared, the
WAL-only rows included), ids are kept, every copy is named, every broken case is reported,
the legacy directory is never changed, and a second run changes nothing.

The legacy files are written by `legacy_fixtures` with the stdlib sqlite3 module; the migrated
root is read back both through plandb's public API and with the stdlib module.
"""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from pathlib import Path

import legacy_fixtures as lf
import pytest

from plandb import DatabaseConfig, PlanRepository
from plandb.maintenance.legacy import migrate_existing_databases


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """Both legacy shapes, migrated once into the older root (with --redact)."""
    base = tmp_path_factory.mktemp("legacy")
    flat, root = base / "flat", base / "root"
    expect_flat = lf.build_flat_dir(flat)
    expect_root = lf.build_old_root(root)
    flat_before = lf.snapshot_files(flat)
    report = migrate_existing_databases(root, legacy_dir=flat, redact=True)
    return {"root": root, "flat": flat, "report": report, "flat_expect": expect_flat,
            "root_expect": expect_root, "flat_before": flat_before}


@pytest.fixture
def repo(migrated):
    r = PlanRepository(DatabaseConfig(migrated["root"], create=False))
    try:
        yield r
    finally:
        r.close()


def imported(repo: PlanRepository) -> dict[int, object]:
    """old flat plan id -> the PlanTree it became."""
    out = {}
    for s in repo.list_plans():
        legacy = s.metadata.get("legacy") or {}
        if "old_plan_id" in legacy:
            assert legacy["old_plan_id"] not in out, "an old plan was imported twice"
            out[legacy["old_plan_id"]] = repo.get_plan_tree(s.id)
    return out


def problem_codes(report) -> dict[str, list]:
    out: dict[str, list] = {}
    for p in report.problems:
        out.setdefault(p.code, []).append(p)
    return out


# --- the run as a whole ----------------------------------------------------------------------


def test_the_run_completes_and_every_step_is_done(migrated):
    report = migrated["report"]
    failed = [(s.action, s.target, s.error) for s in report.steps if s.status != "done"]
    assert failed == []
    assert report.ok and report.changed and not report.dry_run
    assert (migrated["root"] / report.run_folder / "report.json").exists()


def test_the_legacy_directory_is_never_changed(migrated):
    """Bytes, mtimes and modes of every flat file (the -wal and -shm included) are as before."""
    assert lf.snapshot_files(migrated["flat"]) == migrated["flat_before"]


def test_every_legacy_file_has_a_named_consistent_backup(migrated):
    root, report = migrated["root"], migrated["report"]
    sources = {Path(b.source).resolve() for b in report.backups}
    flat = migrated["flat"].resolve()
    expected = {flat / n for n in ("tasks.db", "embedding_cache.db", "llm_cache.db",
                                   "statistics.db")}
    expected |= {(root / rel).resolve() for rel in (
        "main/plan_registry.db", "plans/plan_1.sqlite", "plans/plan_2.sqlite",
        "plans/plan_3.sqlite", "plans/plan_7.sqlite", "plans/plan_9.sqlite",
        "jobs/system_jobs.sqlite", "cache/embedding_cache.db", "cache/llm_cache.db",
        "sessions/session_abc123.sqlite", f"sessions/session_{lf.UNSAFE_SESSION}.sqlite",
        f"sessions/{lf.CONTENT_SESSION_FILE}")}
    assert expected <= sources
    for b in report.backups:
        copy = root / b.copy
        assert copy.is_file() and not Path(f"{copy}-wal").exists()  # one self-contained file
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == b.sha256
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        con = sqlite3.connect(copy)
        try:
            assert con.execute("PRAGMA quick_check").fetchone() == ("ok",)
        finally:
            con.close()


def test_backup_of_tasks_db_holds_the_wal_only_rows(migrated):
    """Precondition: the main file alone lacks them; the backup copy (and so the import) has."""
    flat = migrated["flat"]
    assert lf.main_file_only(flat / "tasks.db", "SELECT id FROM plans WHERE id = 4") == []
    copy = next(b.copy for b in migrated["report"].backups if b.source.endswith("tasks.db"))
    con = sqlite3.connect(migrated["root"] / copy)
    try:
        assert con.execute("SELECT title FROM plans WHERE id = 4").fetchone() == (
            "WAL-only plan",)
        assert con.execute("SELECT content FROM task_outputs WHERE task_id = 5").fetchone() == (
            "frontend output sentinel-wal-output",)
    finally:
        con.close()


def test_every_file_is_private(migrated):
    root = migrated["root"]
    for p in root.rglob("*"):
        mode = stat.S_IMODE(p.stat().st_mode)
        if p.is_dir():
            assert mode == 0o700, p
        else:
            assert mode == 0o600, p


# --- the flat directory ----------------------------------------------------------------------


def test_every_old_plan_becomes_a_plan_with_a_new_id(migrated, repo):
    plans = imported(repo)
    assert sorted(plans) == [p[0] for p in migrated["flat_expect"]["plans"]]
    taken = {1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 40}  # old rows, files, its sequence
    for old_id, row in zip(sorted(plans), migrated["flat_expect"]["plans"], strict=True):
        tree = plans[old_id]
        assert tree.id > lf.CORRUPT_ORPHAN_ID  # ids are reserved before anything is imported
        assert tree.id not in taken
        assert tree.title == row[1] and tree.description == row[2]
        legacy = tree.metadata["legacy"]
        assert legacy["source_file"] == "tasks.db" and legacy["import_state"] == "imported"
        assert legacy["status"] == row[3]
        assert legacy["created_at"] == lf.TS.replace(" ", "T") + ".000000Z" or \
            legacy["created_at"] == lf.TS2.replace(" ", "T") + ".000000Z"
    assert plans[1].metadata["legacy"]["config"] == {"model": "gpt-4"}
    assert plans[3].metadata["legacy"]["config"] == "not json"  # kept as text, not lost


def test_every_task_arrives_as_a_tree_with_its_fields(migrated, repo):
    plans = imported(repo)
    expected = {t[0]: t for t in migrated["flat_expect"]["tasks"]}
    members = {}
    for pid, tid, cat, order in lf.FLAT_PLAN_TASKS + lf.FLAT_WAL_PLAN_TASKS:
        members.setdefault(pid, {})[tid] = (cat, order)
    for old_id, tree in plans.items():
        assert set(tree.nodes) == set(members.get(old_id, {}))
        for tid, node in tree.nodes.items():
            old = expected[tid]
            assert node.name == (old[1] or f"Task {tid}")
            assert node.status == (old[2] or "pending")
            assert node.parent_id == old[4]
            legacy = node.metadata["legacy"]
            assert legacy["task_id"] == tid and legacy.get("priority") == old[3]
            assert legacy.get("task_category") == members[old_id][tid][0]
            assert legacy.get("path") == old[5]
    launch = plans[1]
    assert launch.roots == [1, 4]
    assert launch.children[1] == [3, 2]  # task_order: Mockups (1) before Wireframes (2)
    assert launch.nodes[7].path == "/4/6/7" and launch.nodes[7].depth == 2
    inputs, outputs = dict(lf.FLAT_INPUTS), dict(lf.FLAT_OUTPUTS)
    outputs.update(dict(lf.FLAT_WAL_OUTPUTS))
    for tree in plans.values():
        for tid, node in tree.nodes.items():
            assert node.instruction == inputs.get(tid)
            assert node.execution_result == outputs.get(tid)


def test_contexts_arrive_and_extra_labels_are_kept(repo):
    launch = imported(repo)[1]
    n7 = launch.nodes[7]
    assert n7.context_combined == "auth context sentinel-context-7"
    assert n7.context_sections == [{"title": "doc"}] and n7.context_meta == {"k": 1}
    assert n7.context_updated_at and n7.context_updated_at.endswith("Z")
    assert n7.metadata["legacy"]["other_contexts"]["draft"]["combined"] == "draft context of 7"
    n2 = launch.nodes[2]  # sections/meta that were not JSON are kept, wrapped
    assert n2.context_sections == ["not a json list"]
    assert n2.context_meta == {"value": "not a json object"}


def test_requires_links_become_dependencies_and_the_rest_is_kept(repo):
    plans = imported(repo)
    launch, billing, wal = plans[1], plans[2], plans[4]
    assert launch.nodes[3].dependencies == [2]
    assert launch.nodes[5].dependencies == [6]
    assert launch.nodes[4].dependencies == [1]
    assert billing.nodes[11].dependencies == [10]
    assert billing.nodes[12].dependencies == [11]
    assert billing.nodes[10].dependencies == []  # 12 -> 10 would close a cycle
    kept = billing.nodes[12].metadata["legacy"]["links"]
    assert {"from_id": 12, "to_id": 10, "kind": "requires", "not_imported": "cycle"} in kept
    assert any(link["to_id"] == 99 for link in launch.nodes[3].metadata["legacy"]["links"])
    assert any(link["kind"] == "relates" for link in launch.nodes[2].metadata["legacy"]["links"])
    assert wal.nodes[21].dependencies == [20]


def test_wal_only_plan_tasks_and_chat_arrive(migrated, repo):
    plans = imported(repo)
    wal = plans[4]
    assert wal.title == "WAL-only plan"
    assert {n.name for n in wal.nodes.values()} == {"WAL task A", "WAL task B sentinel-wal"}
    assert plans[1].nodes[5].execution_result == "frontend output sentinel-wal-output"
    sessions = repo.list_chat_sessions(plan_id=wal.id)
    assert len(sessions) == 1
    msgs, _ = repo.list_chat_messages(sessions[0].id)
    assert [m.content for m in msgs] == ["chat only in the WAL sentinel-wal-chat"]


def test_old_chat_becomes_chat_sessions_with_every_message(migrated, repo):
    plans = imported(repo)
    by_plan = {}
    for s in repo.list_chat_sessions(limit=1000):
        legacy = s.metadata.get("legacy") or {}
        if legacy.get("source_file") == "tasks.db":
            by_plan[(legacy["table"], legacy.get("old_plan_id"),
                     legacy.get("old_conversation_id"))] = s
    assert len(by_plan) == 7
    s1 = by_plan[("chat_messages", 1, None)]
    assert s1.plan_id == plans[1].id
    msgs, _ = repo.list_chat_messages(s1.id)
    assert [(m.role, m.content) for m in msgs] == [
        (row[2], row[3]) for row in lf.FLAT_CHAT if row[1] == 1]
    assert msgs[0].created_at == "2024-03-01T10:00:00.000000Z"  # the old time, normalised
    gone = by_plan[("chat_messages", 77, None)]
    assert gone.plan_id is None
    conv = by_plan[("conversations", 1, 1)]
    assert conv.name == "Kickoff" and conv.plan_id == plans[1].id
    msgs, _ = repo.list_chat_messages(conv.id)
    assert msgs[0].content == "kickoff message sentinel-conv-1"
    assert msgs[0].metadata["legacy"]["metadata"] == {"lang": "en"}
    general, _ = repo.list_chat_messages(by_plan[("conversations", None, 2)].id)
    assert [m.role for m in general] == ["user", "system"]
    lost, _ = repo.list_chat_messages(by_plan[("messages", None, 9)].id)
    assert [m.content for m in lost] == ["message of a conversation that is gone"]
    total = sum(repo.count_chat_messages(s.id) for s in by_plan.values())
    assert total == len(lf.FLAT_CHAT) + len(lf.FLAT_WAL_CHAT) + len(lf.FLAT_MESSAGES)


def test_cache_twins_never_overwrite_the_roots_entries(repo):
    llm, emb = repo.cache("llm"), repo.cache("embedding")
    assert llm.get("gpt-4", "shared prompt") == "root newer answer"  # root wins
    assert llm.get("gpt-4", "root-only prompt") == "root answer"
    assert llm.get("gpt-4", "flat-only prompt sentinel-llm") == "flat answer"
    assert llm.get("gpt-4", "what is 2+2") == "4 (old flat answer)"
    assert emb.get("emb-small", "shared") == [1.0, 2.0, 3.0]  # root wins
    assert emb.get("emb-small", "root only") == [4.0, 5.0, 6.0]
    got = emb.get("emb-large", "flat only sentinel-emb")
    assert got == pytest.approx([0.5, 0.5, 0.5])
    assert llm.stats().entries == 4 and emb.stats().entries == 4


def test_tables_with_no_home_are_named_with_their_copy(migrated):
    report = migrated["report"]
    left = {(x.source, x.name): x for x in report.leftovers}
    for table, rows in migrated["flat_expect"]["no_home_tables"].items():
        x = left[("tasks.db", table)]
        assert x.rows == rows and x.kept_in.endswith("flat/tasks.db")
        assert (migrated["root"] / x.kept_in).exists()
    for table, rows in migrated["flat_expect"]["statistics_rows"].items():
        assert left[("statistics.db", table)].rows == rows
    assert ("statistics.db", "statistics.db") in left


# --- the older DB_ROOT -----------------------------------------------------------------------


def test_old_root_plans_keep_ids_tasks_paths_and_edges(migrated, repo):
    exp = migrated["root_expect"]
    for pid in (1, 2, 3, 9, lf.ORPHAN_PLAN_ID):
        tree = repo.get_plan_tree(pid)
        tasks = {t[0]: t for t in exp["tasks"][pid]}
        assert set(tree.nodes) == set(tasks)
        for tid, node in tree.nodes.items():
            _tid, name, status, instruction, parent, _pos, path, depth = tasks[tid]
            assert (node.name, node.status, node.instruction, node.parent_id, node.path,
                    node.depth) == (name, status, instruction, parent, path, depth)
            assert node.created_at == "2024-03-01T10:00:00.000000Z"
        edges = sorted((n.id, d) for n in tree.nodes.values() for d in n.dependencies)
        assert edges == sorted(exp["deps"][pid])
    v2 = repo.get_plan_tree(1)
    assert v2.nodes[2].execution_result == "result of 2" and v2.nodes[2].metadata == {"old": 2}
    assert v2.nodes[2].context_sections == ["sec 2"] and v2.nodes[2].context_meta == {"m": 2}
    assert "task only in plan_9 WAL sentinel-root-wal" in {
        n.name for n in repo.get_plan_tree(9).nodes.values()}
    assert [s.note for s in repo.list_snapshots(1)] == ["before"]


def test_old_registry_rows_keep_ids_and_plan_meta_is_filled(migrated, repo):
    rows = {s.id: s for s in repo.list_plans()}
    for pid, title, owner, desc, meta in lf.ROOT_PLANS:
        if pid in (4, 5):
            continue  # no readable file: their rows are kept (see the broken-case test)
        s = rows[pid]
        assert (s.title, s.owner, s.description) == (title, owner, desc)
        assert s.metadata == (lf._j(meta) or {})
        assert s.task_count == len(migrated["root_expect"]["tasks"][pid])
        tree = repo.get_plan_tree(pid)
        assert tree.title == title  # plan_meta now holds what only the registry held
    assert rows[lf.ORPHAN_PLAN_ID].title == "Orphan plan sentinel"


def test_jobs_logs_and_the_job_index_arrive(repo):
    job = repo.load_decomposition_job(1, "p1-job-1")
    assert [log.message for log in job.logs] == ["p1 started sentinel-log", "finished"]
    v1 = repo.load_decomposition_job(2, "p2-job-1")
    assert v1.job_type == "plan_decompose" and v1.logs[0].message == "v1 log sentinel-v1-log"
    sysjob = repo.load_decomposition_job(None, "sys-job-2")
    assert sysjob.error == "boom"
    for job_id in ("p1-job-1", "p1-job-2", "p2-job-1", "sys-job-1", "sys-job-2"):
        assert repo.find_job(job_id).job_id == job_id
    entries, _ = repo.list_action_logs(1)
    assert [(e.sequence, e.action_name) for e in entries] == [(1, "decompose"), (2, "summarise")]


def test_old_chat_tables_keep_their_rows_and_ids(migrated, repo):
    s = repo.get_chat_session("abc123")
    assert s.name == "Planning chat sentinel-session" and s.plan_id == 1
    assert s.metadata == {"ui": "web"}
    assert repo.get_chat_session(lf.UNSAFE_SESSION).name == "Ops"
    gone = repo.get_chat_session("gone-plan-session")
    assert gone.plan_title == "Plan eleven"  # its plan is gone; the stored title stays
    msgs, _ = repo.list_chat_messages("abc123")
    assert [m.id for m in msgs] == [5, 6]
    assert msgs[0].content == "hello sentinel-root-chat"
    new = repo.append_chat_message("abc123", role="user", content="after migration")
    assert new.id > lf.ROOT_CHAT_SEQUENCE  # ids handed out by the old code are never reused
    run = repo.get_chat_action_run("run-1")
    assert run.result == {"ok": True} and run.context == {"depth": 2}


def test_session_memories_arrive_under_safe_names(migrated, repo):
    root = migrated["root"]
    assert not (root / "sessions" / f"session_{lf.UNSAFE_SESSION}.sqlite").exists()
    assert not (root / "sessions" / lf.CONTENT_SESSION_FILE).exists()
    cfg = repo.config
    for sid, rows in lf.SESSION_MEMORIES.items():
        assert cfg.session_db_path(sid).exists()
        mems = repo.list_memories(sid)
        assert sorted(m.id for m in mems) == sorted(r[0] for r in rows)
        assert {m.content for m in mems} == {r[1] for r in rows}
    hits = repo.search_memories("abc123", "deploy")
    assert [h.memory.id for h in hits] == ["m1"]
    near = repo.search_memories_by_embedding("abc123", [1.0, 0.0, 0.0], model="emb-small", k=1)
    assert [h.memory.id for h in near] == ["m1"]  # norms were computed for adopted vectors
    con = sqlite3.connect(cfg.session_db_path(lf.UNSAFE_SESSION))
    try:  # the original id is recorded in the file whose name is now only a hash
        assert con.execute("SELECT value FROM plan_meta WHERE key = 'session_id'").fetchone() \
            == (lf.UNSAFE_SESSION,)
    finally:
        con.close()


def test_no_new_plan_takes_an_id_a_file_ever_used(migrated, repo):
    top = max(s.id for s in repo.list_plans())
    plan = repo.create_plan("after the migration")
    assert plan.id > max(top, lf.ROOT_SEQUENCE, lf.CORRUPT_ORPHAN_ID)
    repo.delete_plan(plan.id)


# --- broken cases ----------------------------------------------------------------------------


def test_every_broken_case_is_reported(migrated, repo):
    report, root = migrated["report"], migrated["root"]
    codes = problem_codes(report)
    missing = {p.data["plan_id"] for p in codes["missing_plan_file"]}
    assert missing == {4, 5}
    assert repo.get_plan_summary(4).title == "Plan whose file is missing"  # row kept
    assert [p.data["plan_id"] for p in codes["orphan_plan_file"]] == [lf.ORPHAN_PLAN_ID]
    unreadable = {Path(p.path).name for p in codes["unreadable_file"]}
    assert unreadable == {"plan_5.sqlite", f"plan_{lf.CORRUPT_ORPHAN_ID}.sqlite", "notes.db"}
    assert not (root / "plans" / "plan_5.sqlite").exists()
    quarantined = sorted((root / "backups" / "quarantine").iterdir())
    assert any(q.name.endswith("plans__plan_5.sqlite") and (q / "plan_5.sqlite").exists()
               and (q / "note.json").exists() for q in quarantined)
    assert any((q / "notes.db").exists() for q in quarantined)
    assert (migrated["flat"] / "notes.db").exists()  # copied, the original left in place
    unsafe = {p.data["session_id"] for p in codes["unsafe_session_id"]}
    assert unsafe == {lf.UNSAFE_SESSION, lf.CONTENT_SESSION}
    assert {"link_not_imported", "dependency_cycle", "unplanned_tasks",
            "chat_plan_missing"} <= set(codes)
    assert codes["unplanned_tasks"][0].data["task_ids"] == [30]


def test_redact_rescrubs_adopted_log_payloads(migrated):
    """--redact: the secret planted in old logs is gone from the live files' bytes (free pages
    and -wal included) and still in the backup copy."""
    root, secret = migrated["root"], lf.SECRET.encode()
    for rel in ("jobs/system_jobs.sqlite", "main/plan_registry.db"):
        live = root / rel
        data = live.read_bytes() + (Path(f"{live}-wal").read_bytes()
                                    if Path(f"{live}-wal").exists() else b"")
        assert secret not in data, rel
    copy = next(b.copy for b in migrated["report"].backups
                if b.source.endswith("system_jobs.sqlite"))
    assert secret in (root / copy).read_bytes()
    assert migrated["report"].counts["values_redacted"] == 3


# --- idempotence -----------------------------------------------------------------------------


def test_a_second_run_changes_nothing_and_says_so(migrated):
    root, flat = migrated["root"], migrated["flat"]
    before = lf.snapshot_files(root, flat)
    dump = lf.dump_root(root)
    again = migrate_existing_databases(root, legacy_dir=flat, redact=True)
    assert again.nothing_to_do and not again.changed and again.ok
    assert "nothing to do" in again.to_text()
    assert lf.snapshot_files(root, flat) == before
    assert lf.dump_root(root) == dump
    # The broken cases that remain are still reported, with where their data is kept.
    assert {p.data["plan_id"] for p in again.problems if p.code == "missing_plan_file"} == {4, 5}
