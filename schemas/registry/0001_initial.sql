-- main/plan_registry.db: the plan index.
-- @include common/plan_meta.sql

-- state: 'creating' while the plan file is being built, 'ready' once it is in place,
-- 'deleting' while it is being removed. `plandb doctor` finishes or undoes the first and last.
-- task_count / updated_at mirror the plan file so list_plans never opens plan files; they are
-- refreshed after plan writes (batched) and recomputed by doctor.
CREATE TABLE plans (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    title        TEXT NOT NULL,
    owner        TEXT,
    description  TEXT,
    metadata     TEXT,             -- JSON object
    plan_file    TEXT NOT NULL,    -- relative to DB_ROOT, e.g. plans/plan_7.sqlite
    state        TEXT NOT NULL DEFAULT 'ready' CHECK (state IN ('creating', 'ready', 'deleting')),
    task_count   INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX plans_recent ON plans (updated_at DESC, id DESC);
CREATE INDEX plans_owner_recent ON plans (owner, updated_at DESC, id DESC);
