-- cache/<name>_cache.db: a key/value cache keyed by a stable hash of (model, input).
-- @include common/plan_meta.sql

-- key: sha256 hex of the canonical JSON of [model, input] (the input itself is not stored).
-- encoding 'json': redacted JSON text as UTF-8; 'f64': a list of numbers as little-endian
-- float64 (embeddings: numbers carry no secrets, and a cache must return them exactly).
-- used_us: last use, microseconds since the epoch, for least-recently-used eviction.
CREATE TABLE cache_entries (
    key         TEXT PRIMARY KEY,
    model       TEXT NOT NULL,
    encoding    TEXT NOT NULL,
    value       BLOB NOT NULL,
    size        INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    used_us     INTEGER NOT NULL,
    hits        INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX cache_entries_lru ON cache_entries (used_us);
CREATE INDEX cache_entries_expires ON cache_entries (expires_at) WHERE expires_at IS NOT NULL;

-- Counters: entries/bytes kept exact by triggers (so bounds never need a full count), and
-- hits/misses/puts/evictions/expirations/rejected added by the store in batches.
CREATE TABLE cache_counters (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO cache_counters (name, value) VALUES
    ('entries', 0), ('bytes', 0), ('hits', 0), ('misses', 0), ('puts', 0),
    ('evictions', 0), ('expirations', 0), ('rejected', 0);
CREATE TRIGGER cache_entries_added AFTER INSERT ON cache_entries BEGIN
    UPDATE cache_counters SET value = value + 1 WHERE name = 'entries';
    UPDATE cache_counters SET value = value + new.size WHERE name = 'bytes';
END;
CREATE TRIGGER cache_entries_removed AFTER DELETE ON cache_entries BEGIN
    UPDATE cache_counters SET value = value - 1 WHERE name = 'entries';
    UPDATE cache_counters SET value = value - old.size WHERE name = 'bytes';
END;
CREATE TRIGGER cache_entries_resized AFTER UPDATE OF size ON cache_entries BEGIN
    UPDATE cache_counters SET value = value - old.size + new.size WHERE name = 'bytes';
END;

-- Limits live in the file, so every process using the cache enforces the same bound.
CREATE TABLE cache_settings (
    name   TEXT PRIMARY KEY,
    value  TEXT
) WITHOUT ROWID;
