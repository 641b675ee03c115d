"""Chat sessions, messages and chat action runs in the registry."""

from __future__ import annotations

import pytest
from records_support import go, results, start_workers

from plandb import InvalidId, InvalidInput, PlanNotFound, RecordNotFound
from plandb.errors import RecordConflict


@pytest.fixture
def plan(repo):
    return repo.create_plan("Launch")


def _all_messages(repo, sid, *, reverse=False, limit=4, role=None):
    seen, cursor = [], None
    while True:
        page, cursor = repo.list_chat_messages(sid, limit=limit, cursor=cursor,
                                               reverse=reverse, role=role)
        seen.extend(page)
        if cursor is None:
            return seen


def test_session_round_trip(repo, plan):
    s = repo.create_chat_session("sess-1", name="Planning chat", name_source="user",
                                 is_user_named=True, plan_id=plan.id,
                                 metadata={"lang": "de", "city": "Zürich"})
    assert (s.id, s.name, s.name_source, s.is_user_named, s.plan_id, s.plan_title) == (
        "sess-1", "Planning chat", "user", True, plan.id, "Launch")
    assert s.metadata == {"lang": "de", "city": "Zürich"} and s.is_active
    assert repo.get_chat_session("sess-1") == s
    fresh = repo.create_chat_session()
    assert len(fresh.id) == 32 and fresh.plan_id is None and fresh.plan_title is None
    assert s.to_dict()["plan_title"] == "Launch"


def test_update_bind_unbind(repo, plan):
    other = repo.create_plan("Other plan")
    repo.create_chat_session("s", plan_id=plan.id)
    s = repo.update_chat_session("s", current_task_id=4, current_task_name="Design",
                                 is_active=False, metadata={"k": 1}, name="n")
    assert (s.current_task_id, s.current_task_name, s.is_active, s.metadata, s.name) == (
        4, "Design", False, {"k": 1}, "n")
    assert repo.bind_chat_session("s", plan.id).current_task_id == 4  # same plan: task kept
    s = repo.bind_chat_session("s", other.id)
    assert (s.plan_id, s.plan_title, s.current_task_id) == (other.id, "Other plan", None)
    s = repo.update_chat_session("s", current_task_id=9, current_task_name="x")
    s = repo.update_chat_session("s", clear_current_task=True)
    assert (s.current_task_id, s.current_task_name) == (None, None)
    s = repo.unbind_chat_session("s")
    assert (s.plan_id, s.plan_title) == (None, None)
    with pytest.raises(InvalidInput):
        repo.update_chat_session("s", clear_current_task=True, current_task_id=1)


def test_plan_title_follows_the_plan(repo, plan):
    repo.create_chat_session("s", plan_id=plan.id)
    repo.update_plan(plan.id, title="Launch v2")
    assert repo.get_chat_session("s").plan_title == "Launch v2"
    repo.create_chat_action_run(user_message="go", session_id="s", plan_id=plan.id)
    repo.delete_plan(plan.id)
    s = repo.get_chat_session("s")
    assert (s.plan_id, s.plan_title) == (None, None)
    assert repo.list_chat_action_runs(session_id="s")[0].plan_id is None


def test_list_by_recency_and_plan(repo, plan):
    for sid in ("a", "b", "c"):
        repo.create_chat_session(sid, plan_id=plan.id if sid != "b" else None)
    assert [s.id for s in repo.list_chat_sessions()] == ["c", "b", "a"]
    repo.append_chat_message("a", role="user", content="hello")
    assert [s.id for s in repo.list_chat_sessions()] == ["a", "c", "b"]
    assert [s.id for s in repo.list_chat_sessions(plan_id=plan.id)] == ["a", "c"]
    repo.update_chat_session("c", is_active=False)
    assert [s.id for s in repo.list_chat_sessions(active=True)] == ["a", "b"]
    assert [s.id for s in repo.list_chat_sessions(limit=1, offset=1)] == ["a"]


def test_typed_errors(repo, plan):
    repo.create_chat_session("s")
    with pytest.raises(RecordConflict):
        repo.create_chat_session("s")
    with pytest.raises(PlanNotFound):
        repo.create_chat_session("t", plan_id=plan.id + 9)
    with pytest.raises(RecordNotFound):
        repo.get_chat_session("t")  # the failed create left nothing behind
    for call in (lambda: repo.get_chat_session("nope"),
                 lambda: repo.update_chat_session("nope", name="x"),
                 lambda: repo.bind_chat_session("nope", plan.id),
                 lambda: repo.unbind_chat_session("nope"),
                 lambda: repo.delete_chat_session("nope"),
                 lambda: repo.append_chat_message("nope", role="user", content="x"),
                 lambda: repo.list_chat_messages("nope"),
                 lambda: repo.get_chat_action_run("nope"),
                 lambda: repo.update_chat_action_run("nope", status="x"),
                 lambda: repo.create_chat_action_run(user_message="x", session_id="nope")):
        with pytest.raises(RecordNotFound):
            call()
    with pytest.raises(PlanNotFound):
        repo.bind_chat_session("s", plan.id + 9)
    with pytest.raises(PlanNotFound):
        repo.create_chat_action_run(user_message="x", plan_id=plan.id + 9)
    with pytest.raises(InvalidId):
        repo.get_chat_session("")
    with pytest.raises(InvalidId):
        repo.bind_chat_session("s", "1")
    with pytest.raises(InvalidInput):
        repo.append_chat_message("s", role="robot", content="x")
    with pytest.raises(InvalidInput):
        repo.append_chat_message("s", role="user", content=None)
    with pytest.raises(InvalidInput):
        repo.create_chat_session("u", metadata="not a dict")
    with pytest.raises(InvalidInput):
        repo.create_chat_session("u", name="n" * 501)
    assert repo.count_chat_messages("s") == 0
    assert [s.id for s in repo.list_chat_sessions()] == ["s"]


