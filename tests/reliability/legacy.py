"""Legacy-shaped plan files: what the older planner code wrote, for upgrade-under-kill runs.

The shape: ``plan_meta`` with ``schema_version`` '2' and no ``kind``, a ``tasks`` table that
lacks the context columns and ``execution_result``, keeps JSON in ``metadata_json``, stamps
``CURRENT_TIMESTAMP`` text, and a ``task_dependencies`` table. plandb adopts such a file on its
first open (one transaction, backup first).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

LEGACY_DDL = """
CREATE TABLE plan_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    status TEXT DEFAULT 'pending',
    instruction TEXT,
    parent_id INTEGER,
    position INTEGER DEFAULT 0,
    path TEXT,
    depth INTEGER DEFAULT 0,
    metadata_json TEXT,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE task_dependencies (task_id INTEGER, depends_on INTEGER,
                                PRIMARY KEY (task_id, depends_on));
"""


def write_legacy_plan(path: Path, *, plan_id: int, title: str,
                      tasks: list[tuple[str, str | None]]) -> dict[str, str | None]:
    """Write a legacy plan file at `path` (atomically: temp name, fsync, rename).

    `tasks` is ``[(name, parent_name or None), ...]`` with parents listed before children.
    Returns ``{name: parent_name}``, the tree plandb must show after adopting the file.
    """
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    for suffix in ("", "-journal"):
        try:
            os.unlink(f"{tmp}{suffix}")
        except FileNotFoundError:
            pass
    con = sqlite3.connect(tmp)
    try:
        con.executescript(LEGACY_DDL)
        con.executemany("INSERT INTO plan_meta (key, value) VALUES (?, ?)", [
            ("schema_version", "2"), ("plan_id", str(plan_id)), ("title", title)])
        ids: dict[str, int] = {}
        paths: dict[str, str] = {}
        counts: dict[str | None, int] = {}
        for name, parent in tasks:
            pid = ids[parent] if parent is not None else None
            pos = counts.get(parent, 0)
            counts[parent] = pos + 1
            cur = con.execute(
                "INSERT INTO tasks (name, parent_id, position, depth, metadata_json, created_at) "
                "VALUES (?, ?, ?, ?, ?, '2024-01-02 03:04:05')",
                (name, pid, pos, 0 if parent is None else paths[parent].count("/") + 1,
                 json.dumps({"legacy": True})))
            ids[name] = cur.lastrowid
            # The old format: ids joined by '/' without a leading slash (plandb recomputes it).
            paths[name] = str(cur.lastrowid) if parent is None else f"{paths[parent]}/{cur.lastrowid}"
            con.execute("UPDATE tasks SET path = ? WHERE id = ?", (paths[name], cur.lastrowid))
        con.commit()
    finally:
        con.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return dict(tasks)
