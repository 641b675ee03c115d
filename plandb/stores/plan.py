"""The task tree of one plan file: tasks, dependencies, snapshots, plan_meta.

Tree representation: ``parent_id`` + ``position`` + materialised ``path`` + ``depth``.

- ``path`` is the ids from the root, ``/1/5/12``. The subtree of ``/1/5`` is the path range
  ``['/1/5/', '/1/50')`` ('0' follows '/' in ASCII), so subtree reads, deletes and moves are
  index range scans, and a move rewrites paths by prefix (``? || substr(path, ?)``).
- ``position`` is a sparse ordering key: appends take ``max + STEP``, an insert between two
  siblings takes the midpoint, so neither rewrites its siblings. Only when two neighbours have
  no gap left is that one sibling group renumbered. `PlanNode.position` is the dense 0-based
  rank computed from the keys, so callers always see 0..n-1.
- Appends are the common case in wide plans; their rank comes from a per-connection cache of
  (max key, child count) per parent, trusted only while ``PRAGMA data_version`` shows that no
  other connection has written the file since (otherwise it is recomputed). The same cache
  (`TreeCache`) keeps parents' paths and the next task id, so appending a child runs one
  INSERT: no parent lookup, no count, no sequence read.

Functions take a `Tx` (writes) or a connection inside `read()` (reads) and never commit.
"""

from __future__ import annotations

from typing import Any

import apsw

from .. import jsonutil, schema
from ..errors import DependencyCycle, InvalidInput, RecordNotFound, TaskNotFound, TreeCycle
from ..models import PlanNode, PlanTree, SnapshotInfo
from ..payload import Payloads, clean_name
from ..timestamps import now

STEP = 1 << 20
MAX_KEY = (1 << 62)

TASK_COLUMNS = (
    "id, name, status, instruction, parent_id, position, path, depth, metadata, "
    "execution_result, context_combined, context_sections, context_meta, context_updated_at, "
    "created_at, updated_at"
)
_SELECT = f"SELECT {TASK_COLUMNS} FROM tasks"
# A node is its row plus its dense rank among siblings and its dependencies, read in the same
# statement (one round trip instead of three): `tasks` is the row being read or updated.
NODE_COLUMNS = (
    f"{TASK_COLUMNS}, "
    "(SELECT count(*) FROM tasks s WHERE s.parent_id IS tasks.parent_id "
    "AND s.position < tasks.position), "
    "(SELECT group_concat(depends_on) FROM task_dependencies WHERE task_id = tasks.id)"
)
_SELECT_NODE = f"SELECT {NODE_COLUMNS} FROM tasks WHERE id = ?"
META_KEYS = ("plan_id", "title", "description", "owner", "metadata", "created_at", "updated_at")
UPDATABLE = (
    "name", "status", "instruction", "metadata", "execution_result",
    "context_combined", "context_sections", "context_meta",
)
_CONTEXT = frozenset(("context_combined", "context_sections", "context_meta"))
_UPDATE_SQL: dict[tuple[str, ...], str] = {}  # columns set -> statement (few distinct sets)


def _update_sql(cols: tuple[str, ...]) -> str:
    """``UPDATE tasks SET <cols>, [context_updated_at,] updated_at WHERE id = ?`` for a set of
    UPDATABLE columns, built once per distinct set: column names never come from the caller."""
    sql = _UPDATE_SQL.get(cols)
    if sql is None:
        sets = [f"{c} = ?" for c in cols]
        if _CONTEXT.intersection(cols):
            sets.append("context_updated_at = ?")
        sets.append("updated_at = ?")
        sql = _UPDATE_SQL[cols] = f"UPDATE tasks SET {', '.join(sets)} WHERE id = ?"
    return sql


def _node(plan_id: int, r: tuple) -> PlanNode:
    """A PlanNode from a row of NODE_COLUMNS (dependencies come as "3,1": sorted here, an
    ORDER BY inside group_concat would cost a sorter per row)."""
    loads = jsonutil.loads
    deps = r[17]
    return PlanNode(
        r[0], plan_id, r[1], r[2], r[3], r[4], r[16], r[6], r[7],
        loads(r[8], {}) if r[8] else {}, sorted(map(int, deps.split(","))) if deps else [],
        r[9], r[10], loads(r[11], []) if r[11] else [], loads(r[12], {}) if r[12] else {},
        r[13], r[14], r[15])


