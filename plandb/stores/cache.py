"""Key/value caches for model calls: cache/<name>_cache.db (``embedding``, ``llm``, ...).

Get one from the repository and keep using it (it batches bookkeeping)::

    llm = repo.cache("llm")
    answer = llm.get("gpt-4o", prompt)
    if answer is None:
        answer = call_model(prompt)
        llm.put("gpt-4o", prompt, answer, ttl=3600)

- **Key**: sha256 of the canonical JSON of ``[model, input]`` (sorted keys, so equal dicts give
  equal keys in any order). The input itself is never stored.
- **Values** are model outputs and pass through the redaction layer like every payload, so a
  key or token an LLM echoed is masked in the cache too (and comes back masked on a hit). If
  redaction would have to *cut* a value (longer than the redactor's limits), it is not cached
  at all (`put` returns False, counted as ``rejected``): a cache must never return a
  different answer than the one it was given. A flat list of floats (an embedding) is stored
  exactly as float64 and skips redaction: numbers carry no secrets.
- **TTL**: per put, else the cache's ``default_ttl`` (None: no expiry). Expired entries read as
  misses and are removed by later writes.
- **Bound**: ``max_entries`` and ``max_bytes`` (of stored values), kept in the file so every
  process enforces the same limits; a put that goes over evicts expired entries, then the
  least recently used ones.
- **Stats**: hits, misses, puts, evictions, expirations, rejected, persisted in the file.
  A hit must not turn a read into a write transaction, so hits, misses and last-use times are
  counted in memory and written in one batch with the next put, every `FLUSH_EVERY` events or
  `FLUSH_SECONDS`, on `stats()` and on `repo.close()`. A killed process loses at most that
  batch of counters and recency (never entries).
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from .. import jsonutil
from ..errors import InvalidInput, PlanDBError
from ..payload import clean_name
from ..record_models import CacheStats
from ..timestamps import format_dt, now
from ..transaction import write

if TYPE_CHECKING:
    from ..repository import PlanRepository

log = logging.getLogger("plandb.cache")

NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
FLUSH_EVERY = 256
FLUSH_SECONDS = 1.0
_SETTINGS = ("max_entries", "max_bytes", "default_ttl")
_COUNTERS = ("hits", "misses", "puts", "evictions", "expirations", "rejected")
# What the redactor leaves where it had to cut (plandb.redaction's templates).
_CUT_MARKS = ("…[truncated ", "[… ")
_UNSET: Any = object()


def cache_key(model: str, value: Any) -> str:
    """sha256 hex of the canonical JSON of [model, value]; InvalidInput if not JSON-able."""
    try:
        raw = orjson.dumps([model, value], option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidInput(f"cache input must be JSON-serialisable: {exc}") from None
    return hashlib.sha256(raw).hexdigest()


def _is_vector(value: Any) -> bool:
    return (type(value) in (list, tuple) and len(value) > 0
            and all(type(x) is float for x in value))


class CacheStore:
    """One cache file. Thread-safe; obtain it with `repo.cache(name)` (one per name)."""

    def __init__(self, repo: PlanRepository, name: str):
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise InvalidInput(f"cache name {name!r} must match [a-z][a-z0-9_]{{0,39}} "
                               "(e.g. 'llm', 'embedding')")
        self.name = name
        self.path = repo.config.cache_db_path(name)
        self._repo = repo
        self._lock = threading.Lock()
        self._pending = dict.fromkeys(_COUNTERS, 0)
        self._touched: dict[str, tuple[int, int]] = {}  # key -> (last use us, hits)
        self._expired: set[str] = set()
        self._events = 0
        self._last_flush = time.monotonic()

    def __repr__(self) -> str:
        return f"CacheStore({self.name!r}, {str(self.path)!r})"

    def _conn(self):
        return self._repo._open(self.path, "cache")

    # --- reads -------------------------------------------------------------------------------

    def get(self, model: str, input: Any, default: Any = None) -> Any:
        """The cached value for (model, input), or `default` on a miss or expiry.

        Pass a sentinel as `default` to tell a cached None from a miss.
        """
        model = clean_name(model, "model", 500)
        key = cache_key(model, input)
        with self._conn() as conn:
            row = conn.execute(
                "SELECT encoding, value, expires_at FROM cache_entries WHERE key = +?",
                (key,)).fetchone()
        stamp = now()
        with self._lock:
            if row is None:
                self._pending["misses"] += 1
                found = False
            elif row[2] is not None and row[2] <= stamp:
                self._pending["misses"] += 1
                self._expired.add(key)  # removed (and counted) by the next flush
                found = False
            else:
                self._pending["hits"] += 1
                _, hits = self._touched.get(key, (0, 0))
                self._touched[key] = (time.time_ns() // 1000, hits + 1)
                found = True
            self._events += 1
        self._maybe_flush()
        return _decode(row[0], row[1]) if found else default

    def contains(self, model: str, input: Any) -> bool:
        """Whether a live entry exists (no stats, no recency change)."""
        key = cache_key(clean_name(model, "model", 500), input)
        with self._conn() as conn:
            for (expires,) in conn.execute(
                    "SELECT expires_at FROM cache_entries WHERE key = +?", (key,)):
                return expires is None or expires > now()
        return False

    # --- writes ------------------------------------------------------------------------------

    def put(self, model: str, input: Any, value: Any, *, ttl: float | None = _UNSET) -> bool:
        """Store `value` for (model, input); returns False if it was not cached (see module
        doc: a value redaction would cut, or one larger than max_bytes). `ttl` in seconds
        (None: never expires; default: the cache's default_ttl)."""
        model = clean_name(model, "model", 500)
        key = cache_key(model, input)
        if ttl is not _UNSET and ttl is not None:
            _check_ttl(ttl)
        encoding, blob = self._encode(value)
        stored_model = self._repo.payloads.text(model, "model") or model
        stamp = now()
        with self._conn() as conn, write(conn, self.path,
                                         retries=self._repo.config.write_retries) as tx:
            settings = _read_settings(tx)
            if ttl is _UNSET:
                ttl = settings["default_ttl"]
            if blob is None or len(blob) > settings["max_bytes"]:
                self._count("rejected")
                self._flush_into(tx)
                return False
            expires = None if ttl is None else _expires_at(ttl)
            tx.execute(
                "INSERT INTO cache_entries (key, model, encoding, value, size, created_at, "
                "expires_at, used_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO "
                "UPDATE SET model = excluded.model, encoding = excluded.encoding, "
                "value = excluded.value, size = excluded.size, created_at = excluded.created_at, "
                "expires_at = excluded.expires_at, used_us = excluded.used_us",
                (key, stored_model, encoding, blob, len(blob), stamp, expires,
                 time.time_ns() // 1000))
            self._count("puts")
            with self._lock:
                self._expired.discard(key)
            self._flush_into(tx)
            _evict(tx, settings, stamp)
        return True

    def delete(self, model: str, input: Any) -> bool:
        """Remove one entry; True if there was one."""
        key = cache_key(clean_name(model, "model", 500), input)
        with self._conn() as conn, write(conn, self.path) as tx:
            tx.execute("DELETE FROM cache_entries WHERE key = +?", (key,))
            return conn.changes() > 0

    def clear(self, *, reset_stats: bool = False) -> int:
        """Remove every entry (and, with reset_stats, zero the hit/miss counters); returns the
        number of entries removed."""
        with self._conn() as conn, write(conn, self.path) as tx:
            self._flush_into(tx)
            tx.execute("DELETE FROM cache_entries")
            removed = conn.changes()
            if reset_stats:
                tx.execute("UPDATE cache_counters SET value = 0 WHERE name IN "
                           "('hits', 'misses', 'puts', 'evictions', 'expirations', 'rejected')")
                with self._lock:
                    self._pending = dict.fromkeys(_COUNTERS, 0)
        return removed

    def purge_expired(self) -> int:
        """Remove expired entries now; returns how many."""
        with self._conn() as conn, write(conn, self.path) as tx:
            self._flush_into(tx)
            return _drop_expired(tx, now())

    def configure(self, *, max_entries: int | None = _UNSET, max_bytes: int | None = _UNSET,
                  default_ttl: float | None = _UNSET) -> CacheStats:
        """Set the cache's limits (stored in the file, shared by every process); None restores
        a default (no expiry for default_ttl). Evicts at once if the new bound is exceeded."""
        values: dict[str, str | None] = {}
        if max_entries is not _UNSET:
            values["max_entries"] = None if max_entries is None else str(
                _positive_int(max_entries, "max_entries"))
        if max_bytes is not _UNSET:
            values["max_bytes"] = None if max_bytes is None else str(
                _positive_int(max_bytes, "max_bytes"))
        if default_ttl is not _UNSET:
            values["default_ttl"] = None if default_ttl is None else repr(
                float(_check_ttl(default_ttl)))
        with self._conn() as conn, write(conn, self.path) as tx:
            for name, value in values.items():  # names from _SETTINGS only
                tx.execute("INSERT INTO cache_settings (name, value) VALUES (?, ?) "
                           "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                           (name, value))
            self._flush_into(tx)
            _evict(tx, _read_settings(tx), now())
        return self.stats()

    # --- stats and batching --------------------------------------------------------------------

    def stats(self) -> CacheStats:
        """Counters and limits, including this process's not yet written events."""
        self.flush()
        with self._conn() as conn:
            counters = dict(conn.execute("SELECT name, value FROM cache_counters").fetchall())
            settings = _read_settings(conn)
        hits, misses = counters.get("hits", 0), counters.get("misses", 0)
        return CacheStats(
            name=self.name, entries=counters.get("entries", 0), bytes=counters.get("bytes", 0),
            hits=hits, misses=misses, puts=counters.get("puts", 0),
            evictions=counters.get("evictions", 0), expirations=counters.get("expirations", 0),
            rejected=counters.get("rejected", 0),
            hit_rate=hits / (hits + misses) if hits + misses else None,
            max_entries=settings["max_entries"], max_bytes=settings["max_bytes"],
            default_ttl=settings["default_ttl"])

    def flush(self) -> None:
        """Write this process's pending counters, recency and expired-key removals."""
        with self._lock:
            if not self._events and not any(self._pending.values()):
                return
        with self._conn() as conn, write(conn, self.path) as tx:
            self._flush_into(tx)

    def _count(self, name: str) -> None:
        with self._lock:
            self._pending[name] += 1

    def _maybe_flush(self) -> None:
        if (self._events >= FLUSH_EVERY
                or time.monotonic() - self._last_flush >= FLUSH_SECONDS):
            try:
                self.flush()
            except PlanDBError as exc:  # bookkeeping only: the read already succeeded
                log.warning("cache %s: stats not written yet (%s)", self.name, exc)

    def _flush_into(self, tx) -> None:
        """Apply pending bookkeeping inside `tx`; restored if the transaction rolls back."""
        with self._lock:
            pending, self._pending = self._pending, dict.fromkeys(_COUNTERS, 0)
            touched, self._touched = self._touched, {}
            expired, self._expired = self._expired, set()
            self._events = 0
            self._last_flush = time.monotonic()

        def restore() -> None:
            with self._lock:
                for k, v in pending.items():
                    self._pending[k] += v
                for k, t in touched.items():
                    self._touched.setdefault(k, t)
                self._expired |= expired

        try:
            tx.executemany("INSERT INTO cache_counters (name, value) VALUES (?, ?) "
                           "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                           [(k, v) for k, v in pending.items() if v])
            tx.executemany("UPDATE cache_entries SET used_us = max(used_us, ?), "
                           "hits = hits + ? WHERE key = +?",
                           [(us, n, k) for k, (us, n) in touched.items()])
            if expired:
                stamp, gone = now(), 0
                for k in expired:  # changes() counts the statement's rows, not the triggers'
                    tx.execute("DELETE FROM cache_entries WHERE key = +? AND expires_at <= ?",
                               (k, stamp))
                    gone += tx.conn.changes()
                if gone:
                    tx.execute("UPDATE cache_counters SET value = value + ? "
                               "WHERE name = 'expirations'", (gone,))
        except BaseException:
            restore()
            raise
        # If the surrounding transaction rolls back instead, the batch is lost: counters and
        # recency only, by design (see the module doc).

    def _encode(self, value: Any) -> tuple[str, bytes | None]:
        """('f64', exact float64 bytes) for a flat float list, else ('json', redacted UTF-8);
        blob None if redaction had to cut the value."""
        if _is_vector(value):
            return "f64", struct.pack(f"<{len(value)}d", *value)
        text = self._repo.payloads.json(value)
        if text is None:
            return "json", b"null"
        if any(m in text for m in _CUT_MARKS):
            original = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
            if not any(m in original for m in _CUT_MARKS):
                return "json", None
        return "json", text.encode()


def _decode(encoding: str, blob: bytes) -> Any:
    if encoding == "f64":
        return list(struct.unpack(f"<{len(blob) // 8}d", blob))
    return jsonutil.loads(blob)


def _check_ttl(ttl: Any) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < 10 * 365 * 86400:
        raise InvalidInput(f"ttl must be a positive number of seconds (< 10 years), got {ttl!r}")
    return float(ttl)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{what} must be a positive integer, got {value!r}")
    return value


def _expires_at(ttl: float) -> str:
    return format_dt(datetime.now(UTC) + timedelta(seconds=ttl))


def _read_settings(conn) -> dict[str, Any]:
    raw = dict(conn.execute("SELECT name, value FROM cache_settings").fetchall())
    return {
        "max_entries": int(raw["max_entries"]) if raw.get("max_entries") else DEFAULT_MAX_ENTRIES,
        "max_bytes": int(raw["max_bytes"]) if raw.get("max_bytes") else DEFAULT_MAX_BYTES,
        "default_ttl": float(raw["default_ttl"]) if raw.get("default_ttl") else None,
    }


def _drop_expired(tx, stamp: str) -> int:
    tx.execute("DELETE FROM cache_entries WHERE expires_at IS NOT NULL AND expires_at <= ?",
               (stamp,))
    n = tx.conn.changes()
    if n:
        tx.execute("UPDATE cache_counters SET value = value + ? WHERE name = 'expirations'", (n,))
    return n


def _evict(tx, settings: dict[str, Any], stamp: str) -> None:
    """Bring the cache within its bounds: expired entries first, then least recently used."""
    counters = dict(tx.execute("SELECT name, value FROM cache_counters "
                               "WHERE name IN ('entries', 'bytes')").fetchall())
    if counters["entries"] <= settings["max_entries"] and counters["bytes"] <= settings[
            "max_bytes"]:
        return
    _drop_expired(tx, stamp)
    evicted = 0
    while True:
        entries, size = (tx.one("SELECT value FROM cache_counters WHERE name = 'entries'")[0],
                         tx.one("SELECT value FROM cache_counters WHERE name = 'bytes'")[0])
        over_n = entries - settings["max_entries"]
        over_b = size - settings["max_bytes"]
        if over_n <= 0 and over_b <= 0:
            break
        victims, freed = [], 0
        for key, sz in tx.execute("SELECT key, size FROM cache_entries ORDER BY used_us, key "
                                  "LIMIT ?", (max(over_n, 1) + 64,)).fetchall():
            if len(victims) >= over_n and freed >= over_b:
                break
            victims.append((key,))
            freed += sz
        if not victims:
            break
        tx.executemany("DELETE FROM cache_entries WHERE key = +?", victims)
        evicted += len(victims)
    if evicted:
        tx.execute("UPDATE cache_counters SET value = value + ? WHERE name = 'evictions'",
                   (evicted,))
