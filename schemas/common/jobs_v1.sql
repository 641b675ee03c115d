-- Decomposition jobs, their logs, and action logs: in plan files and in jobs/system_jobs.sqlite.
-- JSON columns hold redacted JSON text; timestamps are plandb's sortable UTC text.
CREATE TABLE decomposition_jobs (
    job_id          TEXT PRIMARY KEY,
    job_type        TEXT NOT NULL DEFAULT 'plan_decompose',
    mode            TEXT,
    target_task_id  INTEGER,
    status          TEXT NOT NULL DEFAULT 'queued',
    params          TEXT,             -- JSON
    metadata        TEXT,             -- JSON
    stats           TEXT,             -- JSON
    result          TEXT,             -- JSON
    error           TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT
);
CREATE INDEX decomposition_jobs_created ON decomposition_jobs (created_at);
CREATE INDEX decomposition_jobs_status ON decomposition_jobs (status, created_at);

CREATE TABLE decomposition_job_logs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    level       TEXT NOT NULL DEFAULT 'info',
    message     TEXT NOT NULL DEFAULT '',
    metadata    TEXT              -- JSON
);
CREATE INDEX decomposition_job_logs_job ON decomposition_job_logs (job_id, id);

-- `sequence` numbers the entries of one job 1, 2, 3... It is assigned inside the appending
-- write transaction (BEGIN IMMEDIATE) from action_log_sequences and the rows themselves, so
-- concurrent writers never collide or skip; UNIQUE (job_id, sequence) is the backstop.
CREATE TABLE plan_action_logs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        TEXT NOT NULL DEFAULT '',
    job_type      TEXT,
    sequence      INTEGER NOT NULL,
    session_id    TEXT,
    user_message  TEXT,
    action_kind   TEXT,
    action_name   TEXT,
    status        TEXT,
    success       INTEGER,
    message       TEXT,
    parameters    TEXT,           -- JSON
    details       TEXT,           -- JSON
    created_at    TEXT NOT NULL,
    UNIQUE (job_id, sequence)
);
CREATE INDEX plan_action_logs_created ON plan_action_logs (created_at);
-- (job_id, rowid): a job's entries in id order, for keyset pagination filtered by job.
CREATE INDEX plan_action_logs_job ON plan_action_logs (job_id);

-- The last sequence handed out per job. It outlives cleanup_action_logs, so a job whose old
-- entries were removed keeps counting up instead of reusing numbers.
CREATE TABLE action_log_sequences (
    job_id         TEXT PRIMARY KEY,
    last_sequence  INTEGER NOT NULL
) WITHOUT ROWID;
