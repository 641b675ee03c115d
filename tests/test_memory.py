"""Session memory: memories (session files and the registry), FTS5 search kept in sync by
triggers, float32 embeddings with top-k cosine search, and idle-session cleanup."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records_support import WORKER, all_done, go, results, start_workers, stop

from plandb import InvalidId, InvalidInput, PlanRepository, RecordNotFound, StorageError
from plandb.errors import RecordConflict

SESSIONS = (None, "sess-1")


def _fts_ok(path: Path) -> None:
    conn = apsw.Connection(str(path))
    try:  # raises if the index disagrees with the memories table
        conn.execute("INSERT INTO memories_fts (memories_fts, rank) "
                     "VALUES ('integrity-check', 1)")
    finally:
        conn.close()


@pytest.mark.parametrize("sid", SESSIONS)
def test_memory_round_trip(repo, sid):
    m = repo.add_memory(sid, content="Use blue-green deploys", memory_type="decision",
                        importance="high", keywords=["deploy", "release"], tags=["ops"],
                        context="infra", related_task_id=12, metadata={"src": "chat"})
    assert (m.session_id, m.memory_type, m.importance, m.keywords, m.tags, m.context,
            m.related_task_id, m.metadata) == (sid, "decision", "high", ["deploy", "release"],
                                               ["ops"], "infra", 12, {"src": "chat"})
    assert repo.get_memory(sid, m.id) == m
    changed = repo.update_memory(sid, m.id, content="Use canary deploys", importance="low",
                                 keywords=["canary"])
    assert (changed.content, changed.importance, changed.keywords, changed.tags) == (
        "Use canary deploys", "low", ["canary"], ["ops"])
    assert changed.created_at == m.created_at and changed.updated_at >= m.updated_at
    other = repo.add_memory(sid, content="second", memory_type="note", memory_id="fixed-id")
    assert other.id == "fixed-id"
    assert [x.id for x in repo.list_memories(sid)] == ["fixed-id", m.id]
    assert [x.id for x in repo.list_memories(sid, memory_type="decision")] == [m.id]
    assert [x.id for x in repo.list_memories(sid, related_task_id=12)] == [m.id]
    assert [x.id for x in repo.list_memories(sid, limit=1, offset=1)] == [m.id]
    assert repo.count_memories(sid) == 2
    repo.delete_memory(sid, m.id)
    with pytest.raises(RecordNotFound):
        repo.get_memory(sid, m.id)
    assert repo.count_memories(sid) == 1


def test_sessions_are_separate_files(repo, config):
    a = repo.add_memory("a", content="alpha")
    repo.add_memory("b", content="beta")
    repo.add_memory(None, content="gamma")
    assert config.session_db_path("a").exists() and config.session_db_path("b").exists()
    assert [m.content for m in repo.list_memories("a")] == ["alpha"]
    assert [m.content for m in repo.list_memories(None)] == ["gamma"]
    with pytest.raises(RecordNotFound):
        repo.get_memory("b", a.id)
    odd = "weird/../id with spaces"  # any string id maps to a contained file name
    repo.add_memory(odd, content="odd")
    assert [m.content for m in repo.list_memories(odd)] == ["odd"]
    assert all(p.parent == config.folder("sessions")
               for p in config.folder("sessions").iterdir())


def test_reads_never_create_a_session_file(repo, config):
    assert repo.list_memories("ghost") == []
    assert repo.search_memories("ghost", "anything") == []
    assert repo.search_memories_by_embedding("ghost", [1.0], model="m") == []
    assert repo.count_memories("ghost") == 0
    with pytest.raises(RecordNotFound):
        repo.get_memory("ghost", "m1")
    with pytest.raises(RecordNotFound):
        repo.update_memory("ghost", "m1", content="x")
    with pytest.raises(RecordNotFound):
        repo.delete_memory("ghost", "m1")
    assert not config.session_db_path("ghost").exists()


def test_typed_errors_change_nothing(repo):
    m = repo.add_memory("s", content="keep me")
    with pytest.raises(RecordConflict):
        repo.add_memory("s", content="dup", memory_id=m.id)
    for bad in (dict(content=""), dict(content=None), dict(content="x", keywords="k"),
                dict(content="x", metadata=[1]), dict(content="x", related_task_id="3"),
                dict(content="x", embedding=[1.0]),  # model missing
                dict(content="x", embedding=[math.nan], embedding_model="m")):
        with pytest.raises(InvalidInput):
            repo.add_memory("s", **bad)
    with pytest.raises(InvalidId):
        repo.add_memory("", content="x")
    with pytest.raises(InvalidId):
        repo.get_memory("s", 42)
    with pytest.raises(RecordNotFound):
        repo.update_memory("s", "nope", content="x")
    with pytest.raises(RecordNotFound):
        repo.set_memory_embedding("s", "nope", [1.0], model="m")
    with pytest.raises(RecordNotFound):
        repo.get_memory_embedding("s", m.id)
    assert [x.content for x in repo.list_memories("s")] == ["keep me"]


@pytest.mark.parametrize("sid", SESSIONS)
def test_full_text_search_follows_every_change(repo, config, sid):
    a = repo.add_memory(sid, content="The database migration runs every night",
                        keywords=["postgres"])
    b = repo.add_memory(sid, content="Migration of the frontend to React", tags=["web"])
    c = repo.add_memory(sid, content="Café menu: crème brûlée")
    assert {h.memory.id for h in repo.search_memories(sid, "migration")} == {a.id, b.id}
    assert [h.memory.id for h in repo.search_memories(sid, "database migration")] == [a.id]
    assert {h.memory.id for h in repo.search_memories(sid, "database react",
                                                      match="any")} == {a.id, b.id}
    assert [h.memory.id for h in repo.search_memories(sid, "postgres")] == [a.id]
    assert [h.memory.id for h in repo.search_memories(sid, "web")] == [b.id]
    assert [h.memory.id for h in repo.search_memories(sid, "creme brulee")] == [c.id]
    assert [h.memory.id for h in repo.search_memories(sid, 'migr* NOT react',
                                                      raw=True)] == [a.id]
    assert repo.search_memories(sid, 'AND "OR NOT (') == []  # operators are plain words
    hits = repo.search_memories(sid, "migration")
    assert hits[0].score >= hits[1].score
    repo.update_memory(sid, a.id, content="Nightly vacuum job", keywords=["sqlite"])
    assert [h.memory.id for h in repo.search_memories(sid, "migration")] == [b.id]
    assert [h.memory.id for h in repo.search_memories(sid, "vacuum sqlite")] == [a.id]
    repo.delete_memory(sid, b.id)
    assert repo.search_memories(sid, "migration") == []
    assert [h.memory.id for h in repo.search_memories(sid, "nightly",
                                                      memory_type="conversation")] == [a.id]
    assert repo.search_memories(sid, "nightly", memory_type="other") == []
    with pytest.raises(InvalidInput):
        repo.search_memories(sid, "NOT AND (", raw=True)
    with pytest.raises(InvalidInput):
        repo.search_memories(sid, "?!")
    with pytest.raises(InvalidInput):
        repo.search_memories(sid, "x", match="some")
    _fts_ok(config.main_db_path if sid is None else config.session_db_path(sid))


def _cos(a, b):
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_round_trip_and_top_k(repo):
    rng = random.Random(7)
    vectors = {}
    for i in range(30):
        v = [rng.uniform(-1, 1) for _ in range(16)]
        m = repo.add_memory("s", content=f"m{i}", embedding=v, embedding_model="emb-1",
                            memory_type="even" if i % 2 == 0 else "odd")
        vectors[m.id] = v
    some = next(iter(vectors))
    stored = repo.get_memory_embedding("s", some, model="emb-1")
    assert stored.dimension == 16 and stored.model == "emb-1"
    assert stored.vector == pytest.approx(vectors[some], rel=1e-6, abs=1e-6)  # float32
    query = [rng.uniform(-1, 1) for _ in range(16)]
    hits = repo.search_memories_by_embedding("s", query, model="emb-1", k=5)
    expected = sorted(vectors, key=lambda mid: -_cos(query, vectors[mid]))[:5]
    assert [h.memory.id for h in hits] == expected
    assert [h.score for h in hits] == pytest.approx([_cos(query, vectors[m]) for m in expected],
                                                    abs=1e-5)
    evens = repo.search_memories_by_embedding("s", query, model="emb-1", k=50,
                                              memory_type="even")
    assert len(evens) == 15 and {h.memory.memory_type for h in evens} == {"even"}
    strong = repo.search_memories_by_embedding("s", query, model="emb-1", k=50, min_score=0.3)
    assert all(h.score >= 0.3 for h in strong)
    assert len(strong) == sum(_cos(query, v) >= 0.3 for v in vectors.values())
    # Other models and other dimensions never mix in.
    repo.set_memory_embedding("s", some, [1.0, 0.0], model="emb-2")
    assert [h.memory.id for h in repo.search_memories_by_embedding(
        "s", [1.0, 0.1], model="emb-2", k=5)] == [some]
    assert repo.search_memories_by_embedding("s", [1.0, 0.1], model="emb-1") == []
    assert repo.get_memory_embedding("s", some).model == "emb-2"  # most recent one
    repo.delete_memory("s", some)  # its embeddings go with it
    assert repo.search_memories_by_embedding("s", [1.0, 0.1], model="emb-2") == []
    for bad in ([], [1.0, "x"], [True, 1.0], "abc", [math.inf], [1e40], {"a": 1.0}):
        with pytest.raises(InvalidInput):
            repo.search_memories_by_embedding("s", bad, model="emb-1")
    with pytest.raises(InvalidInput):
        repo.search_memories_by_embedding("s", [0.0] * 16, model="emb-1")
    with pytest.raises(InvalidInput):
        repo.search_memories_by_embedding("s", query, model="emb-1", min_score=2)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.lists(st.floats(-100, 100, width=32), min_size=4, max_size=4)
                     .filter(lambda v: sum(x * x for x in v) > 1e-6), min_size=1, max_size=12),
       k=st.integers(1, 5))
def test_top_k_matches_brute_force(repo, data, k):
    sid = f"h{random.getrandbits(40)}"
    ids = [repo.add_memory(sid, content=f"v{i}", embedding=v, embedding_model="m").id
           for i, v in enumerate(data)]
    query = data[0]
    hits = repo.search_memories_by_embedding(sid, query, model="m", k=k)
    scores = sorted((_cos(query, v) for v in data), reverse=True)[:k]
    assert [h.score for h in hits] == pytest.approx(scores, abs=1e-5)
    assert ids[0] in {h.memory.id for h in hits} or scores[-1] >= 1 - 1e-5
    repo.drop_session_memory(sid)


# --- idle cleanup --------------------------------------------------------------------------------


def _age(path: Path, days: float) -> None:
    """Make a file and its -wal/-shm look `days` old (what the cleanup's prefilter reads)."""
    t = time.time() - days * 86400
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            os.utime(p, (t, t))


def _set_last_write(path: Path, stamp: str) -> None:
    conn = apsw.Connection(str(path))
    try:
        conn.execute("UPDATE plan_meta SET value = ? WHERE key = 'last_write_at'", (stamp,))
    finally:
        conn.close()


def test_cleanup_removes_idle_sessions_with_wal_and_shm(repo, config):
    for sid in ("old", "recent", "wal-fresh", "stamp-fresh"):
        repo.add_memory(sid, content=f"{sid} memory")
    paths = {sid: config.session_db_path(sid) for sid in ("old", "recent", "wal-fresh",
                                                          "stamp-fresh")}
    for sid in ("old", "wal-fresh", "stamp-fresh"):
        repo.pool.discard(paths[sid])  # as if this process had not used them for days
    _set_last_write(paths["old"], "2020-01-01T00:00:00.000000Z")
    _set_last_write(paths["wal-fresh"], "2020-01-01T00:00:00.000000Z")
    for sid in ("old", "wal-fresh", "stamp-fresh"):
        _age(paths[sid], 10)
    Path(f"{paths['wal-fresh']}-wal").write_bytes(b"")  # a fresh -wal counts as activity
    dry = repo.cleanup_idle_sessions(idle_days=5, dry_run=True)
    assert dry.dry_run and sorted(dry.removed) == ["session_old.sqlite",
                                                   "session_stamp-fresh.sqlite"]
    assert all(p.exists() for p in paths.values())
    report = repo.cleanup_idle_sessions(idle_days=5)
    # stamp-fresh: its files look old, but its own last write is recent: kept.
    assert report.removed == ["session_old.sqlite"]
    assert report.in_use == ["session_stamp-fresh.sqlite"] and report.bytes_freed > 0
    assert not any(Path(f"{paths['old']}{s}").exists() for s in ("", "-wal", "-shm",
                                                                 "-journal"))
    for sid in ("recent", "wal-fresh", "stamp-fresh"):
        assert [m.content for m in repo.list_memories(sid)] == [f"{sid} memory"]
    assert repo.list_memories("old") == []
    assert repo.add_memory("old", content="new life").content == "new life"  # fresh file


def test_cleanup_never_removes_a_session_open_elsewhere(repo, config, db_root):
    repo.add_memory("busy", content="x")
    repo.pool.discard(config.session_db_path("busy"))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    holder = subprocess.Popen([sys.executable, str(WORKER), str(db_root), "hold", "busy", "0",
                               "h"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert holder.stdout.readline().strip() == b"ready"
        path = config.session_db_path("busy")
        _set_last_write(path, "2020-01-01T00:00:00.000000Z")
        _age(path, 30)
        report = repo.cleanup_idle_sessions(idle_days=1)
        assert report.in_use == ["session_busy.sqlite"] and report.removed == []
        with pytest.raises(StorageError):
            repo.drop_session_memory("busy")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert {m.content for m in repo.list_memories("busy")} == {"x", "held by h"}
    assert repo.drop_session_memory("busy") is True
    assert repo.drop_session_memory("busy") is False


def test_cleanup_racing_writers_loses_nothing(repo, db_root):
    """Writers in 3 processes add memories while this process runs cleanup with idle_days=0
    over and over: a file in use is never removed, so every acknowledged memory is still
    there afterwards."""
    procs = start_workers(db_root, "memory", "raced", 25, 3, hold=True)
    go(db_root)
    removed = 0
    while not all_done(db_root, 3):
        assert all(p.poll() is None for p in procs), "a writer died"
        removed += len(repo.cleanup_idle_sessions(idle_days=0).removed)
    stop(db_root)
    acked = {i for out in results(procs) for i in out}
    assert len(acked) == 75
    assert {m.id for m in repo.list_memories("raced", limit=1000)} == acked
    # (`removed` may be above 0: a file can go in the instant between a writer creating it
    # empty and opening it; the writer then makes a new one. Nothing acknowledged is lost.)


def test_memory_pages_both_ways(repo):
    ids = [repo.add_memory("p", content=f"m{i}", memory_type=("a", "b")[i % 2]).id
           for i in range(9)]
    def pages(**kw):
        out, cursor = [], None
        while True:
            page, cursor = repo.list_memories_page("p", limit=2, cursor=cursor, **kw)
            out.extend(m.id for m in page)
            if cursor is None:
                return out
    assert pages() == ids
    assert pages(reverse=True) == ids[::-1]
    assert pages(memory_type="b") == ids[1::2]
    assert repo.list_memories_page("nobody") == ([], None)
    with pytest.raises(InvalidInput):
        repo.list_memories_page("p", cursor="bogus")


def test_concurrent_memory_writers_page_once_and_keep_the_index_whole(repo, config, db_root):
    procs = start_workers(db_root, "memory", "none", 20, 3)
    go(db_root)
    seen, cursor = [], None
    while any(p.poll() is None for p in procs):
        page, nxt = repo.list_memories_page(None, limit=3, cursor=cursor)
        if nxt is not None:  # a full page: keep it and move on
            seen.extend(page)
            cursor = nxt
        # else: at the end for now; the same cursor is asked again once more arrived
    acked = {i for out in results(procs) for i in out}
    while True:
        page, nxt = repo.list_memories_page(None, limit=3, cursor=cursor)
        seen.extend(page)
        if nxt is None:
            break
        cursor = nxt
    assert sorted(m.id for m in seen) == sorted(acked) and len(seen) == len(acked)
    assert {m.id for m in repo.list_memories(None, limit=1000)} == acked
    assert len(repo.search_memories(None, "note", limit=1000)) == 60
    hits = repo.search_memories_by_embedding(None, [19.0, 1.0, 0.5], model="test-model", k=3)
    assert len(hits) == 3 and hits[0].score == pytest.approx(1.0, abs=1e-6)
    _fts_ok(config.main_db_path)


def test_drop_session_memory_of_a_cached_connection(config):
    """The repository's own pooled connection is closed first, so the file can go."""
    with PlanRepository(config) as repo:
        repo.add_memory("mine", content="x")
        assert repo.drop_session_memory("mine") is True
        assert not config.session_db_path("mine").exists()
        assert repo.list_memories("mine") == []
