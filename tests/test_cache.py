"""Model caches (cache/<name>_cache.db): stable keys, exact values, TTL, LRU bounds, persisted
stats, clear, and several processes sharing one bound."""

from __future__ import annotations

import time

import apsw
import pytest
from records_support import go, results, start_workers

from plandb import InvalidInput, PlanRepository
from plandb.stores.cache import cache_key

MISSING = object()


def test_round_trip_and_stable_keys(repo, config):
    llm = repo.cache("llm")
    assert llm is repo.cache("llm") and llm.path == config.cache_db_path("llm")
    prompt = {"messages": [{"role": "user", "content": "Hi"}], "temperature": 0}
    assert llm.get("gpt-x", prompt) is None
    assert llm.put("gpt-x", prompt, {"text": "Hello", "tokens": 5}) is True
    reordered = {"temperature": 0, "messages": [{"content": "Hi", "role": "user"}]}
    assert llm.get("gpt-x", reordered) == {"text": "Hello", "tokens": 5}
    assert llm.get("gpt-y", prompt, MISSING) is MISSING  # the model is part of the key
    assert cache_key("m", {"a": 1, "b": 2}) == cache_key("m", {"b": 2, "a": 1})
    assert cache_key("m", "x") != cache_key("m2", "x")
    llm.put("gpt-x", "none please", None)
    assert llm.get("gpt-x", "none please", MISSING) is None  # a cached None is a hit
    assert llm.contains("gpt-x", "none please") and not llm.contains("gpt-x", "other")
    assert llm.delete("gpt-x", "none please") is True
    assert llm.delete("gpt-x", "none please") is False


def test_embedding_vectors_come_back_exactly(repo):
    emb = repo.cache("embedding")
    vector = [0.1, -2.5e-8, 1 / 3, 12345.678901234567] * 500  # 2000 floats, float64 exact
    assert emb.put("text-embedding-3", "some text", vector)
    assert emb.get("text-embedding-3", "some text") == vector
    ints = [1, 2, 3]
    emb.put("m", "ints", ints)
    assert emb.get("m", "ints") == ints  # not a float vector: JSON, ints stay ints


def test_ttl_and_default_ttl(repo):
    c = repo.cache("llm")
    c.put("m", "short", "v", ttl=0.2)
    c.put("m", "forever", "v", ttl=None)
    assert c.get("m", "short") == "v"
    time.sleep(0.3)
    assert c.get("m", "short", MISSING) is MISSING
    assert not c.contains("m", "short")
    assert c.get("m", "forever") == "v"
    stats = c.stats()
    assert stats.expirations == 1 and stats.entries == 1  # removed by the flush in stats()
    c.configure(default_ttl=0.2)
    c.put("m", "default", "v")
    c.put("m", "explicit-none", "v", ttl=None)
    time.sleep(0.3)
    assert c.purge_expired() == 1
    assert c.get("m", "explicit-none") == "v"
    for bad in (0, -1, "10", True, 1e12):
        with pytest.raises(InvalidInput):
            c.put("m", "x", "v", ttl=bad)


def test_lru_eviction_by_entries(repo):
    c = repo.cache("llm")
    c.configure(max_entries=3)
    for key in ("a", "b", "c"):
        c.put("m", key, key)
    assert c.get("m", "a") == "a"  # a is now more recently used than b
    c.put("m", "d", "d")
    assert c.get("m", "b", MISSING) is MISSING
    assert [c.get("m", k) for k in ("a", "c", "d")] == ["a", "c", "d"]
    stats = c.stats()
    assert (stats.entries, stats.evictions, stats.max_entries) == (3, 1, 3)
    c.configure(max_entries=1)  # shrinking evicts at once, least recently used first
    assert c.stats().entries == 1 and c.get("m", "d") == "d"


def test_bytes_bound_and_rejected_values(repo):
    c = repo.cache("llm")
    c.configure(max_bytes=100)
    for i in range(5):
        assert c.put("m", i, "x" * 30)  # '"xxx..."' = 32 bytes each
    stats = c.stats()
    assert stats.bytes <= 100 and stats.entries == 3 and stats.evictions == 2
    assert c.put("m", "big", "y" * 200) is False  # alone larger than the bound
    c.configure(max_bytes=None)
    huge = "z" * 200_000  # over the redactor's string limit: it would come back cut
    assert c.put("m", "huge", huge) is False
    assert c.get("m", "huge", MISSING) is MISSING
    assert c.stats().rejected == 2
    with pytest.raises(InvalidInput):
        c.configure(max_entries=0)


def test_stats_persist_across_repositories_and_processes(config, db_root):
    with PlanRepository(config) as repo:
        c = repo.cache("llm")
        c.put("m", "k", "v")
        c.get("m", "k")
        c.get("m", "k")
        c.get("m", "nope")
    # Written on close; a new repository (or process) sees them.
    with PlanRepository(config) as repo:
        stats = repo.cache("llm").stats()
        assert (stats.hits, stats.misses, stats.puts) == (2, 1, 1)
        assert stats.hit_rate == pytest.approx(2 / 3)
    procs = start_workers(db_root, "cache", "llm", 30, 3)
    go(db_root)
    keys = [k for out in results(procs) for k in out]
    with PlanRepository(config) as repo:
        c = repo.cache("llm")
        assert all(c.get("m", k) == {"n": int(k.split("-")[1])} for k in keys)
        stats = c.stats()
        assert stats.puts == 91 and stats.entries == 91 and stats.hits == 92


def test_bound_holds_with_writers_in_several_processes(config, db_root):
    with PlanRepository(config) as repo:
        repo.cache("llm").configure(max_entries=40)
    procs = start_workers(db_root, "cache", "llm", 40, 3)
    go(db_root)
    results(procs)
    conn = apsw.Connection(str(config.cache_db_path("llm")))
    try:
        count = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM cache_entries"
                             ).fetchall()[0]
        counters = dict(conn.execute("SELECT name, value FROM cache_counters").fetchall())
    finally:
        conn.close()
    assert count[0] == 40
    assert (counters["entries"], counters["bytes"]) == count  # trigger-kept totals are exact
    assert counters["evictions"] == 80 and counters["puts"] == 120


def test_clear_and_reset(repo):
    c = repo.cache("embedding")
    for i in range(4):
        c.put("m", i, [float(i)])
    c.get("m", 0)
    assert c.clear() == 4
    stats = c.stats()
    assert (stats.entries, stats.bytes, stats.hits) == (0, 0, 1)
    c.put("m", 1, [1.0])
    assert c.clear(reset_stats=True) == 1
    stats = c.stats()
    assert (stats.hits, stats.misses, stats.puts, stats.entries) == (0, 0, 0, 0)


def test_bad_arguments(repo):
    for name in ("", "LLM", "../x", "a" * 41, 3):
        with pytest.raises(InvalidInput):
            repo.cache(name)
    c = repo.cache("llm")
    with pytest.raises(InvalidInput):
        c.put("", "x", 1)
    with pytest.raises(InvalidInput):
        c.get("m", {1, 2})  # not JSON: no stable key
    with pytest.raises(InvalidInput):
        c.put("m", object(), 1)
    assert c.stats().puts == 0
