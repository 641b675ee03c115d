"""Action logs: routing, per-job sequences (atomic across processes), keyset pagination in both
directions under concurrent appends, filters, cleanup, stats, typed errors."""

from __future__ import annotations

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records_support import go, results, start_workers

from plandb import InvalidId, InvalidInput, PlanNotFound, PlanRepository


def _append(repo, plan_id, job_id="job-1", **kw):
    values = dict(action_kind="tool", action_name="search", status="done")
    values.update(kw)
    return repo.append_action_log(plan_id=plan_id, job_id=job_id, **values)


def _all(repo, plan_id, *, reverse=False, limit=7, **filters):
    """Page through a whole listing; returns the entries in the order seen."""
    seen, cursor = [], None
    while True:
        page, cursor = repo.list_action_logs(plan_id, limit=limit, cursor=cursor,
                                             reverse=reverse, **filters)
        seen.extend(page)
        if cursor is None:
            return seen


@pytest.fixture
def plan(repo):
    return repo.create_plan("Logs")


def test_round_trip_keeps_every_field(repo, plan):
    e = repo.append_action_log(
        plan_id=plan.id, job_id="j1", job_type="plan_execute", session_id="sess-1",
        user_message="add a task", action_kind="tool_operation", action_name="create_task",
        status="completed", success=True, message="ok", parameters={"name": "B€rkeley"},
        details={"nested": [1, 2, {"x": None}]}, created_at="2026-01-02 03:04:05")
    got = repo.list_action_logs(plan.id)[0][0]
    assert got == e
    assert (got.plan_id, got.job_id, got.job_type, got.sequence) == (plan.id, "j1",
                                                                      "plan_execute", 1)
    assert got.parameters == {"name": "B€rkeley"}
    assert got.details == {"nested": [1, 2, {"x": None}]}
    assert got.created_at == "2026-01-02T03:04:05.000000Z"
    assert [_append(repo, plan.id, "j1", success=s).success
            for s in (False, None)] == [False, None]


