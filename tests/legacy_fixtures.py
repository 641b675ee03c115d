"""Builds the two legacy shapes `plandb migrate-legacy` imports, with the stdlib sqlite3 module.

Nothing here imports plandb: the files are written the way the older planner code wrote them,
so a test can only pass if plandb really reads them.

- `build_flat_dir(path)`: the flat working directory from before DB_ROOT existed: ``tasks.db``
  (the old single-file store, WAL mode, its newest rows only in ``tasks.db-wal``),
  ``embedding_cache.db``, ``llm_cache.db``, ``statistics.db`` (no home in plandb) and
  ``notes.db`` (garbage bytes).
- `build_old_root(path)`: a DB_ROOT made by the older planner code: an old registry, plan files
  with ``schema_version`` "2", "1" or none and no ``kind`` (columns missing, in other orders,
  whole tables missing, newest rows only in a -wal), a registry row whose file is missing, an
  orphan plan file, a corrupt plan file, old system jobs, session files (one with an unsafe id
  in its file name, one with an unsafe id in its content), and old caches.

Each builder returns a dict describing exactly what it wrote (sentinels included), which the
tests compare with what arrives in the migrated root.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path

TS = "2024-03-01 10:00:00"  # SQLite CURRENT_TIMESTAMP text, as the old code stored it
TS2 = "2024-03-02 11:30:00"
SECRET = "sk-legacyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"  # an OpenAI-shaped fake key


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")  # test data: no fsync needed, only the bytes
    return con


def wal_only(path: Path, base: Callable[[sqlite3.Connection], None],
             newer: Callable[[sqlite3.Connection], None]) -> None:
    """Write `path` so that what `newer` writes lives only in ``path-wal``.

    The database is built in a staging folder in WAL mode with automatic checkpoints off; `base`
    is checkpointed into the main file, `newer` is committed to the WAL only, and db + -wal +
    -shm are copied into place while the writer still holds them open (as if the old process
    had been killed). The staging copy is then closed and removed.
    """
    staging = path.parent / f".staging-{path.name}"
    staging.mkdir()
    tmp = staging / path.name
    con = _connect(tmp)
    try:
        assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        con.execute("PRAGMA wal_autocheckpoint=0")
        base(con)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        newer(con)
        for suffix in ("", "-wal", "-shm"):
            shutil.copyfile(f"{tmp}{suffix}", f"{path}{suffix}")
    finally:
        con.close()
    shutil.rmtree(staging)
    assert Path(f"{path}-wal").stat().st_size > 0


def main_file_only(path: Path, sql: str, params=()) -> list:
    """Rows as the main database file alone holds them (the -wal ignored): immutable=1."""
    con = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def garbage(path: Path, size: int = 8192) -> None:
    """A file that is not a database (but named like one)."""
    path.write_bytes(b"this is not sqlite\x00" + bytes(range(256)) * (size // 256))


def _plain(path: Path, fill: Callable[[sqlite3.Connection], None]) -> None:
    con = _connect(path)
    try:
        fill(con)
    finally:
        con.close()


def _script(con: sqlite3.Connection, sql: str) -> None:
    con.executescript(sql)


# =============================================================================================
# 1. the flat working directory
# =============================================================================================

TASKS_DB_SCHEMA = """
CREATE TABLE plans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT UNIQUE NOT NULL,
    description TEXT,
    status TEXT DEFAULT 'active',
    config_json TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT,
    status TEXT DEFAULT 'pending',
    priority INTEGER DEFAULT 100,
    parent_id INTEGER,
    path TEXT,
    depth INTEGER DEFAULT 0,
    task_type TEXT DEFAULT 'atomic'
);
CREATE TABLE plan_tasks (
    plan_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    task_category TEXT,
    task_order INTEGER DEFAULT 0,
    PRIMARY KEY (plan_id, task_id)
);
CREATE TABLE task_links (
    from_id INTEGER NOT NULL,
    to_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (from_id, to_id, kind)
);
CREATE TABLE task_inputs (task_id INTEGER PRIMARY KEY, prompt TEXT);
CREATE TABLE task_outputs (task_id INTEGER PRIMARY KEY, content TEXT);
CREATE TABLE task_contexts (
    task_id INTEGER NOT NULL,
    label TEXT NOT NULL DEFAULT 'latest',
    combined TEXT,
    sections TEXT,
    meta TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (task_id, label)
);
CREATE TABLE task_embeddings (task_id INTEGER PRIMARY KEY, embedding BLOB, model TEXT);
CREATE TABLE evaluation_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id INTEGER, iteration INTEGER, content TEXT,
    overall_score REAL, dimension_scores TEXT, suggestions TEXT, needs_revision INTEGER,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE evaluation_configs (
    task_id INTEGER PRIMARY KEY, quality_threshold REAL, max_iterations INTEGER,
    evaluation_dimensions TEXT, domain_specific INTEGER
);
CREATE TABLE chat_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id INTEGER,
    sender TEXT,
    message TEXT,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id INTEGER,
    title TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER,
    sender TEXT,
    text TEXT,
    metadata TEXT,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
