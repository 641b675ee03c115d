"""Old cache files -> plandb caches (``cache/<name>_cache.db``, table ``cache_entries``).

The older planner kept ``embedding_cache(text_hash, text, model, embedding, ...)`` (float32
vectors) and ``llm_cache(cache_key, model, prompt, response, ...)``, keyed by its own hashes.
plandb keys an entry by `stores.cache.cache_key(model, input)`, so each old row is re-keyed
from its model and input (rows whose input was not stored cannot be re-keyed: they stay in the
backup copy and are counted in the report). Values are encoded exactly as `CacheStore.put`
would (embeddings as exact float64, responses as redacted JSON); created_at is kept.

- An old cache file **inside the root** (``cache/llm_cache.db`` in the old shape) is rebuilt:
  a new file is written under temp/ from the backup copy, the old file's -wal is folded in,
  and the new file is renamed over it (atomic; the old content is in the backup).
- An old cache **in the flat directory** is a twin of the root's, and older than it: it is
  merged with ``INSERT OR IGNORE``, so only keys the root does not have are added and an
  entry the root already holds is never overwritten, whatever either side's timestamps say.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw

from .. import jsonutil, schema
from ..config import make_private
from ..connection import open_connection
from ..errors import PlanDBError
from ..timestamps import normalize, now
from ..transaction import write
from .legacy_files import fsync_path

if TYPE_CHECKING:
    from .legacy import Run
    from .legacy_root import RootPlan

TABLE_TO_CACHE = {"embedding_cache": "embedding", "llm_cache": "llm"}


@dataclass(slots=True)
class Entry:
    """One old cache row: enough to re-key and re-encode it."""

    cache: str          # plandb cache name: embedding / llm
    model: str | None
    input: Any
    value: Any
    created_at: str | None

    def key(self) -> str | None:
        if self.model is None or self.input is None or self.value is None:
            return None
        from ..payload import clean_name
        from ..stores.cache import cache_key

        try:
            return cache_key(clean_name(self.model, "model", 500), self.input)
        except PlanDBError:
            return None


def _vector(blob: Any) -> list[float] | None:
    if isinstance(blob, bytes) and blob and len(blob) % 4 == 0:
        return list(struct.unpack(f"<{len(blob) // 4}f", blob))
    if isinstance(blob, str):
        value = jsonutil.loads(blob, None)
        if isinstance(value, list) and value and all(isinstance(x, int | float) for x in value):
            return [float(x) for x in value]
    return None


def read_entries(conn: apsw.Connection) -> list[Entry]:
    """Every row of the old cache tables in the file, newest first."""
    tables = {r[0]: {c[1] for c in conn.execute("SELECT * FROM pragma_table_info(?)", (r[0],))}
              for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    out: list[Entry] = []
    spec = {"embedding_cache": ("text", "embedding"), "llm_cache": ("prompt", "response")}
    for table, (inp, val) in spec.items():
        cols = tables.get(table)
        if cols is None:
            continue
        pick = [c if c in cols else "NULL" for c in ("model", inp, val, "created_at")]
        order = "created_at DESC, rowid" if "created_at" in cols else "rowid"
        for model, i, v, created in conn.execute(
                f"SELECT {', '.join(pick)} FROM {table} ORDER BY {order}"):  # fixed names
            value = _vector(v) if table == "embedding_cache" else v
            out.append(Entry(TABLE_TO_CACHE[table], model, i, value, created))
    return out


def _used_us(stamp: str | None) -> int:
    if stamp:
        try:
            return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1e6)
        except ValueError:
            pass
    return time.time_ns() // 1000


def _insert(run: Run, tx, entries: list[Entry]) -> tuple[int, int]:
    """INSERT OR IGNORE each entry into cache_entries; returns (added, not cacheable)."""
    added = rejected = 0
    for e in entries:
        key = e.key()
        if key is None:
            rejected += 1
            continue
        store = run.repo.cache(e.cache)
        encoding, blob = store._encode(e.value)
        if blob is None:  # redaction would have to cut it: a cache must return it exactly
            rejected += 1
            continue
        try:
            created = normalize(e.created_at) if e.created_at is not None else now()
        except PlanDBError:
            created = now()
        model = run.repo.payloads.text(e.model, "model") or e.model
        tx.execute("INSERT OR IGNORE INTO cache_entries (key, model, encoding, value, size, "
                   "created_at, expires_at, used_us) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                   (key, model, encoding, blob, len(blob), created, _used_us(created)))
        added += tx.conn.changes()
    return added, rejected


# --- root caches in the old shape ------------------------------------------------------------


def convert_root_cache(run: Run, path: Path, copy: Path) -> dict:
    """Rebuild an old-shape cache file in place from its backup copy (see module doc)."""
    from .legacy_root import _fold_wal

    entries = run.reader.read(copy, read_entries)
    tmp = path.parent.parent / "temp" / f"{path.stem}.converting"
    for p in (tmp, *(Path(f"{tmp}{s}") for s in ("-wal", "-shm", "-journal"))):
        p.unlink(missing_ok=True)
    conn = open_connection(tmp, busy_timeout_ms=run.config.busy_timeout_ms)
    try:
        schema.ensure_schema(conn, tmp, "cache")
        with write(conn, tmp) as tx:
            added, rejected = _insert(run, tx, entries)
    finally:
        conn.close()  # last connection: everything checkpointed into the one file
    Path(f"{tmp}.lock").unlink(missing_ok=True)  # the schema runner's lock, no longer held
    _fold_wal(run, path)
    Path(f"{path}-shm").unlink(missing_ok=True)
    run.repo.pool.discard(path)
    os.replace(tmp, path)
    fsync_path(path.parent)
    make_private(path)
    if rejected:
        run.report.problem("cache_entries_not_converted", run.rel(path),
                           f"{rejected} old entr(y/ies) could not be re-keyed or stored "
                           "exactly (input not stored, or redaction would cut it); kept in "
                           f"{run.rel(copy)}", count=rejected)
    run.report.count("cache_entries_converted", added)
    return {"entries": added, "not_converted": rejected}


# --- flat caches -----------------------------------------------------------------------------


def _root_keys(run: Run, root_plan: RootPlan, name: str) -> set[str]:
    """Keys the root's cache <name> holds (or will hold once its old shape is converted)."""
    path = run.config.cache_db_path(name)
    f = next((f for f in root_plan.files if f.path == path), None)
    if f is None or f.status in ("corrupt", "foreign", "too_new", "stray"):
        return set()
    if f.status == "legacy_cache":
        return {k for e in run.reader.read(path, read_entries) if (k := e.key())}
    if "cache_entries" not in (f.facts.tables if f.facts else {}):
        return set()
    return {r[0] for r in run.reader.read(
        path, lambda c: c.execute("SELECT key FROM cache_entries").fetchall())}