def test_routing_plan_file_and_system_file(repo, plan, config):
    _append(repo, plan.id, message="in plan")
    _append(repo, None, message="system")
    assert [e.message for e in repo.list_action_logs(plan.id)[0]] == ["in plan"]
    assert [e.message for e in repo.list_action_logs(None)[0]] == ["system"]
    conn = apsw.Connection(str(config.system_jobs_db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("SELECT message FROM plan_action_logs").fetchall() == [("system",)]
    finally:
        conn.close()


def test_sequences_are_per_job_and_survive_cleanup(repo, plan):
    assert [_append(repo, plan.id, "a").sequence for _ in range(3)] == [1, 2, 3]
    assert [_append(repo, plan.id, "b").sequence for _ in range(2)] == [1, 2]
    assert repo.cleanup_action_logs(plan.id, max_rows=0) == 5
    assert repo.list_action_logs(plan.id)[0] == []
    # The numbers handed out are never handed out again.
    assert _append(repo, plan.id, "a").sequence == 4
    assert _append(repo, plan.id, "b").sequence == 3


def test_typed_errors_and_failed_calls_change_nothing(repo, plan):
    _append(repo, plan.id)
    with pytest.raises(PlanNotFound):
        _append(repo, plan.id + 100)
    with pytest.raises(PlanNotFound):
        repo.list_action_logs(plan.id + 100)
    with pytest.raises(InvalidId):
        _append(repo, 0)
    with pytest.raises(InvalidId):
        _append(repo, plan.id, job_id="")
    with pytest.raises(InvalidId):  # an id shaped like a secret is refused, not stored
        _append(repo, plan.id, job_id="sk-proj-" + "a1B2" * 12)
    with pytest.raises(InvalidInput):
        _append(repo, plan.id, status="")
    with pytest.raises(InvalidInput):
        _append(repo, plan.id, success="yes")
    with pytest.raises(InvalidInput):
        _append(repo, plan.id, created_at="yesterday")
    with pytest.raises(InvalidInput):
        repo.list_action_logs(plan.id, limit=0)
    with pytest.raises(InvalidInput):
        repo.cleanup_action_logs(plan.id)
    with pytest.raises(InvalidInput):
        repo.cleanup_action_logs(plan.id, max_rows=-1)
    entries, _ = repo.list_action_logs(plan.id)
    assert len(entries) == 1 and entries[0].sequence == 1
    assert _append(repo, plan.id).sequence == 2  # no number was used by the failures


@pytest.mark.parametrize("cursor", ["", "garbage!", "eyJ2IjoxfQ", "x" * 300, 12, b"abc"])
def test_bad_cursor_is_invalid_input(repo, plan, cursor):
    with pytest.raises(InvalidInput):
        repo.list_action_logs(plan.id, cursor=cursor)


def test_cursor_from_other_listing_or_direction_is_refused(repo, plan):
    for _ in range(3):
        _append(repo, plan.id)
    _, forward = repo.list_action_logs(plan.id, limit=1)
    with pytest.raises(InvalidInput, match="direction"):
        repo.list_action_logs(plan.id, limit=1, cursor=forward, reverse=True)
    session = repo.create_chat_session("s")
    for i in range(3):
        repo.append_chat_message(session.id, role="user", content=str(i))
    _, chat_cursor = repo.list_chat_messages(session.id, limit=1)
    with pytest.raises(InvalidInput, match="listing"):
        repo.list_action_logs(plan.id, cursor=chat_cursor)


def test_pagination_visits_every_entry_once_both_ways(repo, plan):
    ids = [_append(repo, plan.id, f"j{i % 3}").id for i in range(25)]
    assert [e.id for e in _all(repo, plan.id)] == ids
    assert [e.id for e in _all(repo, plan.id, reverse=True)] == ids[::-1]
    assert [e.id for e in _all(repo, plan.id, limit=25)] == ids
    page, cursor = repo.list_action_logs(plan.id, limit=25)
    assert len(page) == 25 and cursor is None


def test_filters_combine_with_pagination(repo, plan):
    stamps = [f"2026-01-01T00:00:{s:02d}.000000Z" for s in range(20)]
    for i, stamp in enumerate(stamps):
        _append(repo, plan.id, f"j{i % 2}", status="ok" if i % 3 else "failed",
                action_name=f"a{i % 4}", created_at=stamp)
    assert [e.sequence for e in _all(repo, plan.id, job_id="j1", limit=3)] == list(
        range(1, 11))
    failed = _all(repo, plan.id, status="failed", limit=2, reverse=True)
    assert [e.created_at for e in failed] == [stamps[i] for i in range(18, -1, -3)]
    window = _all(repo, plan.id, since=stamps[5], until=stamps[9], limit=2)
    assert [e.created_at for e in window] == stamps[5:9]
    names = _all(repo, plan.id, action_name="a2", job_id="j0")
    assert {e.action_name for e in names} == {"a2"} and len(names) == 5


def test_follow_with_action_log_cursor(repo, plan):
    first = [_append(repo, plan.id) for _ in range(3)]
    page, cursor = repo.list_action_logs(plan.id, limit=10)
    assert cursor is None and page == first
    later = [_append(repo, plan.id) for _ in range(2)]
    resume = repo.action_log_cursor(page[-1].id)
    assert repo.list_action_logs(plan.id, cursor=resume)[0] == later
    with pytest.raises(InvalidInput):
        repo.action_log_cursor(-1)


def test_cleanup_by_age_and_count(repo, plan):
    old = "2020-01-01T00:00:00.000000Z"
    for _ in range(4):
        _append(repo, plan.id, created_at=old)
    keep = [_append(repo, plan.id) for _ in range(6)]
    assert repo.cleanup_action_logs(plan.id, older_than_days=30) == 4
    assert repo.cleanup_action_logs(plan.id, older_than_days=30) == 0
    assert repo.cleanup_action_logs(plan.id, max_rows=4) == 2
    assert [e.id for e in _all(repo, plan.id)] == [e.id for e in keep[2:]]
    assert repo.cleanup_action_logs(plan.id, older_than_days=0, max_rows=10) == 4


def test_aggregate_stats(repo, plan):
    for i in range(10):
        _append(repo, plan.id, "j1" if i < 6 else "j2", action_name=f"a{i % 2}",
                success=[True, False, None][i % 3], status=("ok", "bad")[i % 2])
    stats = repo.aggregate_action_stats(plan.id)
    assert (stats.total, stats.successes, stats.failures, stats.unknown) == (10, 4, 3, 3)
    assert stats.success_rate == pytest.approx(4 / 7)
    assert stats.by_action["a0"].total == 5 and stats.by_action["a1"].total == 5
    assert sum(c.successes for c in stats.by_action.values()) == 4
    assert stats.by_status == {"ok": 5, "bad": 5}
    one = repo.aggregate_action_stats(plan.id, job_id="j2")
    assert one.total == 4 and one.job_id == "j2"
    empty = repo.aggregate_action_stats(None)
    assert empty.total == 0 and empty.success_rate is None
    assert stats.to_dict()["by_action"]["a0"]["total"] == 5


def test_hot_queries_keep_their_indexes(repo, plan, config):
    """`= +?` avoids STAT4 re-prepares; the index must still be used."""
    _append(repo, plan.id)
    conn = apsw.Connection(str(config.plan_db_path(plan.id)))
    try:
        def plan_of(sql, params):
            return " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))

        assert "USING" in plan_of("SELECT max(sequence) FROM plan_action_logs "
                                  "WHERE job_id = +?", ("job-1",))
        assert "plan_action_logs_job" in plan_of(
            "SELECT id FROM plan_action_logs WHERE id > ? AND job_id = +? ORDER BY id LIMIT ?",
            (0, "job-1", 10))
        assert "PRIMARY KEY" in plan_of(
            "SELECT last_sequence FROM action_log_sequences WHERE job_id = +?", ("job-1",))
    finally:
        conn.close()


def test_concurrent_appends_from_processes(repo, plan, db_root):
    """4 processes append to two jobs while this one pages forward and backward: every entry
    is seen exactly once, and each job's sequences are 1..n with no gap or repeat."""
    workers, per_worker = 4, 40
    procs = start_workers(db_root, "action", str(plan.id), per_worker, workers)
    go(db_root)
    seen, cursor, backward_start = [], None, None
    while any(p.poll() is None for p in procs):
        page, nxt = repo.list_action_logs(plan.id, limit=5, cursor=cursor)
        seen.extend(page)
        if page:
            cursor = repo.action_log_cursor(page[-1].id) if nxt is None else nxt
        if backward_start is None and len(seen) > 20:
            backward_start = _all(repo, plan.id, reverse=True, limit=6)
    acked = [row for out in results(procs) for row in out]
    seen.extend(_all_from(repo, plan.id, cursor))
    assert len(acked) == workers * per_worker
    assert [e.id for e in seen] == sorted(r[0] for r in acked)  # once each, in order
    for job in ("job-a", "job-b"):
        seqs = sorted(r[2] for r in acked if r[1] == job)
        assert seqs == list(range(1, len(seqs) + 1))
    if backward_start is not None:  # a listing that began mid-way saw its snapshot once
        ids = [e.id for e in backward_start]
        assert ids == sorted(ids, reverse=True) and len(ids) == len(set(ids))
        assert ids[-1] == seen[0].id


def _all_from(repo, plan_id, cursor):
    out = []
    while True:
        page, cursor_next = repo.list_action_logs(plan_id, limit=50, cursor=cursor)
        out.extend(page)
        if cursor_next is None:
            return out
        cursor = cursor_next


def test_concurrent_appends_to_system_jobs_file(repo, db_root):
    procs = start_workers(db_root, "action", "none", 25, 3)
    go(db_root)
    acked = [row for out in results(procs) for row in out]
    entries = _all(repo, None, limit=20)
    assert sorted(e.id for e in entries) == sorted(r[0] for r in acked)
    for job in ("job-a", "job-b"):
        assert sorted(e.sequence for e in entries if e.job_id == job) == list(
            range(1, 1 + sum(1 for r in acked if r[1] == job)))


@pytest.fixture(scope="module")
def paged_root(tmp_path_factory):
    repo = PlanRepository(tmp_path_factory.mktemp("paged") / "db")
    plan = repo.create_plan("p")
    for i in range(40):
        _append(repo, plan.id, f"j{i % 3}", status=("ok", "failed")[i % 2])
    yield repo, plan.id
    repo.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(1, 12), reverse=st.booleans(),
       job=st.sampled_from([None, "j0", "j1", "j2"]),
       status=st.sampled_from([None, "ok", "failed"]))
def test_any_page_size_and_filter_lists_each_match_once(paged_root, limit, reverse, job,
                                                        status):
    repo, plan_id = paged_root
    everything = _all(repo, plan_id, limit=100)
    expected = [e.id for e in everything
                if (job is None or e.job_id == job) and (status is None or e.status == status)]
    got = [e.id for e in _all(repo, plan_id, limit=limit, reverse=reverse, job_id=job,
                              status=status)]
    assert got == (expected[::-1] if reverse else expected)
