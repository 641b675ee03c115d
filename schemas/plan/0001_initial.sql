-- One plan per file: its meta, task tree, dependencies and snapshots.
-- @include common/plan_meta.sql

-- The tree: parent_id + position (sibling order, sparse integers with gaps so an insert does
-- not rewrite its siblings) + materialised path ('/1/5/12', ids from the root) + depth (0 = root).
CREATE TABLE tasks (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'pending',
    instruction         TEXT,
    parent_id           INTEGER REFERENCES tasks (id),
    position            INTEGER NOT NULL,
    path                TEXT NOT NULL,
    depth               INTEGER NOT NULL,
    metadata            TEXT,           -- JSON object
    execution_result    TEXT,
    context_combined    TEXT,
    context_sections    TEXT,           -- JSON list
    context_meta        TEXT,           -- JSON object
    context_updated_at  TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX tasks_parent_position ON tasks (parent_id, position);
CREATE UNIQUE INDEX tasks_path ON tasks (path);

CREATE TABLE task_dependencies (
    task_id     INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    depends_on  INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, depends_on),
    CHECK (task_id <> depends_on)
) WITHOUT ROWID;
CREATE INDEX task_dependencies_depends_on ON task_dependencies (depends_on);

CREATE TABLE snapshots (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    snapshot    TEXT NOT NULL,      -- JSON: the whole tree as get_plan_tree returns it
    note        TEXT,
    created_at  TEXT NOT NULL
);

-- @include common/jobs_v1.sql