_MIN_ID, _MAX_ID = -(2**63), 2**63 - 1  # SQLite integers are 64-bit


def _task_id(value: Any, what: str = "task id") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer, got {type(value).__name__}")
    if not _MIN_ID <= value <= _MAX_ID:  # binding it would overflow
        raise InvalidInput(f"{what} {value!r:.40} is out of range (ids are 64-bit integers)")
    return value


_STATUSES: set[str] = set()  # statuses already found valid: a planner uses a handful


def _status(value: Any) -> str:
    """`clean_name` for a status, remembered: it is checked on every create and update."""
    if type(value) is str and value in _STATUSES:
        return value
    value = clean_name(value, "status", 64)
    if len(_STATUSES) < 1024:
        _STATUSES.add(value)
    return value


def _check_node(nid: Any, node: Any) -> None:
    """Refuse a node of a tree to store whose fields have the wrong types (InvalidInput)."""
    _task_id(nid)
    if not isinstance(node, PlanNode) or node.id != nid:
        raise InvalidInput(f"tree.nodes[{nid}] must be a PlanNode whose id is {nid}")
    if node.parent_id is not None:
        _task_id(node.parent_id, "parent id")
    if isinstance(node.position, bool) or not isinstance(node.position, int | float):
        raise InvalidInput(f"task {nid}: position must be a number, "
                           f"got {type(node.position).__name__}")
    deps = node.dependencies
    if not isinstance(deps, list | tuple):
        raise InvalidInput(f"task {nid}: dependencies must be a list of task ids")
    for dep in deps:
        _task_id(dep, "dependency id")
    if node.context_sections is not None and not isinstance(node.context_sections, list | tuple):
        raise InvalidInput(f"task {nid}: context_sections must be a list")
    for what in ("created_at", "context_updated_at"):
        value = getattr(node, what)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"task {nid}: {what} must be timestamp text, "
                               f"got {type(value).__name__}")


def _subtree_range(path: str) -> tuple[str, str]:
    return path + "/", path + "0"


class TreeCache:
    """What one connection remembers of its plan file between calls, trusted only while
    ``PRAGMA data_version`` shows that no other connection has written the file since:

    - `groups`: (max key, child count) per parent, so an append needs no count query;
    - `paths`: (path, depth) per task id, so a new child needs no parent lookup;
    - `next_id`: the id the next task gets (ids are never reused: AUTOINCREMENT).

    Writes that move or remove tasks clear `paths` (a cached path must never name a task
    that is gone or elsewhere); a rollback clears everything (it may have counted rows that
    never committed)."""

    __slots__ = ("data_version", "groups", "paths", "next_id")

    MAX_PATHS = 4096  # a bound on memory per connection; past it the paths are dropped

    def __init__(self) -> None:
        self.data_version = -1
        self.groups: dict[int | None, tuple[int, int]] = {}
        self.paths: dict[int, tuple[str, int]] = {}
        self.next_id: int | None = None

    def check(self, conn: apsw.Connection | apsw.Cursor) -> None:
        dv = conn.execute("PRAGMA data_version").fetchall()[0][0]
        if dv != self.data_version:
            self.clear()
            self.data_version = dv

    def clear(self) -> None:
        self.groups.clear()
        self.paths.clear()
        self.next_id = None

    def note_path(self, task_id: int, path: str, depth: int) -> None:
        if len(self.paths) >= self.MAX_PATHS:
            self.paths.clear()
        self.paths[task_id] = (path, depth)