"""

# Old plans: (id, title, description, status, config_json, created_at)
FLAT_PLANS = [
    (1, "Launch website", "sentinel-plan-1 description", "active", '{"model": "gpt-4"}', TS),
    (2, "Migrate billing", None, "active", None, TS2),
    (3, "Empty plan", "no tasks at all", "archived", "not json", TS),
]
FLAT_WAL_PLANS = [(4, "WAL-only plan", "exists only in tasks.db-wal", "active", None, TS2)]

# Old tasks: (id, name, status, priority, parent_id, path, depth, task_type)
FLAT_TASKS = [
    (1, "Design", "done", 10, None, "/1", 0, "composite"),
    (2, "Wireframes", "done", 20, 1, "/1/2", 1, "atomic"),
    (3, "Mockups", "running", 30, 1, "/1/3", 1, "atomic"),
    (4, "Build", "pending", 10, None, "/4", 0, "composite"),
    (5, "Frontend", "pending", 50, 4, "/4/5", 1, "atomic"),
    (6, "Backend", "pending", 50, 4, "/4/6", 1, "composite"),
    (7, "API auth sentinel-task-7", "pending", 70, 6, "/4/6/7", 2, "atomic"),
    (10, "Export invoices", "done", 1, None, "/10", 0, "atomic"),
    (11, "Import into new system", "pending", 2, None, "/11", 0, "atomic"),
    (12, "Verify totals", "pending", 3, None, "/12", 0, "atomic"),
    (13, None, None, None, 10, "/10/13", 1, None),  # no name, no status: sanitised on import
    (30, "Stray task in no plan", "pending", 1, None, "/30", 0, "atomic"),
]
FLAT_WAL_TASKS = [
    (20, "WAL task A", "pending", 1, None, "/20", 0, "composite"),
    (21, "WAL task B sentinel-wal", "pending", 2, 20, "/20/21", 1, "atomic"),
]
# (plan_id, task_id, category, order): order decides sibling order (Mockups before Wireframes)
FLAT_PLAN_TASKS = [
    (1, 1, "phase", 1), (1, 2, "step", 2), (1, 3, "step", 1), (1, 4, "phase", 2),
    (1, 5, "step", 1), (1, 6, "step", 2), (1, 7, "step", 1),
    (2, 10, "step", 1), (2, 11, "step", 2), (2, 12, "step", 3), (2, 13, None, 1),
]
FLAT_WAL_PLAN_TASKS = [(4, 20, "phase", 1), (4, 21, "step", 1)]
# (from_id, to_id, kind): 'requires' means to_id depends on from_id
FLAT_LINKS = [
    (2, 3, "requires"),    # 3 depends on 2
    (6, 5, "requires"),    # 5 depends on 6
    (1, 4, "requires"),    # 4 depends on 1
    (10, 11, "requires"),
    (11, 12, "requires"),
    (12, 10, "requires"),  # closes a cycle 10 -> 11 -> 12 -> 10: reported, kept in metadata
    (1, 10, "requires"),   # across plans 1 and 2: reported, kept in metadata
    (3, 99, "requires"),   # to a task that does not exist: reported
    (2, 5, "relates"),     # another kind: kept in metadata
]
FLAT_INPUTS = [(1, "Design the site"), (2, "Draw wireframes sentinel-prompt-2"),
               (5, "Build the frontend"), (7, "Add OAuth"), (10, "Export all invoices"),
               (11, "Import them")]
FLAT_OUTPUTS = [(2, "wireframes.pdf sentinel-output-2"), (5, "old frontend output"),
                (12, "totals match")]
FLAT_WAL_OUTPUTS = [(5, "frontend output sentinel-wal-output")]  # replaces task 5's output
# (task_id, label, combined, sections, meta)
FLAT_CONTEXTS = [
    (5, "latest", "combined context 5", '["s1", "s2"]', '{"source": "retriever"}'),
    (7, "latest", "auth context sentinel-context-7", '[{"title": "doc"}]', '{"k": 1}'),
    (7, "draft", "draft context of 7", None, None),
    (2, "latest", "context with bad json", "not a json list", "not a json object"),
]
FLAT_CHAT = [  # (id, plan_id, sender, message, timestamp)
    (1, 1, "user", "Can we launch by Friday? sentinel-chat-1", TS),
    (2, 1, "assistant", "Yes, if the backend is ready.", TS),
    (3, 1, "user", "Great", TS2),
    (4, 2, "user", "Start with invoices", TS),
    (5, 77, "user", "message for a plan that no longer exists", TS),
]
FLAT_WAL_CHAT = [(6, 4, "assistant", "chat only in the WAL sentinel-wal-chat", TS2)]
FLAT_CONVERSATIONS = [(1, 1, "Kickoff", TS), (2, None, "General questions", TS2)]
FLAT_MESSAGES = [  # (id, conversation_id, sender, text, metadata, timestamp)
    (1, 1, "user", "kickoff message sentinel-conv-1", '{"lang": "en"}', TS),
    (2, 1, "assistant", "kickoff reply", None, TS),
    (3, 2, "user", "general question", None, TS2),
    (4, 2, "system", "general system note", None, TS2),
    (5, 9, "user", "message of a conversation that is gone", None, TS2),
]
FLAT_EVALUATIONS = [(1, 2, 1, "draft", 0.7, '{"clarity": 0.8}', "more detail", 1, TS),
                    (2, 2, 2, "final", 0.9, '{"clarity": 0.95}', None, 0, TS2),
                    (3, 5, 1, "first", 0.5, None, None, 1, TS)]


def _vec(*xs: float) -> bytes:
    return struct.pack(f"<{len(xs)}f", *xs)


def _fill_tasks_db(con: sqlite3.Connection, wal: bool) -> None:
    plans = FLAT_WAL_PLANS if wal else FLAT_PLANS
    tasks = FLAT_WAL_TASKS if wal else FLAT_TASKS
    if not wal:
        _script(con, TASKS_DB_SCHEMA)
    con.execute("BEGIN")
    con.executemany("INSERT INTO plans (id, title, description, status, config_json, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(*p, p[5]) for p in plans])
    con.executemany("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", tasks)
    con.executemany("INSERT INTO plan_tasks VALUES (?, ?, ?, ?)",
                    FLAT_WAL_PLAN_TASKS if wal else FLAT_PLAN_TASKS)
    if wal:
        con.executemany("INSERT OR REPLACE INTO task_outputs VALUES (?, ?)", FLAT_WAL_OUTPUTS)
        con.executemany("INSERT INTO task_links VALUES (?, ?, ?)", [(20, 21, "requires")])
        con.executemany("INSERT INTO chat_messages VALUES (?, ?, ?, ?, ?)", FLAT_WAL_CHAT)
    else:
        con.executemany("INSERT INTO task_links VALUES (?, ?, ?)", FLAT_LINKS)
        con.executemany("INSERT INTO task_inputs VALUES (?, ?)", FLAT_INPUTS)
        con.executemany("INSERT INTO task_outputs VALUES (?, ?)", FLAT_OUTPUTS)
        con.executemany("INSERT INTO task_contexts (task_id, label, combined, sections, meta) "
                        "VALUES (?, ?, ?, ?, ?)", FLAT_CONTEXTS)
        con.executemany("INSERT INTO task_embeddings VALUES (?, ?, ?)",
                        [(1, _vec(0.1, 0.2), "emb-small"), (2, _vec(0.3, 0.4), "emb-small")])
        con.executemany("INSERT INTO evaluation_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        FLAT_EVALUATIONS)
        con.execute("INSERT INTO evaluation_configs VALUES (2, 0.8, 3, '[\"clarity\"]', 0)")
        con.executemany("INSERT INTO chat_messages VALUES (?, ?, ?, ?, ?)", FLAT_CHAT)
        con.executemany("INSERT INTO conversations (id, plan_id, title, created_at, "
                        "updated_at) VALUES (?, ?, ?, ?, ?)",
                        [(*c, c[3]) for c in FLAT_CONVERSATIONS])
        con.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)", FLAT_MESSAGES)
    con.execute("COMMIT")


# Caches (flat and old-root twins). A key is the old code's sha256 of "model\0input".
def cache_key(model: str, text: str) -> str:
    import hashlib
    return hashlib.sha256(f"{model}\x00{text}".encode()).hexdigest()


OLD_EMBEDDING_CACHE = """
CREATE TABLE embedding_cache (
    text_hash TEXT PRIMARY KEY, text TEXT, model TEXT, embedding BLOB, dimension INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
"""
OLD_LLM_CACHE = """
CREATE TABLE llm_cache (
    cache_key TEXT PRIMARY KEY, model TEXT, prompt TEXT, response TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
"""
# (model, text, vector): "shared" exists in the flat dir AND the old root (the root's is newer)
FLAT_EMBEDDINGS = [("emb-small", "hello", (0.1, 0.2, 0.3)),
                   ("emb-small", "shared", (9.0, 9.0, 9.0)),
                   ("emb-large", "flat only sentinel-emb", (0.5, 0.5, 0.5))]
ROOT_EMBEDDINGS = [("emb-small", "shared", (1.0, 2.0, 3.0)),
                   ("emb-small", "root only", (4.0, 5.0, 6.0))]
FLAT_LLM = [("gpt-4", "what is 2+2", "4 (old flat answer)"),
            ("gpt-4", "shared prompt", "FLAT STALE ANSWER"),
            ("gpt-4", "flat-only prompt sentinel-llm", "flat answer")]
ROOT_LLM = [("gpt-4", "shared prompt", "root newer answer"),
            ("gpt-4", "root-only prompt", "root answer")]


def _fill_embedding_cache(con, rows, stamp=TS):
    _script(con, OLD_EMBEDDING_CACHE)
    con.executemany("INSERT INTO embedding_cache VALUES (?, ?, ?, ?, ?, ?)",
                    [(cache_key(m, t), t, m, _vec(*v), len(v), stamp) for m, t, v in rows])


def _fill_llm_cache(con, rows, stamp=TS):
    _script(con, OLD_LLM_CACHE)
    con.executemany("INSERT INTO llm_cache VALUES (?, ?, ?, ?, ?)",
                    [(cache_key(m, p), m, p, r, stamp) for m, p, r in rows])


def build_flat_dir(path: Path) -> dict:
    """Write the flat legacy directory into `path`; return what was written."""
    path.mkdir(parents=True, exist_ok=True)
    wal_only(path / "tasks.db", lambda c: _fill_tasks_db(c, wal=False),
             lambda c: _fill_tasks_db(c, wal=True))
    _plain(path / "embedding_cache.db", lambda c: _fill_embedding_cache(c, FLAT_EMBEDDINGS))
    _plain(path / "llm_cache.db", lambda c: _fill_llm_cache(c, FLAT_LLM))

    def stats(con):
        _script(con, "CREATE TABLE api_calls (id INTEGER PRIMARY KEY, model TEXT, "
                     "prompt_tokens INTEGER, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);"
                     "CREATE TABLE daily_stats (day TEXT PRIMARY KEY, calls INTEGER);")
        con.executemany("INSERT INTO api_calls VALUES (?, ?, ?, ?)",
                        [(i, "gpt-4", 100 * i, TS) for i in range(1, 6)])
        con.execute("INSERT INTO daily_stats VALUES ('2024-03-01', 5)")

    _plain(path / "statistics.db", stats)
    garbage(path / "notes.db")
    return {
        "plans": FLAT_PLANS + FLAT_WAL_PLANS,
        "wal_plans": FLAT_WAL_PLANS,
        "tasks": FLAT_TASKS + FLAT_WAL_TASKS,
        "no_home_tables": {"task_embeddings": 2, "evaluation_history": 3,
                           "evaluation_configs": 1},
        "statistics_rows": {"api_calls": 5, "daily_stats": 1},
        "chat": FLAT_CHAT + FLAT_WAL_CHAT,
        "conversations": FLAT_CONVERSATIONS,
        "messages": FLAT_MESSAGES,
    }


# =============================================================================================
# 2. the older DB_ROOT
# =============================================================================================

OLD_REGISTRY = """
CREATE TABLE plans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    owner TEXT,
    description TEXT,
    metadata_json TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE plan_decomposition_job_index (
    job_id TEXT PRIMARY KEY,
    plan_id INTEGER,
    job_type TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE chat_sessions (
    id TEXT PRIMARY KEY,
    name TEXT,
    plan_id INTEGER,
    plan_title TEXT,
    current_task_id INTEGER,
    current_task_name TEXT,
    last_message_at TIMESTAMP,
    metadata_json TEXT,
    is_active INTEGER DEFAULT 1,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE chat_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT,
    metadata_json TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE chat_action_runs (
    id TEXT PRIMARY KEY,
    session_id TEXT,
    plan_id INTEGER,
    user_message TEXT,
    mode TEXT,
    status TEXT,
    context_json TEXT,
    history_json TEXT,
    structured_json TEXT,
    result_json TEXT,
    errors_json TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    started_at TIMESTAMP,
    finished_at TIMESTAMP
);
"""
UNSAFE_SESSION = "ops team:\u03b1"          # unsafe characters in the file name
CONTENT_SESSION = "user@example.com/7"       # unsafe id held in the file's plan_meta
CONTENT_SESSION_FILE = "session_legacy-7.sqlite"
# (id, name, plan_id, plan_title, metadata_json)
ROOT_CHAT_SESSIONS = [
    ("abc123", "Planning chat sentinel-session", 1, "Old plan v2 sentinel-root-1",
     '{"ui": "web"}'),
    (UNSAFE_SESSION, "Ops", None, None, None),
    ("gone-plan-session", "Bound to a deleted plan", 11, "Plan eleven", None),
]
# (id, session_id, role, content, metadata_json): ids with gaps, the sequence above them
ROOT_CHAT_MESSAGES = [
    (5, "abc123", "user", "hello sentinel-root-chat", None),
    (6, "abc123", "assistant", "hi, my key is " + "sk-legacyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6",
     '{"model": "gpt-4"}'),
    (9, UNSAFE_SESSION, "user", "ops message", None),
]
ROOT_CHAT_SEQUENCE = 20
ROOT_CHAT_RUNS = [("run-1", "abc123", 1, "decompose it", "plan", "completed",
                   '{"depth": 2}', None, None, '{"ok": true}', None)]
# Session memories, old shape: (memory id, content, keywords json, embedding)
SESSION_MEMORIES = {
    "abc123": [("m1", "remember the deploy window sentinel-memory", '["deploy"]',
                (1.0, 0.0, 0.0)),
               ("m2", "customer prefers email", '["email"]', (0.0, 1.0, 0.0))],
    UNSAFE_SESSION: [("m1", "ops runbook lives in the wiki sentinel-unsafe", None, None)],
    CONTENT_SESSION: [("m9", "content-named session memory sentinel-content", None,
                       (0.6, 0.8, 0.0))],
}
OLD_SESSION = """
CREATE TABLE plan_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE memories (
    id TEXT PRIMARY KEY,
    memory_type TEXT DEFAULT 'conversation',
    content TEXT NOT NULL,
    importance TEXT DEFAULT 'medium',
    keywords TEXT,
    context TEXT,
    related_task_id INTEGER,
    metadata_json TEXT,
    retrieval_count INTEGER DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE memory_embeddings (
    memory_id TEXT NOT NULL,
    model TEXT NOT NULL,
    dimension INTEGER,
    embedding BLOB,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (memory_id, model)
);
"""

JOBS_V2 = """
CREATE TABLE decomposition_jobs (
    job_id TEXT PRIMARY KEY, job_type TEXT, mode TEXT, target_task_id INTEGER, status TEXT,
    params_json TEXT, metadata_json TEXT, stats_json TEXT, result_json TEXT, error TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    started_at TIMESTAMP, finished_at TIMESTAMP
);
CREATE TABLE decomposition_job_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP, level TEXT, message TEXT, metadata_json TEXT
);
CREATE TABLE plan_action_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT, job_type TEXT, sequence INTEGER,
    session_id TEXT, user_message TEXT, action_kind TEXT, action_name TEXT, status TEXT,
    success INTEGER, message TEXT, parameters_json TEXT, details_json TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
"""

PLAN_V2 = """
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
    execution_result TEXT,
    context_combined TEXT,
    context_sections_json TEXT,
    context_meta_json TEXT,
    context_updated_at TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_tasks_parent ON tasks (parent_id);
CREATE TABLE task_dependencies (
    task_id INTEGER NOT NULL, depends_on INTEGER NOT NULL, PRIMARY KEY (task_id, depends_on)
);
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT, snapshot_json TEXT NOT NULL, note TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
""" + JOBS_V2

# Version 1: no context_*, execution_result or metadata_json on tasks; columns in another order;
# no snapshots and no plan_action_logs table; jobs without job_type/metadata_json.
PLAN_V1 = """
CREATE TABLE plan_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE tasks (
    parent_id INTEGER,
    name TEXT NOT NULL,
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    depth INTEGER DEFAULT 0,
    status TEXT,
    path TEXT,
    instruction TEXT,
    position INTEGER,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE task_dependencies (depends_on INTEGER NOT NULL, task_id INTEGER NOT NULL);
CREATE TABLE decomposition_jobs (
    status TEXT, job_id TEXT PRIMARY KEY, mode TEXT, target_task_id INTEGER,
    params_json TEXT, result_json TEXT, error TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE decomposition_job_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, message TEXT,
    level TEXT, timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
"""

# Schema version none: plan_meta without schema_version; only tasks and dependencies.
PLAN_V0 = """
CREATE TABLE plan_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, status TEXT, parent_id INTEGER,
    position INTEGER, path TEXT, depth INTEGER, instruction TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE task_dependencies (task_id INTEGER NOT NULL, depends_on INTEGER NOT NULL);
"""

# Registry rows: (id, title, owner, description, metadata_json)
ROOT_PLANS = [
    (1, "Old plan v2 sentinel-root-1", "ana", "full v2 file", '{"team": "core"}'),
    (2, "Old plan v1", "bo", None, None),
    (3, "Old plan without version", None, "plan_meta has no schema_version", None),
    (4, "Plan whose file is missing", "ana", None, None),
    (5, "Plan whose file is garbage", None, None, None),
    (9, "Old plan v2 in WAL", "cy", None, '{"wal": true}'),
]
ROOT_SEQUENCE = 12  # plans 10..12 were created and deleted by the old code
ORPHAN_PLAN_ID = 7
CORRUPT_ORPHAN_ID = 40

# Per plan file: tasks (id, name, status, instruction, parent_id, position, path, depth)
ROOT_TASKS = {
    1: [(1, "Root A", "done", "do A", None, 0, "/1", 0),
        (2, "Child A1 sentinel-root-task", "pending", None, 1, 0, "/1/2", 1),
        (3, "Child A2", "pending", None, 1, 1, "/1/3", 1),
        (4, "Root B", "pending", None, None, 1, "/4", 0)],
    2: [(1, "v1 root", "pending", "v1 instruction", None, 0, "/1", 0),
        (2, "v1 child", "done", None, 1, 0, "/1/2", 1),
        (3, "v1 grandchild", "pending", None, 2, 0, "/1/2/3", 2)],
    3: [(1, "unversioned task", "pending", None, None, 0, "/1", 0),
        (2, "unversioned child", "pending", None, 1, 0, "/1/2", 1)],
    7: [(1, "orphan task sentinel-orphan", "pending", None, None, 0, "/1", 0)],
    9: [(1, "checkpointed task", "pending", None, None, 0, "/1", 0)],
}
ROOT_WAL_TASKS = {9: [(2, "task only in plan_9 WAL sentinel-root-wal", "pending", None, 1, 0,
                       "/1/2", 1)]}
ROOT_DEPS = {1: [(3, 2), (4, 1)], 2: [(3, 1)], 3: [(2, 1)], 7: [], 9: []}
ROOT_WAL_DEPS = {9: [(2, 1)]}


def _plan_file(con, plan_id: int, ddl: str, meta: dict, *, full: bool) -> None:
    _script(con, ddl)
    con.execute("BEGIN")
    con.executemany("INSERT INTO plan_meta VALUES (?, ?)", list(meta.items()))
    for t in ROOT_TASKS[plan_id]:
        tid, name, status, instr, parent, pos, path, depth = t
        if full:
            con.execute(
                "INSERT INTO tasks (id, name, status, instruction, parent_id, position, path, "
                "depth, metadata_json, execution_result, context_combined, "
                "context_sections_json, context_meta_json, context_updated_at, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (tid, name, status, instr, parent, pos, path, depth, json.dumps({"old": tid}),
                 f"result of {tid}", f"context {tid}", json.dumps([f"sec {tid}"]),
                 json.dumps({"m": tid}), TS, TS, TS2))
        else:
            con.execute(
                "INSERT INTO tasks (id, name, status, instruction, parent_id, position, path, "
                "depth, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (tid, name, status, instr, parent, pos, path, depth, TS, TS2))
    con.executemany("INSERT INTO task_dependencies (task_id, depends_on) VALUES (?, ?)",
                    ROOT_DEPS[plan_id])
    con.execute("COMMIT")


def _jobs_v2(con, prefix: str, with_secret: bool = False) -> None:
    """Two jobs, three logs, two action logs in v2 shape (tables already created)."""
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO decomposition_jobs (job_id, job_type, mode, target_task_id, status, "
        "params_json, metadata_json, stats_json, result_json, error, created_at, updated_at, "
        "started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(f"{prefix}-job-1", "plan_decompose", "bfs", 1, "succeeded", '{"depth": 2}',
          '{"by": "old"}', '{"nodes": 3}', '{"ok": true}', None, TS, TS2, TS, TS2),
         (f"{prefix}-job-2", "task_decompose", "dfs", 2, "failed", None, None, None, None,
          "boom", TS2, TS2, TS2, None)])
    con.executemany(
        "INSERT INTO decomposition_job_logs (job_id, timestamp, level, message, metadata_json) "
        "VALUES (?, ?, ?, ?, ?)",
        [(f"{prefix}-job-1", TS, "info", f"{prefix} started sentinel-log", '{"step": 1}'),
         (f"{prefix}-job-1", TS2, "info", "finished", None),
         (f"{prefix}-job-2", TS2, "error",
          f"failed with key {SECRET}" if with_secret else "failed", None)])
    params = {"query": "x", "api_key": SECRET} if with_secret else {"query": "x"}
    con.executemany(
        "INSERT INTO plan_action_logs (job_id, job_type, sequence, session_id, user_message, "
        "action_kind, action_name, status, success, message, parameters_json, details_json, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(f"{prefix}-job-1", "plan_decompose", 1, "abc123", "split it", "tool", "decompose",
          "completed", 1, "ok", json.dumps(params), '{"n": 3}', TS),
         (f"{prefix}-job-1", "plan_decompose", 2, "abc123", None, "tool", "summarise",
          "failed", 0, "timeout", None, None, TS2)])
    con.execute("COMMIT")


def build_old_root(root: Path) -> dict:
    """Write an older DB_ROOT at `root`; return what was written."""
    for folder in ("main", "plans", "jobs", "sessions", "cache"):
        (root / folder).mkdir(parents=True, exist_ok=True)

    def registry(con):
        _script(con, OLD_REGISTRY)
        con.execute("BEGIN")
        con.executemany("INSERT INTO plans (id, title, owner, description, metadata_json, "
                        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(*p, TS, TS2) for p in ROOT_PLANS])
        con.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'plans'", (ROOT_SEQUENCE,))
        con.executemany("INSERT INTO plan_decomposition_job_index VALUES (?, ?, ?, ?)",
                        [("p1-job-1", 1, "plan_decompose", TS),
                         ("p1-job-2", 1, "task_decompose", TS2),
                         ("sys-job-1", None, "plan_decompose", TS)])
        con.executemany("INSERT INTO chat_sessions (id, name, plan_id, plan_title, "
                        "metadata_json, last_message_at, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [(*c, TS2, TS, TS2) for c in ROOT_CHAT_SESSIONS])
        con.executemany("INSERT INTO chat_messages (id, session_id, role, content, "
                        "metadata_json, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                        [(*m, TS) for m in ROOT_CHAT_MESSAGES])
        con.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'chat_messages'",
                    (ROOT_CHAT_SEQUENCE,))
        con.executemany("INSERT INTO chat_action_runs (id, session_id, plan_id, user_message, "
                        "mode, status, context_json, history_json, structured_json, "
                        "result_json, errors_json, created_at, updated_at, started_at, "
                        "finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(*r, TS, TS2, TS, TS2) for r in ROOT_CHAT_RUNS])
        con.execute("COMMIT")

    _plain(root / "main" / "plan_registry.db", registry)

    plans = root / "plans"

    def v2(plan_id, title):
        def fill(con):
            _plan_file(con, plan_id, PLAN_V2, {
                "schema_version": "2", "plan_id": str(plan_id), "title": title,
                "created_at": TS}, full=True)
            if plan_id == 1:
                _jobs_v2(con, "p1")
                con.execute("INSERT INTO snapshots (snapshot_json, note, created_at) "
                            "VALUES (?, ?, ?)", (json.dumps({"id": 1, "title": title,
                                                             "nodes": []}), "before", TS))
        return fill

    _plain(plans / "plan_1.sqlite", v2(1, ROOT_PLANS[0][1]))

    def v1(con):
        _plan_file(con, 2, PLAN_V1, {"schema_version": "1", "plan_id": "2"}, full=False)
        con.execute("INSERT INTO decomposition_jobs (status, job_id, mode, target_task_id, "
                    "params_json, result_json, error) VALUES "
                    "('queued', 'p2-job-1', 'bfs', 1, '{}', NULL, NULL)")
        con.execute("INSERT INTO decomposition_job_logs (job_id, message, level, timestamp) "
                    "VALUES ('p2-job-1', 'v1 log sentinel-v1-log', 'info', ?)", (TS,))

    _plain(plans / "plan_2.sqlite", v1)
    _plain(plans / "plan_3.sqlite", lambda c: _plan_file(
        c, 3, PLAN_V0, {"plan_id": "3", "title": ROOT_PLANS[2][1]}, full=False))
    # plan 4: registry row, no file. plan 5: registry row, garbage file. plan 40: garbage
    # file and no row (its id must never be handed out again either).
    garbage(plans / "plan_5.sqlite")
    garbage(plans / f"plan_{CORRUPT_ORPHAN_ID}.sqlite")
    # plan 7: file, no registry row (an orphan), its title only in its own plan_meta
    _plain(plans / f"plan_{ORPHAN_PLAN_ID}.sqlite", v2(ORPHAN_PLAN_ID, "Orphan plan sentinel"))

    def wal_newer(con):
        con.execute("BEGIN")
        for t in ROOT_WAL_TASKS[9]:
            con.execute("INSERT INTO tasks (id, name, status, instruction, parent_id, position, "
                        "path, depth, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                        "?, ?)", (*t, TS, TS2))
        con.executemany("INSERT INTO task_dependencies VALUES (?, ?)", ROOT_WAL_DEPS[9])
        con.execute("COMMIT")

    wal_only(plans / "plan_9.sqlite", v2(9, ROOT_PLANS[5][1]), wal_newer)

    def system_jobs(con):
        _script(con, "CREATE TABLE plan_meta (key TEXT PRIMARY KEY, value TEXT);"
                     "INSERT INTO plan_meta VALUES ('schema_version', '2');" + JOBS_V2)
        _jobs_v2(con, "sys", with_secret=True)

    _plain(root / "jobs" / "system_jobs.sqlite", system_jobs)

    def session(sid, meta):
        def fill(con):
            _script(con, OLD_SESSION)
            con.execute("BEGIN")
            con.executemany("INSERT INTO plan_meta VALUES (?, ?)", list(meta.items()))
            for mid, content, keywords, vec in SESSION_MEMORIES[sid]:
                con.execute("INSERT INTO memories (id, content, keywords, related_task_id, "
                            "metadata_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (mid, content, keywords, 2, '{"src": "old"}', TS, TS2))
                if vec is not None:
                    con.execute("INSERT INTO memory_embeddings VALUES (?, ?, ?, ?, ?)",
                                (mid, "emb-small", len(vec), _vec(*vec), TS))
            con.execute("COMMIT")
        return fill

    sessions = root / "sessions"
    _plain(sessions / "session_abc123.sqlite", session("abc123", {"schema_version": "2"}))
    _plain(sessions / f"session_{UNSAFE_SESSION}.sqlite",
           session(UNSAFE_SESSION, {"schema_version": "2"}))
    _plain(sessions / CONTENT_SESSION_FILE,
           session(CONTENT_SESSION, {"schema_version": "2", "session_id": CONTENT_SESSION}))

    _plain(root / "cache" / "embedding_cache.db",
           lambda c: _fill_embedding_cache(c, ROOT_EMBEDDINGS, TS2))
    _plain(root / "cache" / "llm_cache.db", lambda c: _fill_llm_cache(c, ROOT_LLM, TS2))

    for p in root.rglob("*"):
        if p.is_file():
            os.chmod(p, 0o644)  # the old code did not care; plandb makes them 0600
    return {
        "plans": ROOT_PLANS,
        "sequence": ROOT_SEQUENCE,
        "orphan": ORPHAN_PLAN_ID,
        "missing": 4,
        "garbage": 5,
        "corrupt_orphan": CORRUPT_ORPHAN_ID,
        "tasks": {pid: ROOT_TASKS[pid] + ROOT_WAL_TASKS.get(pid, []) for pid in ROOT_TASKS},
        "deps": {pid: ROOT_DEPS[pid] + ROOT_WAL_DEPS.get(pid, []) for pid in ROOT_DEPS},
        "secret": SECRET,
        "chat_sessions": ROOT_CHAT_SESSIONS,
        "chat_messages": ROOT_CHAT_MESSAGES,
        "chat_sequence": ROOT_CHAT_SEQUENCE,
        "chat_runs": ROOT_CHAT_RUNS,
        "memories": SESSION_MEMORIES,
        "unsafe_session": UNSAFE_SESSION,
        "content_session": CONTENT_SESSION,
    }


# =============================================================================================
# 3. reading a migrated root back, independently of plandb
# =============================================================================================


def _ro(path: Path) -> sqlite3.Connection:
    """Read-only; immutable (no side file created) when no -wal says a writer may be live."""
    if Path(f"{path}-wal").exists():
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    return sqlite3.connect(f"file:{path}?immutable=1", uri=True)


def _all(path: Path, sql: str, params=()) -> list:
    con = _ro(path)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def _j(text):
    return None if text is None else json.loads(text)


def plan_key(metadata: dict | None, plan_id: int) -> str:
    """Imported plans get a new id each run: name them by their import reference."""
    ref = ((metadata or {}).get("legacy") or {}).get("import_ref")
    return f"import:{ref}" if ref else f"id:{plan_id}"


def dump_plan(path: Path) -> dict:
    tasks = _all(path, "SELECT id, name, status, instruction, parent_id, path, depth, metadata, "
                       "execution_result, context_combined, context_sections, context_meta, "
                       "context_updated_at, created_at FROM tasks ORDER BY parent_id, position")
    out: dict = {"tasks": {}, "deps": sorted(_all(
        path, "SELECT task_id, depends_on FROM task_dependencies"))}
    rank: dict = {}
    for t in tasks:
        r = rank[t[4]] = rank.get(t[4], -1) + 1
        out["tasks"][t[0]] = {"name": t[1], "status": t[2], "instruction": t[3], "parent": t[4],
                              "rank": r, "path": t[5], "depth": t[6], "metadata": _j(t[7]),
                              "result": t[8], "context": t[9], "sections": _j(t[10]),
                              "context_meta": _j(t[11]), "context_at": t[12],
                              "created_at": t[13]}
    meta = dict(_all(path, "SELECT key, value FROM plan_meta"))
    out["meta"] = {k: v for k, v in meta.items() if k not in ("updated_at", "legacy_meta_filled")}
    out["meta"]["metadata"] = _j(meta.get("metadata"))
    out["snapshots"] = _all(path, "SELECT id, note, created_at FROM snapshots ORDER BY id")
    out["jobs"] = _all(path, "SELECT job_id, job_type, status, params, result, created_at "
                             "FROM decomposition_jobs ORDER BY job_id")
    out["job_logs"] = _all(path, "SELECT id, job_id, level, message, metadata "
                                 "FROM decomposition_job_logs ORDER BY id")
    out["action_logs"] = _all(path, "SELECT id, job_id, sequence, action_name, parameters "
                                    "FROM plan_action_logs ORDER BY id")
    return out


def dump_root(root: Path) -> dict:
    """Everything a migration must bring over, named so two runs can be compared."""
    reg = root / "main" / "plan_registry.db"
    plans = {}
    keys = {}
    for pid, title, owner, desc, meta, state, count in _all(
            reg, "SELECT id, title, owner, description, metadata, state, task_count "
                 "FROM plans ORDER BY id"):
        m = _j(meta)
        key = plan_key(m, pid)
        assert key not in plans, f"two registry rows for {key}"
        keys[pid] = key
        if m and "legacy" in m:
            m = {**m, "legacy": {k: v for k, v in m["legacy"].items() if k != "source_path"}}
        file = root / "plans" / f"plan_{pid}.sqlite"
        body = dump_plan(file) if file.exists() else None
        if body is not None and key.startswith("import:"):
            # A new id and creation time each run: not part of what must arrive.
            for k in ("plan_id", "created_at"):
                body["meta"].pop(k, None)
            body["meta"]["metadata"]["legacy"].pop("source_path", None)
            for t in body["tasks"].values():
                t.pop("created_at")
        plans[key] = {"title": title, "owner": owner, "description": desc, "metadata": m,
                      "state": state, "task_count": count, "file": body}
    sessions = {}
    for row in _all(reg, "SELECT id, name, plan_id, metadata, is_active FROM chat_sessions"):
        sessions[row[0]] = {"name": row[1], "plan": keys.get(row[2], row[2]),
                            "metadata": _j(row[3]), "active": row[4]}
    messages = {}
    for sid, role, content, meta, created in _all(
            reg, "SELECT session_id, role, content, metadata, created_at FROM chat_messages "
                 "ORDER BY id"):
        messages.setdefault(sid, []).append((role, content, _j(meta), created))
    runs = _all(reg, "SELECT id, session_id, plan_id, status, context, result "
                     "FROM chat_action_runs ORDER BY id")
    index = {r[0]: (keys.get(r[1], r[1]), r[2]) for r in _all(
        reg, "SELECT job_id, plan_id, job_type FROM plan_decomposition_job_index")}
    caches = {}
    for p in sorted((root / "cache").glob("*_cache.db")):
        caches[p.name] = sorted(_all(p, "SELECT key, model, encoding, value FROM cache_entries"))
    memories = {}
    for p in sorted((root / "sessions").glob("session_*.sqlite")):
        memories[p.name] = {
            "meta": dict(_all(p, "SELECT key, value FROM plan_meta WHERE key IN "
                                 "('session_id', 'kind')")),
            "memories": _all(p, "SELECT id, content, keywords, related_task_id FROM memories "
                                "ORDER BY id"),
            "embeddings": _all(p, "SELECT memory_id, model, dimension, vector, norm > 0 "
                                  "FROM memory_embeddings ORDER BY memory_id")}
    jobs = root / "jobs" / "system_jobs.sqlite"
    return {"plans": plans, "sessions": sessions, "messages": messages, "runs": runs,
            "job_index": index, "caches": caches, "memories": memories,
            "system_jobs": dump_plan_jobs(jobs) if jobs.exists() else None}


def dump_plan_jobs(path: Path) -> dict:
    return {"jobs": _all(path, "SELECT job_id, job_type, status, params, created_at "
                               "FROM decomposition_jobs ORDER BY job_id"),
            "job_logs": _all(path, "SELECT id, job_id, message, metadata "
                                   "FROM decomposition_job_logs ORDER BY id"),
            "action_logs": _all(path, "SELECT id, job_id, sequence, parameters "
                                      "FROM plan_action_logs ORDER BY id")}


def snapshot_files(*folders: Path) -> dict[str, tuple[str, int, int]]:
    """(sha256, mtime_ns, mode) of every file below the folders, by path."""
    import hashlib

    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                st = p.stat()
                out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns,
                               st.st_mode)
    return out
