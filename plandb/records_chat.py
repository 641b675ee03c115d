"""Chat sessions, messages and chat action runs, all in main/plan_registry.db.

Sessions carry a plan binding (plan id + the plan's title, denormalised), the current task,
``last_message_at``, metadata and an active flag. Messages are appended in order and listed a
page at a time with an opaque cursor. Chat action runs record asynchronous structured calls
started from chat: their input, status, result and errors with started/finished stamps.
Every text and JSON payload passes through the redaction layer before it is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import apsw

from .config import check_plan_id
from .errors import InvalidInput, PlanNotFound, RecordConflict, RecordNotFound
from .record_models import ChatActionRun, ChatMessage, ChatSession
from .records_common import (
    label,
    limit_arg,
    new_id,
    offset_arg,
    opt_bool,
    opt_int,
    opt_label,
    opt_stamp,
    record_id,
)
from .stores import chat
from .stores import cursor as cursors
from .timestamps import now
from .transaction import read, write

ROLES = ("user", "assistant", "system", "tool")
# Statuses that stamp started_at / finished_at when a run enters them without explicit times.
RUN_STARTED = frozenset({"running", "in_progress", "started"})
RUN_FINISHED = frozenset({"completed", "succeeded", "success", "failed", "error", "cancelled",
                          "canceled", "timeout", "skipped"})
_NAME_MAX = 500


class ChatMixin:
    """Chat records (mixed into PlanRepository)."""

    @contextmanager
    def _chat_write(self) -> Iterator[apsw.Connection]:
        """A registry write transaction, yielding the connection."""
        with self._registry() as conn, write(conn, self.config.main_db_path,
                                             retries=self.config.write_retries):
            yield conn

    def _bound_title(self, conn, plan_id: int) -> str:
        title = chat.plan_title(conn, check_plan_id(plan_id))
        if title is None:
            raise PlanNotFound(plan_id)
        return title

    # --- sessions ----------------------------------------------------------------------------

    def create_chat_session(
        self, session_id: str | None = None, *, name: str | None = None,
        name_source: str | None = None, is_user_named: bool = False,
        plan_id: int | None = None, metadata: dict[str, Any] | None = None,
        is_active: bool = True,
    ) -> ChatSession:
        """Create a session (a fresh id when `session_id` is None). RecordConflict if the id
        is taken; PlanNotFound if `plan_id` names no plan."""
        p = self.payloads
        sid = new_id() if session_id is None else record_id(session_id, "session id", p)
        values = {
            "id": sid,
            "name": _name(name, p),
            "name_source": opt_label(name_source, "name_source", p),
            "is_user_named": int(bool(opt_bool(is_user_named, "is_user_named"))),
            "metadata": p.json_object(metadata),
            "plan_id": None, "plan_title": None,
            "current_task_id": None, "current_task_name": None,
            "is_active": int(bool(opt_bool(is_active, "is_active"))),
        }
        stamp = now()
        values["created_at"] = values["updated_at"] = stamp
        with self._chat_write() as conn:
            if chat.session_exists(conn, sid):
                raise RecordConflict("chat session", sid, "already exists")
            if plan_id is not None:
                values["plan_id"] = plan_id
                values["plan_title"] = self._bound_title(conn, plan_id)
            chat.insert_session(conn, values)
            return chat.get_session(conn, sid)

    def get_chat_session(self, session_id: str) -> ChatSession:
        """One session (RecordNotFound if absent)."""
        sid = record_id(session_id, "session id", self.payloads)
        with self._registry() as conn:
            session = chat.get_session(conn, sid)
        if session is None:
            raise RecordNotFound("chat session", sid)
        return session

    def list_chat_sessions(self, *, plan_id: int | None = None, active: bool | None = None,
                           limit: int = 50, offset: int = 0) -> list[ChatSession]:
        """Sessions, most recently updated (or messaged) first; filters: bound to one plan,
        active or not."""
        if plan_id is not None:
            check_plan_id(plan_id)
        opt_bool(active, "active")
        limit, offset = limit_arg(limit), offset_arg(offset)
        with self._registry() as conn:
            return chat.list_sessions(conn, plan_id=plan_id, active=active, limit=limit,
                                      offset=offset)

    def update_chat_session(
        self, session_id: str, *, name: str | None = None, name_source: str | None = None,
        is_user_named: bool | None = None, current_task_id: int | None = None,
        current_task_name: str | None = None, clear_current_task: bool = False,
        metadata: dict[str, Any] | None = None, is_active: bool | None = None,
    ) -> ChatSession:
        """Change the given fields (None = unchanged; `clear_current_task` unsets the task).
        Use bind/unbind_chat_session for the plan."""
        p = self.payloads
        sid = record_id(session_id, "session id", p)
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = _name(name, p)
        if name_source is not None:
            values["name_source"] = label(name_source, "name_source", p)
        if is_user_named is not None:
            values["is_user_named"] = int(opt_bool(is_user_named, "is_user_named"))
        if clear_current_task:
            if current_task_id is not None or current_task_name is not None:
                raise InvalidInput("clear_current_task with a current task: choose one")
            values["current_task_id"] = values["current_task_name"] = None
        if current_task_id is not None:
            values["current_task_id"] = opt_int(current_task_id, "current_task_id")
        if current_task_name is not None:
            values["current_task_name"] = p.text(current_task_name, "current_task_name")
        if metadata is not None:
            values["metadata"] = p.json_object(metadata)
        if is_active is not None:
            values["is_active"] = int(opt_bool(is_active, "is_active"))
        return self._change_session(sid, values)

    def _change_session(self, sid: str, values: dict[str, Any]) -> ChatSession:
        with self._chat_write() as conn:
            if not chat.session_exists(conn, sid):
                raise RecordNotFound("chat session", sid)
            if values:
                chat.update_session(conn, sid, values, now())
            return chat.get_session(conn, sid)

    def bind_chat_session(self, session_id: str, plan_id: int) -> ChatSession:
        """Bind a session to a plan, storing the plan's title; binding to another plan than
        before clears the current task. PlanNotFound / RecordNotFound for unknown ids."""
        sid = record_id(session_id, "session id", self.payloads)
        check_plan_id(plan_id)
        with self._chat_write() as conn:
            session = chat.get_session(conn, sid)
            if session is None:
                raise RecordNotFound("chat session", sid)
            values: dict[str, Any] = {"plan_id": plan_id,
                                      "plan_title": self._bound_title(conn, plan_id)}
            if session.plan_id != plan_id:
                values["current_task_id"] = values["current_task_name"] = None
            chat.update_session(conn, sid, values, now())
            return chat.get_session(conn, sid)

    def unbind_chat_session(self, session_id: str) -> ChatSession:
        """Remove a session's plan binding (and its current task)."""
        sid = record_id(session_id, "session id", self.payloads)
        return self._change_session(sid, {"plan_id": None, "plan_title": None,
                                          "current_task_id": None, "current_task_name": None})

    def delete_chat_session(self, session_id: str, *, drop_memory: bool = False) -> None:
        """Delete a session and its messages (its action runs stay, unlinked). With
        `drop_memory`, also remove its memory file if no one has it open (see
        `cleanup_idle_sessions`). RecordNotFound if absent."""
        sid = record_id(session_id, "session id", self.payloads)
        with self._registry() as conn:
            if not chat.session_exists(conn, sid):
                raise RecordNotFound("chat session", sid)
        if drop_memory:  # first: if the file is in use this raises and nothing has changed
            self.drop_session_memory(sid)
        with self._chat_write() as conn:
            if not chat.session_exists(conn, sid):
                raise RecordNotFound("chat session", sid)
            chat.delete_session(conn, sid, now())

    # --- messages ----------------------------------------------------------------------------

    def append_chat_message(self, session_id: str, *, role: str, content: str,
                            metadata: dict[str, Any] | None = None,
                            created_at: Any = None) -> ChatMessage:
        """Append a message (role: user, assistant, system or tool) and move the session's
        last_message_at. RecordNotFound if the session does not exist."""
        p = self.payloads
        sid = record_id(session_id, "session id", p)
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        text = p.text(content, "content")
        if text is None:
            raise InvalidInput("content must be a string")
        meta_json = p.json_object(metadata)
        stamp = opt_stamp(created_at) or now()
        with self._chat_write() as conn:
            if not chat.session_exists(conn, sid):
                raise RecordNotFound("chat session", sid)
            return chat.append_message(conn, sid, role, text, meta_json, stamp)

    def list_chat_messages(self, session_id: str, *, limit: int = 100,
                           cursor: str | None = None, reverse: bool = False,
                           role: str | None = None) -> tuple[list[ChatMessage], str | None]:
        """One page of a session's messages (oldest first; reverse=True newest first) and the
        next page's cursor (None at the end). Same cursor rules as `list_action_logs`."""
        sid = record_id(session_id, "session id", self.payloads)
        limit = limit_arg(limit)
        reverse = bool(reverse)
        after = None if cursor is None else cursors.decode(cursor, chat.MESSAGE_SCOPE, reverse)
        with self._registry() as conn, read(conn, self.config.main_db_path):
            if not chat.session_exists(conn, sid):
                raise RecordNotFound("chat session", sid)
            return chat.page_messages(conn, sid, after=after, descending=reverse, limit=limit,
                                      role=role)

    @staticmethod
    def chat_message_cursor(after_id: int, *, reverse: bool = False) -> str:
        """A cursor continuing a message listing after message id `after_id`."""
        if isinstance(after_id, bool) or not isinstance(after_id, int) or after_id < 0:
            raise InvalidInput(f"after_id must be a non-negative integer, got {after_id!r}")
        return cursors.encode(chat.MESSAGE_SCOPE, after_id, bool(reverse))

    def count_chat_messages(self, session_id: str) -> int:
        sid = record_id(session_id, "session id", self.payloads)
        with self._registry() as conn, read(conn, self.config.main_db_path):
            if not chat.session_exists(conn, sid):
                raise RecordNotFound("chat session", sid)
            return chat.count_messages(conn, sid)

    # --- action runs -------------------------------------------------------------------------

    def create_chat_action_run(
        self, *, user_message: str, run_id: str | None = None, session_id: str | None = None,
        plan_id: int | None = None, mode: str | None = None, context: Any = None,
        history: Any = None, structured: Any = None, status: str = "pending",
    ) -> ChatActionRun:
        """Record a new action run (fresh id when `run_id` is None). RecordNotFound /
        PlanNotFound for an unknown session or plan; RecordConflict for a taken id."""
        p = self.payloads
        rid = new_id() if run_id is None else record_id(run_id, "run id", p)
        values = {
            "id": rid,
            "session_id": None if session_id is None else record_id(session_id, "session id", p),
            "plan_id": None if plan_id is None else check_plan_id(plan_id),
            "user_message": p.text(user_message, "user_message"),
            "mode": opt_label(mode, "mode", p),
            "status": label(status, "status", p),
            "context": p.json(context),
            "history": p.json(history),
            "structured": p.json(structured),
        }
        stamp = now()
        values["created_at"] = values["updated_at"] = stamp
        with self._chat_write() as conn:
            if chat.get_run(conn, rid) is not None:
                raise RecordConflict("chat action run", rid, "already exists")
            if values["session_id"] is not None and not chat.session_exists(
                    conn, values["session_id"]):
                raise RecordNotFound("chat session", values["session_id"])
            if plan_id is not None:
                self._bound_title(conn, plan_id)
            chat.insert_run(conn, values)
            return chat.get_run(conn, rid)

    def update_chat_action_run(
        self, run_id: str, *, status: str | None = None, result: Any = None,
        errors: Any = None, started_at: Any = None, finished_at: Any = None,
        structured: Any = None,
    ) -> ChatActionRun:
        """Change status/result/errors (None = unchanged). Entering a running status stamps
        started_at, entering a final one (completed, failed, cancelled...) stamps finished_at,
        unless given or already set. RecordNotFound if absent."""
        p = self.payloads
        rid = record_id(run_id, "run id", p)
        values: dict[str, Any] = {}
        if status is not None:
            values["status"] = label(status, "status", p)
        if result is not None:
            values["result"] = p.json(result)
        if errors is not None:
            values["errors"] = p.json(errors)
        if structured is not None:
            values["structured"] = p.json(structured)
        started, finished = opt_stamp(started_at), opt_stamp(finished_at)
        stamp = now()
        with self._chat_write() as conn:
            run = chat.get_run(conn, rid)
            if run is None:
                raise RecordNotFound("chat action run", rid)
            state = (status or "").lower()
            if started is None and run.started_at is None and (
                    state in RUN_STARTED or state in RUN_FINISHED):
                started = stamp
            if finished is None and run.finished_at is None and state in RUN_FINISHED:
                finished = stamp
            if started is not None:
                values["started_at"] = started
            if finished is not None:
                values["finished_at"] = finished
            if values:
                chat.update_run(conn, rid, values, stamp)
            return chat.get_run(conn, rid)

    def get_chat_action_run(self, run_id: str) -> ChatActionRun:
        rid = record_id(run_id, "run id", self.payloads)
        with self._registry() as conn:
            run = chat.get_run(conn, rid)
        if run is None:
            raise RecordNotFound("chat action run", rid)
        return run

    def list_chat_action_runs(self, *, session_id: str | None = None, status: str | None = None,
                              plan_id: int | None = None, limit: int = 100,
                              offset: int = 0) -> list[ChatActionRun]:
        """Action runs newest first, filtered by session, status and/or plan."""
        if session_id is not None:
            session_id = record_id(session_id, "session id", self.payloads)
        if plan_id is not None:
            check_plan_id(plan_id)
        limit, offset = limit_arg(limit), offset_arg(offset)
        with self._registry() as conn:
            return chat.list_runs(conn, session_id=session_id, status=status, plan_id=plan_id,
                                  limit=limit, offset=offset)


def _name(value: Any, payloads) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _NAME_MAX or "\x00" in value:
        raise InvalidInput(f"name must be a string of at most {_NAME_MAX} characters")
    return payloads.text(value, "name")
