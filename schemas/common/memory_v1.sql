-- Memories with full-text search and embeddings: in session files, and in the registry for
-- memories that belong to no session.
-- `seq` is the stable integer key the FTS index points at (a table without an INTEGER PRIMARY
-- KEY may have its rowids renumbered by VACUUM, which would silently break the index).
CREATE TABLE memories (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    memory_type       TEXT NOT NULL DEFAULT 'conversation',
    content           TEXT NOT NULL,
    importance        TEXT NOT NULL DEFAULT 'medium',
    keywords          TEXT,           -- JSON list of strings
    tags              TEXT,           -- JSON list of strings
    context           TEXT,
    related_task_id   INTEGER,
    metadata          TEXT,           -- JSON object
    -- Kept so rows adopted from the older planner lose nothing; plandb does not write them.
    links             TEXT,
    evolution_history TEXT,
    retrieval_count   INTEGER NOT NULL DEFAULT 0,
    last_accessed     TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX memories_created ON memories (created_at);
CREATE INDEX memories_type ON memories (memory_type, created_at);
CREATE INDEX memories_task ON memories (related_task_id);

-- External-content FTS5 index over memories, kept in step by the triggers below.
CREATE VIRTUAL TABLE memories_fts USING fts5(
    content, keywords, tags,
    content = 'memories', content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, content, keywords, tags)
    VALUES (new.seq, new.content, new.keywords, new.tags);
END;
CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, keywords, tags)
    VALUES ('delete', old.seq, old.content, old.keywords, old.tags);
END;
CREATE TRIGGER memories_fts_update AFTER UPDATE OF content, keywords, tags ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, keywords, tags)
    VALUES ('delete', old.seq, old.content, old.keywords, old.tags);
    INSERT INTO memories_fts (rowid, content, keywords, tags)
    VALUES (new.seq, new.content, new.keywords, new.tags);
END;
-- A memory's embeddings go with it.
CREATE TRIGGER memories_embeddings_delete AFTER DELETE ON memories BEGIN
    DELETE FROM memory_embeddings WHERE memory_id = old.id;
END;

-- One vector per (memory, model): little-endian float32, `dimension` values; `norm` is its
-- Euclidean length, stored so cosine similarity needs one dot product per candidate.
CREATE TABLE memory_embeddings (
    memory_id   TEXT NOT NULL,
    model       TEXT NOT NULL,
    dimension   INTEGER NOT NULL,
    vector      BLOB NOT NULL,
    norm        REAL NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (memory_id, model)
) WITHOUT ROWID;
CREATE INDEX memory_embeddings_model ON memory_embeddings (model, dimension);
