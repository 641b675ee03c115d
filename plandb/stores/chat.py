"""Chat sessions, messages and chat action runs (tables in main/plan_registry.db).

A session bound to a plan stores the plan's title (``plan_title``) as it was when bound; reads
join the registry's ``plans`` row so callers see the live title while the plan exists, and the
stored one after it is gone. Messages page by keyset on their id like action logs.

Functions take a connection (inside the caller's transaction for writes) and never commit.
"""

from __future__ import annotations

from typing import Any

from .. import jsonutil, schema
from ..record_models import ChatActionRun, ChatMessage, ChatSession
from . import cursor as cursors
from .filters import equal_filters, where_sql

MESSAGE_SCOPE = "chat_messages"

_SESSION_SELECT = (
    "SELECT s.id, s.name, s.name_source, s.is_user_named, s.plan_id, "
    "coalesce(p.title, s.plan_title), s.current_task_id, s.current_task_name, "
    "s.last_message_at, s.metadata, s.is_active, s.created_at, s.updated_at "
    "FROM chat_sessions AS s LEFT JOIN plans AS p ON p.id = s.plan_id AND p.state = 'ready'"
)
# Columns update_session may set; keys come from the repository, never from callers.
SESSION_UPDATABLE = ("name", "name_source", "is_user_named", "plan_id", "plan_title",
                     "current_task_id", "current_task_name", "metadata", "is_active")
RUN_COLUMNS = ("id, session_id, plan_id, user_message, mode, status, context, history, "
               "structured, result, errors, created_at, updated_at, started_at, finished_at")
RUN_UPDATABLE = ("status", "result", "errors", "started_at", "finished_at", "context",
                 "history", "structured")


# The older planner's registry named the JSON columns of chat_action_runs *_json; adopting
# such a file copies them into the current names.
schema.LEGACY_RENAMES.setdefault("registry", {}).setdefault("chat_action_runs", {}).update({
    "context_json": "context", "history_json": "history", "structured_json": "structured",
    "result_json": "result", "errors_json": "errors"})


def _one(conn, sql: str, params: Any = ()) -> Any:
    for row in conn.execute(sql, params):
        return row
    return None


def _session(row: tuple) -> ChatSession:
    return ChatSession(
        id=row[0], name=row[1], name_source=row[2], is_user_named=bool(row[3]), plan_id=row[4],
        plan_title=row[5], current_task_id=row[6], current_task_name=row[7],
        last_message_at=row[8], metadata=jsonutil.loads(row[9], {}) or {},
        is_active=bool(row[10]), created_at=row[11], updated_at=row[12])


def _run(row: tuple) -> ChatActionRun:
    return ChatActionRun(
        id=row[0], session_id=row[1], plan_id=row[2], user_message=row[3], mode=row[4],
        status=row[5], context=jsonutil.loads(row[6]), history=jsonutil.loads(row[7]),
        structured=jsonutil.loads(row[8]), result=jsonutil.loads(row[9]),
        errors=jsonutil.loads(row[10]), created_at=row[11], updated_at=row[12],
        started_at=row[13], finished_at=row[14])


# --- plans, as chat sees them ------------------------------------------------------------------


def plan_title(conn, plan_id: int) -> str | None:
    """The title of a ready plan, or None if there is no such plan."""
    row = _one(conn, "SELECT title FROM plans WHERE id = +? AND state = 'ready'", (plan_id,))
    return None if row is None else row[0]


def forget_plan(conn, plan_id: int, stamp: str) -> None:
    """A plan was deleted: unbind its sessions (clearing their task) and its action runs."""
    conn.execute("UPDATE chat_sessions SET plan_id = NULL, plan_title = NULL, "
                 "current_task_id = NULL, current_task_name = NULL, updated_at = ? "
                 "WHERE plan_id = +?", (stamp, plan_id))
    conn.execute("UPDATE chat_action_runs SET plan_id = NULL WHERE plan_id = +?", (plan_id,))


# --- sessions ----------------------------------------------------------------------------------


def session_exists(conn, session_id: str) -> bool:
    return _one(conn, "SELECT 1 FROM chat_sessions WHERE id = +?", (session_id,)) is not None


def insert_session(conn, values: dict[str, Any]) -> None:
    cols = ("id", "name", "name_source", "is_user_named", "metadata", "plan_id", "plan_title",
            "current_task_id", "current_task_name", "is_active", "created_at", "updated_at")
    conn.execute(f"INSERT INTO chat_sessions ({', '.join(cols)}) "
                 f"VALUES ({', '.join('?' * len(cols))})", tuple(values[c] for c in cols))


def get_session(conn, session_id: str) -> ChatSession | None:
    row = _one(conn, _SESSION_SELECT + " WHERE s.id = +?", (session_id,))
    return None if row is None else _session(row)