def test_messages_append_and_page_both_ways(repo):
    repo.create_chat_session("s")
    roles = ["user", "assistant", "system", "tool"]
    msgs = [repo.append_chat_message("s", role=roles[i % 4], content=f"m{i}",
                                     metadata={"i": i}) for i in range(11)]
    assert _all_messages(repo, "s") == msgs
    assert _all_messages(repo, "s", reverse=True, limit=3) == msgs[::-1]
    assert [m.content for m in _all_messages(repo, "s", role="tool")] == ["m3", "m7"]
    assert repo.get_chat_session("s").last_message_at == msgs[-1].created_at
    assert repo.count_chat_messages("s") == 11
    old = repo.append_chat_message("s", role="user", content="imported",
                                   created_at="2020-01-01T00:00:00Z")
    assert old.created_at == "2020-01-01T00:00:00.000000Z"
    assert repo.get_chat_session("s").last_message_at == msgs[-1].created_at  # never back


def test_delete_session_removes_messages_keeps_runs(repo):
    repo.create_chat_session("s")
    repo.append_chat_message("s", role="user", content="hi")
    run = repo.create_chat_action_run(user_message="do it", session_id="s")
    repo.add_memory("s", content="remember me")
    path = repo.config.session_db_path("s")
    repo.delete_chat_session("s", drop_memory=True)
    with pytest.raises(RecordNotFound):
        repo.get_chat_session("s")
    assert repo.get_chat_action_run(run.id).session_id is None
    assert not path.exists()
    repo.create_chat_session("s")  # the id can be used again, with no old messages
    assert repo.count_chat_messages("s") == 0


def test_action_runs_lifecycle(repo, plan):
    repo.create_chat_session("s")
    run = repo.create_chat_action_run(
        run_id="run-1", user_message="create tasks", session_id="s", plan_id=plan.id,
        mode="structured", context={"plan": plan.id}, history=[{"role": "user"}],
        structured={"actions": [{"kind": "tool_operation", "name": "create"}]})
    assert (run.status, run.started_at, run.finished_at) == ("pending", None, None)
    assert run.structured["actions"][0]["name"] == "create"
    running = repo.update_chat_action_run("run-1", status="running")
    assert running.started_at is not None and running.finished_at is None
    done = repo.update_chat_action_run("run-1", status="completed", result={"ok": True},
                                       errors=[])
    assert done.started_at == running.started_at and done.finished_at is not None
    assert (done.result, done.errors) == ({"ok": True}, [])
    explicit = repo.update_chat_action_run("run-1", finished_at="2030-01-01T00:00:00Z")
    assert explicit.finished_at == "2030-01-01T00:00:00.000000Z"
    with pytest.raises(RecordConflict):
        repo.create_chat_action_run(run_id="run-1", user_message="again")
    quick = repo.create_chat_action_run(user_message="fail fast")
    failed = repo.update_chat_action_run(quick.id, status="failed", errors=["timeout"])
    assert failed.started_at is not None and failed.finished_at is not None
    assert [r.id for r in repo.list_chat_action_runs()] == [quick.id, "run-1"]
    assert [r.id for r in repo.list_chat_action_runs(status="failed")] == [quick.id]
    assert [r.id for r in repo.list_chat_action_runs(session_id="s")] == ["run-1"]
    assert [r.id for r in repo.list_chat_action_runs(plan_id=plan.id)] == ["run-1"]


def test_concurrent_message_appends_page_exactly_once(repo, db_root):
    repo.create_chat_session("shared")
    procs = start_workers(db_root, "message", "shared", 30, 3)
    go(db_root)
    seen, cursor = [], None
    while any(p.poll() is None for p in procs):
        page, nxt = repo.list_chat_messages("shared", limit=4, cursor=cursor)
        seen.extend(page)
        if nxt is not None:
            cursor = nxt
        elif page:
            cursor = repo.chat_message_cursor(page[-1].id)  # resume after the last seen
    acked = sorted(i for out in results(procs) for i in out)
    while True:
        page, nxt = repo.list_chat_messages("shared", limit=4, cursor=cursor)
        seen.extend(page)
        if nxt is None:
            break
        cursor = nxt
    assert [m.id for m in seen] == acked
    assert repo.count_chat_messages("shared") == 90