def plan_flat_caches(run: Run, root_plan: RootPlan, files: list) -> None:
    """Plan a merge of each flat old cache into the root's (only the keys it lacks)."""
    for f, backup in files:
        entries = run.reader.read(f.path, read_entries)
        by_cache: dict[str, list[Entry]] = {}
        for e in entries:
            by_cache.setdefault(e.cache, []).append(e)
        for name, group in sorted(by_cache.items()):
            have = _root_keys(run, root_plan, name)
            fresh, seen, unkeyed = [], set(), 0
            for e in group:
                k = e.key()
                if k is None:
                    unkeyed += 1
                elif k not in have and k not in seen:
                    seen.add(k)
                    fresh.append(e)
            twins = len(group) - len(fresh) - unkeyed
            if unkeyed:
                run.report.leftover(f.name, "rows", f"{name} cache entries without input",
                                    unkeyed, "backup copy")
            if not fresh:
                if twins:
                    run.report.count("cache_entries_already_in_root", twins)
                continue
            convert = root_plan.convert_steps.get(run.rel(run.config.cache_db_path(name)))
            run.add("merge_cache", f"{f.name} -> {run.rel(run.config.cache_db_path(name))}",
                    f"add {len(fresh)} entr(y/ies) the root lacks; {twins} the root already "
                    "has are left as the root has them (the root's are newer)",
                    _merge_fn(run, f, backup, name), needs=(backup, convert),
                    new_entries=len(fresh), root_wins=twins)


def _merge_fn(run: Run, f, backup, name: str):
    def go() -> dict:
        from .legacy_flat import _copy_of

        copy = _copy_of(run, f, backup)
        entries = [e for e in run.reader.read(copy, read_entries) if e.cache == name]
        store = run.repo.cache(name)
        with store._conn() as conn, write(conn, store.path,
                                          retries=run.config.write_retries) as tx:
            added, rejected = _insert(run, tx, entries)
        run.report.count("cache_entries_merged", added)
        return {"added": added, "not_cacheable": rejected}
    return go
