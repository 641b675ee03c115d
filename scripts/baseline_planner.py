"""The baseline: the access pattern of the planner code plandb replaces (issue 8).

Written from the issue's description, on purpose without plandb's fixes:

- stdlib `sqlite3`; every plan-file call opens a new connection and closes it;
- plan files stay in SQLite's default rollback journal with ``synchronous=FULL``;
- the registry is one pooled connection in WAL (stdlib default ``synchronous=FULL``);
- `create_task` reads its parent, inserts, then rewrites the position of every sibling in
  order ("resequence"), all in one transaction;
- every task write also updates the plan's ``updated_at`` in the registry (its own commit);
- every write then re-reads the node (another plan-file call: another connection);
- `list_plans` opens every plan file to count its tasks;
- `create_plan` runs its DDL one statement at a time, each committing on its own.

It uses plandb's schema (from ``schemas/``) so that the same rows and indexes are written;
only the access pattern differs. Action logs are JSON-encoded without redaction (the old code
had none), and paged with LIMIT/OFFSET.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from floor import schema_sql

_TASK_COLS = (
    "id, name, status, instruction, parent_id, position, path, depth, metadata, "
    "execution_result, context_combined, context_sections, context_meta, context_updated_at, "
    "created_at, updated_at"
)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _statements(sql: str) -> list[str]:
    """Split a schema script into single statements (what the old code executed one by one)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            stmt = buf.strip()
            if stmt and not all(
                    ln.strip().startswith("--") or not ln.strip() for ln in stmt.splitlines()):
                out.append(stmt)
            buf = ""
    return out


def _loads(text: str | None, default: Any) -> Any:
    return json.loads(text) if text else default


