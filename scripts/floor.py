"""The floor: what raw apsw costs for plandb's workloads, with nothing of plandb in between.

One open connection per file, WAL + synchronous=NORMAL, statements prepared once (apsw's
statement cache) and written with ``+?`` on indexed columns so apsw's STAT4 build never
re-prepares them, one transaction per call; `create_tasks` is the bulk variant (the same
statements, one transaction for all). No redaction, no validation, no pool, no locks: this is
the lower bound plandb's ratios are measured against, not a usable library.

The files use plandb's own schema (read from ``schemas/``), so both write the same tables and
indexes and a ratio compares code paths, not data layouts.

Plan creation here is what a raw apsw program would do: one registry transaction, then a new
file with the whole schema applied in one transaction, then close (SQLite checkpoints and fsyncs
the file on close). It does not do plandb's crash-safe steps (temp name, rename, folder fsync,
two registry states); plandb has to pay for those inside its ratio.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apsw
import orjson

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
_INCLUDE = re.compile(r"^--\s*@include\s+([a-z0-9_/]+\.sql)\s*$", re.M)
_TASK_COLS = (
    "id, name, status, instruction, parent_id, position, path, depth, metadata, "
    "execution_result, context_combined, context_sections, context_meta, context_updated_at, "
    "created_at, updated_at"
)


def schema_sql(kind: str) -> str:
    """Every ``schemas/<kind>/NNNN_*.sql`` step, includes expanded, in order."""
    parts = []
    for p in sorted((SCHEMAS / kind).glob("[0-9][0-9][0-9][0-9]_*.sql")):
        parts.append(_INCLUDE.sub(lambda m: (SCHEMAS / m.group(1)).read_text(), p.read_text()))
    return "\n".join(parts)


def _dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _loads(text: str | None, default: Any) -> Any:
    return orjson.loads(text) if text else default


def now() -> str:
    """A timestamp in plandb's stored format (no plandb import: the floor stays raw)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _open(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(10_000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class Floor:
    """Raw apsw over a root laid out like plandb's (main/, plans/)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "main").mkdir(parents=True, exist_ok=True)
        (self.root / "plans").mkdir(parents=True, exist_ok=True)
        self.registry = _open(self.root / "main" / "plan_registry.db")
        if not self.registry.execute(
                "SELECT 1 FROM sqlite_schema WHERE name = 'plans'").fetchall():
            with self.registry:
                self.registry.execute(schema_sql("registry"))
        self.plan_sql = schema_sql("plan")
        self.conns: dict[int, apsw.Connection] = {}

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()
        self.registry.close()

    def plan_path(self, plan_id: int) -> Path:
        return self.root / "plans" / f"plan_{plan_id}.sqlite"

    def conn(self, plan_id: int) -> apsw.Connection:
        conn = self.conns.get(plan_id)
        if conn is None:
            conn = self.conns[plan_id] = _open(self.plan_path(plan_id))
        return conn

    def release(self, plan_id: int) -> None:
        """Close one plan's connection (setup code that touches many plans)."""
        conn = self.conns.pop(plan_id, None)
        if conn is not None:
            conn.close()

    # --- plans ------------------------------------------------------------------------------

    def create_plan(self, title: str) -> int:
        """Registry row (one transaction), then the file with its schema (one transaction)."""
        stamp = now()
        reg = self.registry
        reg.execute("BEGIN IMMEDIATE")
        try:
            reg.execute(
                "INSERT INTO plans (title, plan_file, state, created_at, updated_at) "
                "VALUES (?, '', 'ready', ?, ?)", (title, stamp, stamp))
            plan_id = reg.last_insert_rowid()
            reg.execute("UPDATE plans SET plan_file = ? WHERE id = +?",
                        (f"plans/plan_{plan_id}.sqlite", plan_id))
            reg.execute("COMMIT")
        except BaseException:
            reg.execute("ROLLBACK")
            raise
        conn = _open(self.plan_path(plan_id))
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(self.plan_sql)
            conn.executemany("INSERT INTO plan_meta (key, value) VALUES (?, ?)", (
                ("kind", "plan"), ("plan_id", str(plan_id)), ("title", title),
                ("created_at", stamp), ("updated_at", stamp)))
            conn.execute("COMMIT")
        finally:
            conn.close()
        return plan_id

    def list_plans(self) -> list[tuple]:
        """The single registry query list_plans needs (rows as tuples, nothing else)."""
        return self.registry.execute(
            "SELECT id, title, description, metadata, task_count, updated_at, created_at, owner, "
            "state FROM plans WHERE state = 'ready' ORDER BY updated_at DESC, id DESC").fetchall()

    # --- tasks ------------------------------------------------------------------------------

    def _insert_task(self, conn: apsw.Connection, name: str, parent_id: int | None,
                     instruction: str | None, metadata: Any, stamp: str) -> int:
        if parent_id is None:
            ppath, depth = "", 0
            pos = conn.execute("SELECT max(position) FROM tasks WHERE parent_id IS NULL"
                               ).fetchall()[0][0]
        else:
            ppath, depth = conn.execute("SELECT path, depth + 1 FROM tasks WHERE id = +?",
                                        (parent_id,)).fetchall()[0]
            pos = conn.execute("SELECT max(position) FROM tasks WHERE parent_id = +?",
                               (parent_id,)).fetchall()[0][0]
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'tasks'").fetchall()
        task_id = (seq[0][0] if seq else 0) + 1
        conn.execute(
            "INSERT INTO tasks (id, name, status, instruction, parent_id, position, path, depth, "
            "metadata, created_at, updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, name, instruction, parent_id, 0 if pos is None else pos + 1024,
             f"{ppath}/{task_id}", depth, _dumps(metadata), stamp, stamp))
        return task_id

    def create_task(self, plan_id: int, name: str, parent_id: int | None = None,
                    instruction: str | None = None, metadata: Any = None) -> int:
        """One task, one transaction: parent lookup, sibling max, insert."""
        conn = self.conn(plan_id)
        conn.execute("BEGIN IMMEDIATE")
        try:
            task_id = self._insert_task(conn, name, parent_id, instruction, metadata, now())
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return task_id

    def create_tasks(self, plan_id: int, specs: list[dict[str, Any]]) -> list[int]:
        """Bulk variant: the same statements as `create_task`, one transaction for all.

        A spec's ``parent_index`` (and ``dependency_indexes``) name earlier specs of the same
        call, as in plandb.
        """
        conn = self.conn(plan_id)
        stamp = now()
        ids: list[int] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for spec in specs:
                pidx = spec.get("parent_index")
                parent = ids[pidx] if pidx is not None else spec.get("parent_id")
                tid = self._insert_task(conn, spec["name"], parent, spec.get("instruction"),
                                        spec.get("metadata"), stamp)
                for d in spec.get("dependency_indexes") or ():
                    conn.execute("INSERT INTO task_dependencies (task_id, depends_on) "
                                 "VALUES (?, ?)", (tid, ids[d]))
                ids.append(tid)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return ids

    def update_task(self, plan_id: int, task_id: int, status: str) -> None:
        conn = self.conn(plan_id)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("UPDATE tasks SET status = ?, updated_at = ? WHERE id = ?",
                         (status, now(), task_id))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def get_plan_tree(self, plan_id: int):
        """The whole tree as plandb's model objects (PlanTree of PlanNode), one snapshot."""
        from plandb.models import PlanNode, PlanTree

        conn = self.conn(plan_id)
        conn.execute("BEGIN")
        try:
            meta = dict(conn.execute("SELECT key, value FROM plan_meta").fetchall())
            deps: dict[int, list[int]] = {}
            for tid, dep in conn.execute(
                    "SELECT task_id, depends_on FROM task_dependencies "
                    "ORDER BY task_id, depends_on"):
                deps.setdefault(tid, []).append(dep)
            tree = PlanTree(plan_id, meta.get("title") or "", meta.get("description"),
                            _loads(meta.get("metadata"), {}))
            nodes, children, roots = tree.nodes, tree.children, tree.roots
            last: Any = object()
            rank = 0
            for r in conn.execute(f"SELECT {_TASK_COLS} FROM tasks ORDER BY parent_id, position"):
                parent = r[4]
                if parent != last:
                    last, rank = parent, 0
                else:
                    rank += 1
                nodes[r[0]] = PlanNode(
                    r[0], plan_id, r[1], r[2], r[3], parent, rank, r[6], r[7],
                    _loads(r[8], {}), deps.get(r[0], []), r[9], r[10], _loads(r[11], []),
                    _loads(r[12], {}), r[13], r[14], r[15])
                if parent is None:
                    roots.append(r[0])
                else:
                    children.setdefault(parent, []).append(r[0])
        finally:
            conn.execute("ROLLBACK")
        return tree

    # --- action logs ------------------------------------------------------------------------

    def append_action_log(self, plan_id: int, job_id: str, *, action_name: str, status: str,
                          message: str, parameters: Any, details: Any) -> int:
        """One log row, one transaction; the payloads JSON-encoded, not redacted."""
        conn = self.conn(plan_id)
        conn.execute("BEGIN IMMEDIATE")
        try:
            seq = conn.execute("SELECT max(sequence) FROM plan_action_logs WHERE job_id = +?",
                               (job_id,)).fetchall()[0][0]
            conn.execute(
                "INSERT INTO plan_action_logs (job_id, sequence, action_kind, action_name, "
                "status, success, message, parameters, details, created_at) "
                "VALUES (?, ?, 'tool', ?, ?, 1, ?, ?, ?, ?)",
                (job_id, (seq or 0) + 1, action_name, status, message, _dumps(parameters),
                 _dumps(details), now()))
            rowid = conn.last_insert_rowid()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return rowid

    def list_action_logs(self, plan_id: int, *, after_id: int = 0, limit: int = 50) -> list:
        """One page in id order (keyset: rows after `after_id`), payloads decoded."""
        conn = self.conn(plan_id)
        return [(r[0], r[1], r[2], r[3], r[4], _loads(r[5], None), _loads(r[6], None), r[7])
                for r in conn.execute(
                    "SELECT id, job_id, sequence, action_name, message, parameters, details, "
                    "created_at FROM plan_action_logs WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id, limit))]
