-- main/plan_registry.db: chat sessions, messages, chat action runs, the decomposition job
-- index, and memories that belong to no session. Table and column names follow the older
-- planner's registry so its files are adopted column by column.
-- No foreign keys: rows adopted from older files may point at plans or sessions long gone,
-- and a constraint would refuse the whole adoption; plandb keeps references in step itself.

-- plan_title is the plan's title when it was bound (reads show the live title while the plan
-- exists). updated_at moves on every change, including a new message: it is the recency order.
CREATE TABLE chat_sessions (
    id                 TEXT PRIMARY KEY,
    name               TEXT,
    name_source        TEXT,
    is_user_named      INTEGER NOT NULL DEFAULT 0,
    metadata           TEXT,           -- JSON object
    plan_id            INTEGER,
    plan_title         TEXT,
    current_task_id    INTEGER,
    current_task_name  TEXT,
    last_message_at    TEXT,
    is_active          INTEGER NOT NULL DEFAULT 1,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX chat_sessions_recent ON chat_sessions (updated_at DESC, id DESC);
CREATE INDEX chat_sessions_plan ON chat_sessions (plan_id, updated_at DESC, id DESC);

CREATE TABLE chat_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL,
    role        TEXT NOT NULL,
    content     TEXT NOT NULL,
    metadata    TEXT,                  -- JSON object
    created_at  TEXT NOT NULL
);
-- (session_id, rowid): a session's messages in id order, for keyset pagination.
CREATE INDEX chat_messages_session ON chat_messages (session_id);

CREATE TABLE chat_action_runs (
    id            TEXT PRIMARY KEY,
    session_id    TEXT,
    user_message  TEXT NOT NULL DEFAULT '',
    mode          TEXT,
    plan_id       INTEGER,
    context       TEXT,                -- JSON
    history       TEXT,                -- JSON
    structured    TEXT,                -- JSON
    status        TEXT NOT NULL DEFAULT 'pending',
    result        TEXT,                -- JSON
    errors        TEXT,                -- JSON
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE INDEX chat_action_runs_status ON chat_action_runs (status, created_at DESC);
CREATE INDEX chat_action_runs_session ON chat_action_runs (session_id, created_at DESC);

-- job_id -> the file holding the job: plan_id, or NULL for jobs/system_jobs.sqlite. Written
-- after the job's own file has committed; `reindex_jobs` rebuilds it from the files.
CREATE TABLE plan_decomposition_job_index (
    job_id      TEXT PRIMARY KEY,
    plan_id     INTEGER,
    job_type    TEXT NOT NULL DEFAULT 'plan_decompose',
    created_at  TEXT NOT NULL
);
CREATE INDEX plan_decomposition_job_index_plan ON plan_decomposition_job_index (plan_id);
CREATE INDEX plan_decomposition_job_index_type
    ON plan_decomposition_job_index (job_type, created_at);

-- @include common/memory_v1.sql