class BaselinePlanner:
    """The old planner's storage calls, over a root laid out like plandb's."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "main").mkdir(parents=True, exist_ok=True)
        (self.root / "plans").mkdir(parents=True, exist_ok=True)
        # The one pooled connection: the registry, in WAL.
        self.registry = sqlite3.connect(self.root / "main" / "plan_registry.db",
                                        isolation_level=None, check_same_thread=False)
        self.registry.execute("PRAGMA journal_mode=WAL")
        if not self.registry.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'plans'").fetchall():
            self.registry.executescript(schema_sql("registry"))
        self.plan_ddl = _statements(schema_sql("plan"))

    def close(self) -> None:
        self.registry.close()

    def plan_path(self, plan_id: int) -> Path:
        return self.root / "plans" / f"plan_{plan_id}.sqlite"

    def _connect(self, plan_id: int) -> sqlite3.Connection:
        """A fresh connection per call, default rollback journal, synchronous=FULL."""
        path = self.plan_path(plan_id)
        if not path.exists():
            raise KeyError(f"plan {plan_id} not found")
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _touch_registry(self, plan_id: int) -> None:
        self.registry.execute("UPDATE plans SET updated_at = ? WHERE id = ?", (now(), plan_id))

    # --- plans ------------------------------------------------------------------------------

    def create_plan(self, title: str) -> int:
        stamp = now()
        cur = self.registry.execute(
            "INSERT INTO plans (title, plan_file, state, created_at, updated_at) "
            "VALUES (?, '', 'ready', ?, ?)", (title, stamp, stamp))
        plan_id = cur.lastrowid
        self.registry.execute("UPDATE plans SET plan_file = ? WHERE id = ?",
                              (f"plans/plan_{plan_id}.sqlite", plan_id))
        conn = sqlite3.connect(self.plan_path(plan_id), isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            for stmt in self.plan_ddl:  # autocommit: each statement is its own transaction
                conn.execute(stmt)
            for key, value in (("kind", "plan"), ("plan_id", str(plan_id)), ("title", title),
                               ("created_at", stamp), ("updated_at", stamp)):
                conn.execute("INSERT INTO plan_meta (key, value) VALUES (?, ?)", (key, value))
        finally:
            conn.close()
        return plan_id

    def list_plans(self) -> list[dict[str, Any]]:
        """Registry rows, each with a task count read from its plan file."""
        out = []
        for pid, title, updated in self.registry.execute(
                "SELECT id, title, updated_at FROM plans ORDER BY updated_at DESC, id DESC"
                ).fetchall():
            conn = self._connect(pid)
            try:
                count = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
            finally:
                conn.close()
            out.append({"id": pid, "title": title, "updated_at": updated, "task_count": count})
        return out

    # --- tasks ------------------------------------------------------------------------------

    def get_node(self, plan_id: int, task_id: int) -> dict[str, Any]:
        conn = self._connect(plan_id)
        try:
            row = conn.execute(f"SELECT {_TASK_COLS} FROM tasks WHERE id = ?",
                               (task_id,)).fetchone()
            deps = [r[0] for r in conn.execute(
                "SELECT depends_on FROM task_dependencies WHERE task_id = ?", (task_id,))]
        finally:
            conn.close()
        names = [c.strip() for c in _TASK_COLS.split(",")]
        node = dict(zip(names, row, strict=True))
        node["metadata"] = _loads(node["metadata"], {})
        node["dependencies"] = deps
        return node

    def create_task(self, plan_id: int, name: str, parent_id: int | None = None,
                    instruction: str | None = None, metadata: Any = None) -> int:
        conn = self._connect(plan_id)
        try:
            if parent_id is not None:
                parent = conn.execute(f"SELECT {_TASK_COLS} FROM tasks WHERE id = ?",
                                      (parent_id,)).fetchone()
                ppath, depth = parent[6], parent[7] + 1
            else:
                ppath, depth = "", 0
            stamp = now()
            cur = conn.execute(
                "INSERT INTO tasks (name, status, instruction, parent_id, position, path, depth, "
                "metadata, created_at, updated_at) VALUES (?, 'pending', ?, ?, 1000000000, ?, ?, "
                "?, ?, ?)", (name, instruction, parent_id, f"{ppath}/new-{os.urandom(8).hex()}",
                             depth, json.dumps(metadata) if metadata is not None else None,
                             stamp, stamp))
            task_id = cur.lastrowid
            conn.execute("UPDATE tasks SET path = ? WHERE id = ?", (f"{ppath}/{task_id}", task_id))
            # Resequence: every sibling's position rewritten, in order.
            siblings = conn.execute(
                "SELECT id FROM tasks WHERE parent_id IS ? ORDER BY position, id",
                (parent_id,)).fetchall()
            for i, (sid,) in enumerate(siblings):
                conn.execute("UPDATE tasks SET position = ? WHERE id = ?", (i, sid))
            conn.commit()
        finally:
            conn.close()
        self._touch_registry(plan_id)
        self.get_node(plan_id, task_id)
        return task_id

    def update_task(self, plan_id: int, task_id: int, status: str) -> None:
        conn = self._connect(plan_id)
        try:
            conn.execute("UPDATE tasks SET status = ?, updated_at = ? WHERE id = ?",
                         (status, now(), task_id))
            conn.commit()
        finally:
            conn.close()
        self._touch_registry(plan_id)
        self.get_node(plan_id, task_id)

    def get_plan_tree(self, plan_id: int):
        """The whole tree as plandb's model objects (same output as the other two)."""
        from plandb.models import PlanNode, PlanTree

        conn = self._connect(plan_id)
        try:
            meta = dict(conn.execute("SELECT key, value FROM plan_meta").fetchall())
            rows = conn.execute(f"SELECT {_TASK_COLS} FROM tasks ORDER BY parent_id, position"
                                ).fetchall()
            edges = conn.execute("SELECT task_id, depends_on FROM task_dependencies").fetchall()
        finally:
            conn.close()
        tree = PlanTree(plan_id, meta.get("title") or "", meta.get("description"),
                        _loads(meta.get("metadata"), {}))
        deps: dict[int, list[int]] = {}
        for t, d in edges:
            deps.setdefault(t, []).append(d)
        for r in rows:
            tree.nodes[r[0]] = PlanNode(
                r[0], plan_id, r[1], r[2], r[3], r[4], 0, r[6], r[7], _loads(r[8], {}),
                sorted(deps.get(r[0], ())), r[9], r[10],
                _loads(r[11], []), _loads(r[12], {}), r[13], r[14], r[15])
        tree.relink()
        for ids in [tree.roots, *tree.children.values()]:
            for rank, tid in enumerate(ids):
                tree.nodes[tid].position = rank
        return tree

    # --- action logs ------------------------------------------------------------------------

    def append_action_log(self, plan_id: int, job_id: str, *, action_name: str, status: str,
                          message: str, parameters: Any, details: Any) -> int:
        conn = self._connect(plan_id)
        try:
            seq = conn.execute("SELECT max(sequence) FROM plan_action_logs WHERE job_id = ?",
                               (job_id,)).fetchone()[0]
            cur = conn.execute(
                "INSERT INTO plan_action_logs (job_id, sequence, action_kind, action_name, "
                "status, success, message, parameters, details, created_at) "
                "VALUES (?, ?, 'tool', ?, ?, 1, ?, ?, ?, ?)",
                (job_id, (seq or 0) + 1, action_name, status, message, json.dumps(parameters),
                 json.dumps(details), now()))
            conn.commit()
            return cur.lastrowid
        finally:
            conn.close()

    def list_action_logs(self, plan_id: int, *, offset: int = 0, limit: int = 50) -> list:
        conn = self._connect(plan_id)
        try:
            rows = conn.execute(
                "SELECT id, job_id, sequence, action_name, message, parameters, details, "
                "created_at FROM plan_action_logs ORDER BY id LIMIT ? OFFSET ?",
                (limit, offset)).fetchall()
        finally:
            conn.close()
        return [(r[0], r[1], r[2], r[3], r[4], _loads(r[5], None), _loads(r[6], None), r[7])
                for r in rows]