class PlanStore:
    """Tree operations on one open plan file. The repository keeps one per pooled connection
    (with its `TreeCache`); `stamp` and `version_checked` are reset for every call."""

    __slots__ = ("conn", "cur", "plan_id", "payloads", "cache", "stamp", "version_checked")

    def __init__(self, conn: apsw.Connection, plan_id: int, payloads: Payloads):
        self.conn = conn
        # Statements run to completion go through the connection's kept cursor (see
        # plandb.connection.Connection); anything iterated lazily uses conn.execute.
        self.cur = getattr(conn, "cur", conn)
        self.plan_id = plan_id
        self.payloads = payloads
        self.cache = TreeCache()
        # The enclosing write's timestamp (set by the repository): rows written in one
        # transaction share it, and now() is not paid per row.
        self.stamp: str | None = None
        self.version_checked = False

    # --- small reads -----------------------------------------------------------------------

    def _one(self, sql: str, params: Any = ()) -> Any:
        rows = self.cur.execute(sql, params).fetchall()
        return rows[0] if rows else None

    def _row(self, task_id: int) -> tuple:
        row = self._one(_SELECT + " WHERE id = ?", (_task_id(task_id),))
        if row is None:
            raise TaskNotFound(self.plan_id, task_id)
        return row

    def _sibling_keys_sql(self, parent_id: int | None) -> tuple[str, tuple]:
        if parent_id is None:
            return "parent_id IS NULL", ()
        return "parent_id = +?", (parent_id,)

    def _rank(self, parent_id: int | None, key: int) -> int:
        where, params = self._sibling_keys_sql(parent_id)
        return self._one(f"SELECT count(*) FROM tasks WHERE {where} AND position < ?",
                         (*params, key))[0]

    def node(self, task_id: int) -> PlanNode:
        row = self._one(_SELECT_NODE, (_task_id(task_id),))
        if row is None:
            raise TaskNotFound(self.plan_id, task_id)
        return _node(self.plan_id, row)

    def exists(self, task_id: int) -> bool:
        return self._one("SELECT 1 FROM tasks WHERE id = ?", (task_id,)) is not None

    # --- meta --------------------------------------------------------------------------------

    def read_meta(self) -> dict[str, Any]:
        rows = dict(self.conn.execute("SELECT key, value FROM plan_meta").fetchall())
        meta = {k: rows.get(k) for k in META_KEYS}
        meta["metadata"] = jsonutil.loads(meta["metadata"], {})
        if meta["plan_id"] is not None:
            meta["plan_id"] = int(meta["plan_id"])
        meta["kind"] = rows.get("kind")
        meta["schema_version"] = rows.get("schema_version")
        return meta

    def write_meta(self, **values: Any) -> None:
        """Set plan_meta keys (values already encoded as text or None)."""
        for key, value in values.items():
            if key not in META_KEYS:
                raise ValueError(key)
            self.conn.execute(
                "INSERT INTO plan_meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def touch(self, stamp: str) -> None:
        self.conn.execute("UPDATE plan_meta SET value = ? WHERE key = 'updated_at'", (stamp,))

    def task_count(self) -> int:
        return self._one("SELECT count(*) FROM tasks")[0]

    # --- ordering keys -----------------------------------------------------------------------

    def _checked_cache(self) -> TreeCache:
        """The tree cache, emptied first if another connection wrote the file meanwhile."""
        if not self.version_checked:
            # data_version only moves when another connection commits, which cannot happen
            # while the repository's write transaction (stamp set) holds the lock: once is enough.
            self.cache.check(self.cur)
            self.version_checked = self.stamp is not None
        return self.cache

    def _append_key(self, parent_id: int | None) -> tuple[int, int]:
        """(key, rank) for a new last child of `parent_id`; O(log n) via the tree cache."""
        group = self._checked_cache().groups.get(parent_id)
        if group is None:
            where, params = self._sibling_keys_sql(parent_id)
            mx, n = self._one(f"SELECT max(position), count(*) FROM tasks WHERE {where}", params)
            group = (mx if mx is not None else -STEP, n)
        mx, n = group
        if mx + STEP > MAX_KEY:
            self._renumber(parent_id)
            return self._append_key(parent_id)
        return mx + STEP, n

    def _key_at(self, parent_id: int | None, rank: int, exclude: int | None = None) -> tuple[int, int]:
        """(key, rank) to insert at dense `rank` among the children (excluding `exclude`)."""
        where, params = self._sibling_keys_sql(parent_id)
        if exclude is not None:
            where += " AND id <> ?"
            params = (*params, exclude)
        if rank < 0:
            raise InvalidInput(f"position must be >= 0, got {rank!r:.40}")
        # Past any real end means "append"; clamped so the OFFSET binds as a 64-bit integer.
        rank = min(rank, 2**62)
        if rank == 0:
            prev = None
        else:
            prev = self._one(f"SELECT position FROM tasks WHERE {where} ORDER BY position "
                             "LIMIT 1 OFFSET ?", (*params, rank - 1))
            if prev is None:  # past the end: append
                return self._after_last(parent_id, where, params)
            prev = prev[0]
        nxt = self._one(f"SELECT position FROM tasks WHERE {where} AND position > ? "
                        "ORDER BY position LIMIT 1",
                        (*params, prev if prev is not None else -MAX_KEY - 1))
        if nxt is None:
            return self._after_last(parent_id, where, params)
        lo = prev if prev is not None else nxt[0] - 2 * STEP
        hi = nxt[0]
        if hi - lo < 2:
            self._renumber(parent_id)
            return self._key_at(parent_id, rank, exclude)
        return (lo + hi) // 2, rank

    def _after_last(self, parent_id, where: str, params: tuple) -> tuple[int, int]:
        mx, n = self._one(f"SELECT max(position), count(*) FROM tasks WHERE {where}", params)
        return (mx + STEP if mx is not None else 0), n

    def _renumber(self, parent_id: int | None) -> None:
        """Spread one sibling group's keys out again (rare: only when a gap is used up)."""
        where, params = self._sibling_keys_sql(parent_id)
        ids = [r[0] for r in self.conn.execute(
            f"SELECT id FROM tasks WHERE {where} ORDER BY position, id", params)]
        # Negative temporaries first so the new keys never collide mid-way.
        self.conn.executemany("UPDATE tasks SET position = ? WHERE id = ?",
                              [(-(i + 1), tid) for i, tid in enumerate(ids)])
        self.conn.executemany("UPDATE tasks SET position = ? WHERE id = ?",
                              [(i * STEP, tid) for i, tid in enumerate(ids)])
        self.cache.groups.pop(parent_id, None)

    # --- dependencies ------------------------------------------------------------------------

    def _check_dependencies(self, task_id: int | None, deps: Any) -> list[int]:
        if deps is None:
            return []
        if isinstance(deps, str | bytes) or not hasattr(deps, "__iter__"):
            raise InvalidInput("dependencies must be a list of task ids")
        out: list[int] = []
        for dep in deps:
            dep = _task_id(dep, "dependency id")
            if dep == task_id:
                raise DependencyCycle(f"task {task_id} cannot depend on itself")
            if not self.exists(dep):
                raise TaskNotFound(self.plan_id, dep)
            if dep not in out:
                out.append(dep)
        return out

    def _set_dependencies(self, task_id: int, deps: list[int], *, replace: bool) -> None:
        if replace:
            self.conn.execute("DELETE FROM task_dependencies WHERE task_id = +?", (task_id,))
        self.conn.executemany(
            "INSERT OR IGNORE INTO task_dependencies (task_id, depends_on) VALUES (?, ?)",
            [(task_id, d) for d in deps])
        for dep in deps:
            if self._reaches(dep, task_id):
                raise DependencyCycle(
                    f"task {task_id} depending on {dep} would close a cycle "
                    f"({dep} already depends on {task_id}, directly or not)")

    def _reaches(self, start: int, target: int) -> bool:
        """True if `start` depends on `target`, following edges transitively."""
        return self._one(
            "WITH RECURSIVE r(id) AS (SELECT ? UNION "
            "SELECT d.depends_on FROM task_dependencies d JOIN r ON d.task_id = r.id) "
            "SELECT 1 FROM r WHERE id = ? LIMIT 1", (start, target)) is not None

    # --- writes ------------------------------------------------------------------------------

    def create_task(
        self, name: str, status: str = "pending", instruction: str | None = None,
        parent_id: int | None = None, metadata: dict | None = None,
        dependencies: Any = None, position: int | None = None,
        anchor_task_id: int | None = None, anchor_position: str | None = None,
    ) -> PlanNode:
        """Insert one task; see `PlanRepository.create_task`. Caller holds the transaction.

        The append path (no position, no anchor) is written out flat: bulk creation runs it
        once per task, and each helper call here cost more than the INSERT."""
        p = self.payloads
        name = p.text(clean_name(name, "task name"))
        status = _status(status)
        instruction = p.text(instruction, "instruction")
        meta, meta_json = p.object(metadata)
        stamp = self.stamp or now()
        if anchor_task_id is not None:
            anchor = self._row(anchor_task_id)
            if parent_id is not None and parent_id != anchor[4]:
                raise InvalidInput(
                    f"anchor task {anchor_task_id} is a child of {anchor[4]}, not of {parent_id}")
            parent_id = anchor[4]
            anchor_rank = self._rank(parent_id, anchor[5])
            where = anchor_position or "after"
            if where not in ("before", "after"):
                raise InvalidInput(f"anchor_position must be 'before' or 'after', got {where!r}")
            position = anchor_rank if where == "before" else anchor_rank + 1
        elif anchor_position is not None:
            raise InvalidInput("anchor_position needs anchor_task_id")
        cache = self._checked_cache()
        if parent_id is not None:
            prow = cache.paths.get(parent_id)
            if prow is None:
                prow = self._one("SELECT path, depth FROM tasks WHERE id = ?",
                                 (_task_id(parent_id, "parent id"),))
                if prow is None:
                    raise TaskNotFound(self.plan_id, parent_id)
                cache.note_path(parent_id, prow[0], prow[1])
            ppath, depth = prow[0], prow[1] + 1
        else:
            ppath, depth = "", 0
        if position is None:
            key, rank = self._append_key(parent_id)
        else:
            if isinstance(position, bool) or not isinstance(position, int):
                raise InvalidInput(f"position must be an integer >= 0, got {position!r}")
            key, rank = self._key_at(parent_id, position)
        # Checked before the row exists: the new id is unknown to the caller, so naming it is
        # an unknown task (TaskNotFound), not a self-dependency.
        deps = self._check_dependencies(None, dependencies) if dependencies is not None else ()
        task_id = cache.next_id
        if task_id is None:
            seq = self._one("SELECT seq FROM sqlite_sequence WHERE name = 'tasks'")
            task_id = (seq[0] if seq else 0) + 1
        path = f"{ppath}/{task_id}"
        self.cur.execute(
            "INSERT INTO tasks (id, name, status, instruction, parent_id, position, path, depth, "
            "metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, name, status, instruction, parent_id, key, path, depth, meta_json,
             stamp, stamp))
        cache.next_id = task_id + 1
        cache.note_path(task_id, path, depth)
        if deps:
            self._set_dependencies(task_id, deps, replace=False)
        if position is None:
            cache.groups[parent_id] = (key, rank + 1)  # the new last child
        else:
            cache.groups.pop(parent_id, None)
        return PlanNode(
            task_id, self.plan_id, name, status, instruction, parent_id, rank, path, depth,
            meta, sorted(deps), None, None, [],
            {}, None, stamp, stamp)

    def update_task(self, task_id: int, fields: dict[str, Any],
                    stamp: str | None = None) -> PlanNode:
        """Apply `fields` (names from UPDATABLE, in that order, plus ``dependencies``; None
        values are skipped); returns the updated node."""
        if type(task_id) is not int or not _MIN_ID <= task_id <= _MAX_ID:
            _task_id(task_id)  # raises the right InvalidInput
        p = self.payloads
        cols: list[str] = []
        params: list[Any] = []
        deps = None
        for col, value in fields.items():
            if value is None:
                continue
            if col == "status":
                value = _status(value)
            elif col == "dependencies":
                deps = value
                continue
            elif col == "name":
                value = p.text(clean_name(value, "task name"))
            elif col in ("metadata", "context_meta"):
                value = p.json_object(value, col)
            elif col == "context_sections":
                if not isinstance(value, list | tuple):
                    raise InvalidInput("context_sections must be a list")
                value = p.json(list(value))
            elif col in UPDATABLE:
                value = p.text(value, col)
            else:
                raise InvalidInput(f"{col!r} is not an updatable task field")
            cols.append(col)
            params.append(value)
        stamp = stamp or self.stamp or now()
        sql = _update_sql(tuple(cols))
        if _CONTEXT.intersection(cols):
            params.append(stamp)
        params.append(stamp)
        params.append(task_id)
        self.cur.execute(sql, params)
        if not self.conn.changes():
            raise TaskNotFound(self.plan_id, task_id)
        if deps is not None:
            self._set_dependencies(task_id, self._check_dependencies(task_id, deps),
                                   replace=True)
        # Read back in the same transaction: plain UPDATE + one SELECT of the node is cheaper
        # than UPDATE ... RETURNING, which buffers its rows in an ephemeral table.
        return _node(self.plan_id, self._one(_SELECT_NODE, (task_id,)))

    def delete_task(self, task_id: int) -> int:
        """Delete the task and its whole subtree (edges go by cascade); returns rows deleted."""
        row = self._row(task_id)
        lo, hi = _subtree_range(row[6])
        self.conn.execute(
            "DELETE FROM tasks WHERE path >= ? AND path < ? OR id = ?", (lo, hi, task_id))
        self.cache.groups.pop(row[4], None)
        self.cache.paths.clear()  # the subtree's ids are gone
        return self.conn.changes()

    def move_task(self, task_id: int, new_parent_id: int | None,
                  new_position: int | None, stamp: str | None = None) -> None:
        """Re-parent (and/or reorder) a task with its subtree; refuses cycles."""
        row = self._row(task_id)
        old_path, old_depth, old_parent = row[6], row[7], row[4]
        if new_parent_id is not None:
            prow = self._one("SELECT path, depth FROM tasks WHERE id = ?",
                             (_task_id(new_parent_id, "new parent id"),))
            if prow is None:
                raise TaskNotFound(self.plan_id, new_parent_id)
            if new_parent_id == task_id or prow[0].startswith(old_path + "/"):
                raise TreeCycle(
                    f"cannot move task {task_id} under {new_parent_id}: "
                    "that is the task itself or one of its descendants")
            ppath, depth = prow[0], prow[1] + 1
        else:
            ppath, depth = "", 0
        if new_position is None:
            where, params = self._sibling_keys_sql(new_parent_id)
            key, _ = self._after_last(new_parent_id, where + " AND id <> ?", (*params, task_id))
        else:
            if isinstance(new_position, bool) or not isinstance(new_position, int):
                raise InvalidInput(f"new_position must be an integer >= 0, got {new_position!r}")
            key, _ = self._key_at(new_parent_id, new_position, exclude=task_id)
        new_path = f"{ppath}/{task_id}"
        self.conn.execute(
            "UPDATE tasks SET parent_id = ?, position = ?, updated_at = ? WHERE id = ?",
            (new_parent_id, key, stamp or self.stamp or now(), task_id))
        if new_path != old_path:
            lo, hi = _subtree_range(old_path)
            self.conn.execute(
                "UPDATE tasks SET path = ? || substr(path, ?), depth = depth + ? "
                "WHERE path >= ? AND path < ? OR id = ?",
                (new_path, len(old_path) + 1, depth - old_depth, lo, hi, task_id))
        self.cache.groups.pop(old_parent, None)
        self.cache.groups.pop(new_parent_id, None)
        self.cache.paths.clear()  # the subtree's paths were rewritten

    # --- whole tree --------------------------------------------------------------------------

    def tree(self, meta: dict[str, Any] | None = None) -> PlanTree:
        """The whole tree (call inside `read()` for a consistent snapshot)."""
        meta = meta or self.read_meta()
        deps: dict[int, list[int]] = {}
        for tid, dep in self.conn.execute(
                "SELECT task_id, depends_on FROM task_dependencies ORDER BY task_id, depends_on"):
            deps.setdefault(tid, []).append(dep)
        tree = PlanTree(id=self.plan_id, title=meta.get("title") or "",
                        description=meta.get("description"), metadata=meta.get("metadata") or {})
        nodes, children, roots = tree.nodes, tree.children, tree.roots
        pid = self.plan_id
        loads = jsonutil.loads
        last_parent: Any = object()
        rank = 0
        for r in self.conn.execute(_SELECT + " ORDER BY parent_id, position"):
            parent = r[4]
            if parent != last_parent:
                last_parent, rank = parent, 0
            else:
                rank += 1
            nodes[r[0]] = PlanNode(
                r[0], pid, r[1], r[2], r[3], parent, rank, r[6], r[7],
                loads(r[8], {}) if r[8] else {}, deps.get(r[0], []), r[9], r[10],
                loads(r[11], []) if r[11] else [], loads(r[12], {}) if r[12] else {},
                r[13], r[14], r[15])
            if parent is None:
                roots.append(r[0])
            else:
                children.setdefault(parent, []).append(r[0])
        return tree

    def replace_tree(self, tree: PlanTree, stamp: str | None = None) -> None:
        """Replace every task and edge with `tree` (ids kept); validates before writing."""
        stamp = stamp or self.stamp or now()
        nodes = tree.nodes
        if not isinstance(nodes, dict):
            raise InvalidInput("tree.nodes must be a dict of task id -> PlanNode")
        for nid, node in nodes.items():
            _check_node(nid, node)
            if node.parent_id is not None and node.parent_id not in nodes:
                raise TaskNotFound(self.plan_id, node.parent_id)
            for dep in node.dependencies:
                if dep not in nodes:
                    raise TaskNotFound(self.plan_id, dep)
                if dep == nid:
                    raise DependencyCycle(f"task {nid} cannot depend on itself")
        # Order: parents before children; any node never reached sits on a parent cycle.
        tree.relink()
        ordered = tree.ordered_nodes()
        if len(ordered) != len(nodes):
            raise TreeCycle("the tree's parent links contain a cycle")
        self.conn.execute("DELETE FROM task_dependencies")
        self.conn.execute("DELETE FROM tasks")
        rank_keys: dict[int | None, int] = {}
        paths: dict[int, str] = {}
        p = self.payloads
        rows = []
        for node in ordered:
            key = rank_keys.get(node.parent_id, 0)
            rank_keys[node.parent_id] = key + STEP
            path = f"{paths[node.parent_id] if node.parent_id is not None else ''}/{node.id}"
            paths[node.id] = path
            rows.append((
                node.id, p.text(clean_name(node.name, "task name")),
                _status(node.status or "pending"),
                p.text(node.instruction, "instruction"), node.parent_id, key, path,
                path.count("/") - 1, p.json_object(node.metadata or None),
                p.text(node.execution_result, "execution_result"),
                p.text(node.context_combined, "context_combined"),
                p.json(list(node.context_sections)) if node.context_sections else None,
                p.json_object(node.context_meta or None, "context_meta"),
                node.context_updated_at, node.created_at or stamp, stamp))
        self.conn.executemany(
            f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        edges = [(n.id, d) for n in ordered for d in dict.fromkeys(n.dependencies)]
        self.conn.executemany(
            "INSERT INTO task_dependencies (task_id, depends_on) VALUES (?, ?)", edges)
        if edges and self._one(
                "WITH RECURSIVE r(start, id) AS (SELECT task_id, depends_on FROM task_dependencies "
                "UNION SELECT r.start, d.depends_on FROM task_dependencies d JOIN r "
                "ON d.task_id = r.id) SELECT 1 FROM r WHERE start = id LIMIT 1"):
            raise DependencyCycle("the tree's dependencies contain a cycle")
        self.cache.clear()

    # --- snapshots ---------------------------------------------------------------------------

    def add_snapshot(self, tree: PlanTree, note: str | None, stamp: str | None = None) -> int:
        self.conn.execute(
            "INSERT INTO snapshots (snapshot, note, created_at) VALUES (?, ?, ?)",
            (jsonutil.dumps(tree.to_dict()), self.payloads.text(note, "note"),
             stamp or self.stamp or now()))
        return self.conn.last_insert_rowid()

    def list_snapshots(self) -> list[SnapshotInfo]:
        return [SnapshotInfo(r[0], self.plan_id, r[1], r[2], r[3] or 0) for r in self.conn.execute(
            "SELECT id, note, created_at, json_array_length(snapshot, '$.nodes') "
            "FROM snapshots ORDER BY id")]

    def load_snapshot(self, snapshot_id: int) -> PlanTree:
        row = self._one("SELECT snapshot FROM snapshots WHERE id = ?",
                        (_task_id(snapshot_id, "snapshot id"),))
        if row is None:
            raise RecordNotFound("snapshot", snapshot_id, f"plan {self.plan_id}")
        data = jsonutil.loads(row[0])
        data["id"] = self.plan_id
        return PlanTree.from_dict(data)


def fix_legacy_tree(conn: apsw.Connection) -> None:
    """Adoption hook: recompute path/depth from parent links and spread positions.

    Legacy files may hold paths in another format, stale depths, or positions that collide;
    parent_id is the truth. Dangling parents become roots (their old parent is recorded in
    metadata under ``legacy_parent_id`` so nothing is silently lost).
    """
    rows = conn.execute(
        "SELECT id, parent_id, position FROM tasks ORDER BY parent_id, position, id").fetchall()
    ids = {r[0] for r in rows}
    for tid, parent, _ in rows:
        if parent is not None and parent not in ids:
            conn.execute(
                "UPDATE tasks SET parent_id = NULL, metadata = json_set(COALESCE(CASE WHEN "
                "json_valid(metadata) THEN metadata END, '{}'), '$.legacy_parent_id', ?) "
                "WHERE id = ?", (parent, tid))
    rows = conn.execute(
        "SELECT id, parent_id FROM tasks ORDER BY parent_id, position, id").fetchall()
    children: dict[int | None, list[int]] = {}
    for tid, parent in rows:
        children.setdefault(parent, []).append(tid)
    updates = []
    seen: set[int] = set()
    stack = [(tid, "", 0) for tid in children.get(None, [])]
    while stack:
        tid, ppath, depth = stack.pop()
        seen.add(tid)
        path = f"{ppath}/{tid}"
        updates.append((path, depth, tid))
        stack.extend((c, path, depth + 1) for c in children.get(tid, []))
    # Parent cycles in legacy data: break them by making the smallest id a root.
    for tid, _parent in rows:
        if tid not in seen:
            conn.execute("UPDATE tasks SET parent_id = NULL WHERE id = ?", (tid,))
            return fix_legacy_tree(conn)
    for group in children.values():
        for i, tid in enumerate(group):
            conn.execute("UPDATE tasks SET position = ? WHERE id = ?", (i * STEP, tid))
    conn.execute("UPDATE tasks SET path = '#' || id")  # clear the unique paths first
    conn.executemany("UPDATE tasks SET path = ?, depth = ? WHERE id = ?", updates)
    # Edges to tasks that no longer exist cannot be kept in the table; keep them in meta.
    dangling = conn.execute(
        "SELECT task_id, depends_on FROM task_dependencies WHERE task_id NOT IN "
        "(SELECT id FROM tasks) OR depends_on NOT IN (SELECT id FROM tasks)").fetchall()
    if dangling:
        conn.execute(
            "INSERT OR REPLACE INTO plan_meta (key, value) VALUES ('legacy_dangling_edges', ?)",
            (jsonutil.dumps(dangling),))
        conn.execute("DELETE FROM task_dependencies WHERE task_id NOT IN (SELECT id FROM tasks) "
                     "OR depends_on NOT IN (SELECT id FROM tasks)")


schema.ADOPT_HOOKS["plan"].append(fix_legacy_tree)
