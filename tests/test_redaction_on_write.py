"""Every record write path redacts before writing: a secret planted in each payload field never
reaches any byte of any file under DB_ROOT (databases, -wal, -shm), while the repository is
open (the WAL holds the newest pages) and after it is closed."""

from __future__ import annotations

import secrets
import string

import pytest
from records_support import raw_bytes

from plandb import InvalidId, PlanRepository

_ALNUM = string.ascii_letters + string.digits


class Planted:
    """Hands out a distinct fake secret per payload field and remembers where it went."""

    def __init__(self) -> None:
        self.cores: dict[str, str] = {}

    def _core(self, field: str) -> str:
        core = "".join(secrets.choice(_ALNUM) for _ in range(40))
        self.cores[field] = core
        return core

    def key(self, field: str) -> str:
        return f"sk-proj-{self._core(field)}"

    def bearer(self, field: str) -> str:
        return f"curl -H 'Authorization: Bearer {self._core(field)}' https://api.example.com"

    def github(self, field: str) -> str:
        return f"token ghp_{self._core(field)[:36]} in a sentence"

    def leaked(self, data: bytes) -> list[str]:
        return sorted(f for f, core in self.cores.items() if core.encode() in data)


def _write_everything(repo: PlanRepository, s: Planted) -> None:
    plan = repo.create_plan("Redaction")
    for where in (plan.id, None):
        tag = f"{where}"
        job_id = f"job-{tag}"
        repo.record_decomposition_job(
            where, job_id=job_id, mode=s.key(f"job.mode.{tag}"),
            status=s.github(f"job.status.{tag}"),
            params={"prompt": s.bearer(f"job.params.{tag}")},
            metadata={"api_key": "plain-looking-value-1", "note": s.key(f"job.meta.{tag}")})
        repo.update_decomposition_job_status(
            where, job_id=job_id, error=s.bearer(f"job.error.{tag}"),
            stats={"headers": {"Authorization": s.bearer(f"job.stats.{tag}")}},
            result={"out": [s.key(f"job.result.{tag}")]})
        repo.append_decomposition_job_log(where, job_id=job_id,
                                          message=s.bearer(f"joblog.msg.{tag}"),
                                          metadata={"k": s.key(f"joblog.meta.{tag}")})
        repo.append_action_log(
            plan_id=where, job_id=job_id, job_type=s.key(f"act.job_type.{tag}"),
            session_id="sess", user_message=s.bearer(f"act.user_message.{tag}"),
            action_kind=s.key(f"act.kind.{tag}"), action_name=s.key(f"act.name.{tag}"),
            status=s.key(f"act.status.{tag}"), success=False,
            message=s.github(f"act.message.{tag}"),
            parameters={"password": "hunter2-hunter2", "q": s.key(f"act.params.{tag}")},
            details={"trace": s.bearer(f"act.details.{tag}")})
    repo.create_chat_session("sess", name=s.key("chat.name"),
                             name_source=s.key("chat.name_source"), plan_id=plan.id,
                             metadata={"token": "tok-value-1234567", "x": s.key("chat.meta")})
    repo.update_chat_session("sess", current_task_name=s.bearer("chat.task_name"),
                             current_task_id=1)
    repo.append_chat_message("sess", role="user", content=s.bearer("chat.msg"),
                             metadata={"m": s.github("chat.msg_meta")})
    run = repo.create_chat_action_run(
        user_message=s.key("run.user_message"), session_id="sess", mode=s.key("run.mode"),
        context={"c": s.bearer("run.context")}, history=[s.key("run.history")],
        structured={"s": s.github("run.structured")})
    repo.update_chat_action_run(run.id, status="failed", result={"r": s.key("run.result")},
                                errors=[s.bearer("run.errors")])
    for sid in ("sess", None):
        tag = f"{sid}"
        m = repo.add_memory(sid, content=s.bearer(f"mem.content.{tag}"),
                            memory_type=s.key(f"mem.type.{tag}"),
                            importance=s.key(f"mem.importance.{tag}"),
                            keywords=[s.key(f"mem.keywords.{tag}")],
                            tags=[s.github(f"mem.tags.{tag}")],
                            context=s.bearer(f"mem.context.{tag}"),
                            metadata={"secret": "shh-value-1234", "v": s.key(f"mem.meta.{tag}")},
                            embedding=[0.5, 0.25], embedding_model=s.key(f"mem.model.{tag}"))
        repo.update_memory(sid, m.id, content=s.github(f"mem.update.{tag}"),
                           keywords=[s.bearer(f"mem.update_kw.{tag}")])
        repo.set_memory_embedding(sid, m.id, [1.0, 2.0], model=s.key(f"mem.model2.{tag}"))
    llm = repo.cache("llm")
    assert llm.put(s.key("cache.model"), "prompt", {"text": s.bearer("cache.value")})
    assert llm.put("m", "prompt2", s.key("cache.str_value"))
    assert repo.cache("embedding").put("m", s.key("cache.input_is_hashed"), [0.1, 0.2])


def test_no_planted_secret_reaches_any_file(db_root):
    planted = Planted()
    repo = PlanRepository(db_root)
    try:
        _write_everything(repo, planted)
        assert len(planted.cores) > 60
        # While open: the newest pages are in the -wal files.
        assert planted.leaked(raw_bytes(db_root)) == []
        # The values callers read back are the redacted ones.
        assert "[REDACTED]" in repo.load_decomposition_job(None, "job-None").error
        msgs, _ = repo.list_chat_messages("sess")
        assert "[REDACTED]" in msgs[0].content and "Bearer" in msgs[0].content
        assert repo.list_memories(None)[0].metadata["secret"] == "[REDACTED]"
        assert repo.cache("llm").get("m", "prompt2") == "[REDACTED]"
        entry = repo.list_action_logs(None)[0][0]
        assert entry.parameters == {"password": "[REDACTED]", "q": "[REDACTED]"}
    finally:
        repo.close()
    data = raw_bytes(db_root)
    assert planted.leaked(data) == []
    for plain in (b"plain-looking-value-1", b"hunter2-hunter2", b"tok-value-1234567",
                  b"shh-value-1234"):
        assert plain not in data  # values under sensitive key names


@pytest.mark.parametrize("call", [
    lambda r, k: r.record_decomposition_job(None, job_id=k),
    lambda r, k: r.append_action_log(plan_id=None, job_id=k, action_kind="a",
                                     action_name="b", status="c"),
    lambda r, k: r.create_chat_session(k),
    lambda r, k: r.add_memory(None, content="x", memory_id=k),
    lambda r, k: r.add_memory(k, content="x"),
    lambda r, k: r.create_chat_action_run(user_message="x", run_id=k),
])
def test_ids_shaped_like_secrets_are_refused(repo, db_root, call):
    key = "sk-proj-" + "".join(secrets.choice(_ALNUM) for _ in range(40))
    with pytest.raises(InvalidId):
        call(repo, key)
    repo.close()
    assert key[8:].encode() not in raw_bytes(db_root)