def list_sessions(conn, *, plan_id: int | None, active: bool | None, limit: int,
                  offset: int) -> list[ChatSession]:
    """Most recently updated first."""
    where, params = equal_filters(
        (("s.plan_id", plan_id), ("s.is_active", None if active is None else int(active))))
    sql = (_SESSION_SELECT + where_sql(where)
           + " ORDER BY s.updated_at DESC, s.id DESC LIMIT ? OFFSET ?")
    return [_session(r) for r in conn.execute(sql, (*params, limit, offset))]


def update_session(conn, session_id: str, values: dict[str, Any], stamp: str) -> None:
    sets = [f"{k} = ?" for k in values if k in SESSION_UPDATABLE]
    assert len(sets) == len(values)
    conn.execute(f"UPDATE chat_sessions SET {', '.join(sets + ['updated_at = ?'])} "
                 "WHERE id = +?", (*values.values(), stamp, session_id))


def delete_session(conn, session_id: str, stamp: str) -> None:
    """Delete the session and its messages; its action runs stay, unlinked."""
    conn.execute("DELETE FROM chat_messages WHERE session_id = +?", (session_id,))
    conn.execute("UPDATE chat_action_runs SET session_id = NULL, updated_at = ? "
                 "WHERE session_id = +?", (stamp, session_id))
    conn.execute("DELETE FROM chat_sessions WHERE id = +?", (session_id,))


# --- messages ----------------------------------------------------------------------------------


def append_message(conn, session_id: str, role: str, content: str, metadata: str | None,
                   stamp: str) -> ChatMessage:
    conn.execute("INSERT INTO chat_messages (session_id, role, content, metadata, created_at) "
                 "VALUES (?, ?, ?, ?, ?)", (session_id, role, content, metadata, stamp))
    msg_id = conn.last_insert_rowid()
    conn.execute("UPDATE chat_sessions SET last_message_at = max(coalesce(last_message_at, ''), "
                 "?), updated_at = max(updated_at, ?) WHERE id = +?", (stamp, stamp, session_id))
    return ChatMessage(msg_id, session_id, role, content, jsonutil.loads(metadata, {}) or {},
                       stamp)


def page_messages(conn, session_id: str, *, after: int | None, descending: bool, limit: int,
                  role: str | None) -> tuple[list[ChatMessage], str | None]:
    where, params = ["session_id = +?"], [session_id]
    if after is not None:
        where.append("id < ?" if descending else "id > ?")
        params.append(after)
    if role is not None:
        where.append("role = ?")
        params.append(role)
    sql = ("SELECT id, session_id, role, content, metadata, created_at FROM chat_messages "
           f"WHERE {' AND '.join(where)} ORDER BY id {'DESC' if descending else 'ASC'} LIMIT ?")
    rows = conn.execute(sql, (*params, limit + 1)).fetchall()
    rows, nxt = cursors.page(rows, limit, MESSAGE_SCOPE, descending)
    return [ChatMessage(r[0], r[1], r[2], r[3], jsonutil.loads(r[4], {}) or {}, r[5])
            for r in rows], nxt


def count_messages(conn, session_id: str) -> int:
    return _one(conn, "SELECT count(*) FROM chat_messages WHERE session_id = +?",
                (session_id,))[0]


# --- action runs -------------------------------------------------------------------------------


def insert_run(conn, values: dict[str, Any]) -> None:
    cols = ("id", "session_id", "plan_id", "user_message", "mode", "status", "context",
            "history", "structured", "created_at", "updated_at")
    conn.execute(f"INSERT INTO chat_action_runs ({', '.join(cols)}) "
                 f"VALUES ({', '.join('?' * len(cols))})", tuple(values[c] for c in cols))


def get_run(conn, run_id: str) -> ChatActionRun | None:
    row = _one(conn, f"SELECT {RUN_COLUMNS} FROM chat_action_runs WHERE id = +?", (run_id,))
    return None if row is None else _run(row)


def update_run(conn, run_id: str, values: dict[str, Any], stamp: str) -> None:
    sets = [f"{k} = ?" for k in values if k in RUN_UPDATABLE]
    assert len(sets) == len(values)
    conn.execute(f"UPDATE chat_action_runs SET {', '.join(sets + ['updated_at = ?'])} "
                 "WHERE id = +?", (*values.values(), stamp, run_id))


def list_runs(conn, *, session_id: str | None, status: str | None, plan_id: int | None,
              limit: int, offset: int) -> list[ChatActionRun]:
    """Newest first (created_at, then id)."""
    where, params = equal_filters(
        (("session_id", session_id), ("status", status), ("plan_id", plan_id)))
    sql = (f"SELECT {RUN_COLUMNS} FROM chat_action_runs" + where_sql(where)
           + " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?")
    return [_run(r) for r in conn.execute(sql, (*params, limit, offset))]
