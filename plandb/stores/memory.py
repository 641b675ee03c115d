"""Memories, their full-text index and embeddings (tables in session files, and in the
registry for memories that belong to no session).

- Full text: ``memories_fts`` is an external-content FTS5 index kept in step by triggers on
  ``memories`` (schemas/common/memory_v1.sql); a search joins it back on the stable ``seq``.
- Embeddings: one float32 vector per (memory, model), little-endian, with its dimension and
  Euclidean norm. Top-k cosine similarity is computed here in plain Python (``array`` + one
  dot product per candidate, a heap for the k best): no numpy dependency; about 0.1 ms per
  1536-dimension candidate.

Functions take a `Tx` or a connection and never commit; values arrive checked and redacted.
"""

from __future__ import annotations

import heapq
import math
import re
import sys
from array import array
from operator import mul
from typing import Any

import apsw

from .. import jsonutil, schema
from ..errors import InvalidInput
from ..record_models import Memory, MemoryEmbedding, MemoryHit
from . import cursor as cursors
from .filters import where_sql

COLUMNS = ("id, memory_type, content, importance, keywords, tags, context, related_task_id, "
           "metadata, created_at, updated_at")
_M_COLUMNS = ", ".join(f"m.{c.strip()}" for c in COLUMNS.split(","))
# Columns update may set; keys come from the repository, never from callers.
UPDATABLE = ("memory_type", "content", "importance", "keywords", "tags", "context",
             "related_task_id", "metadata")
MAX_DIMENSION = 65_536
_BIG_ENDIAN = sys.byteorder == "big"
_WORD = re.compile(r"\w+", re.UNICODE)


def _memory(row: tuple, session_id: str | None) -> Memory:
    return Memory(
        id=row[0], session_id=session_id, memory_type=row[1], content=row[2],
        importance=row[3], keywords=_str_list(row[4]), tags=_str_list(row[5]), context=row[6],
        related_task_id=row[7], metadata=jsonutil.loads(row[8], {}) or {},
        created_at=row[9], updated_at=row[10])


def _str_list(text: Any) -> list[str]:
    value = jsonutil.loads(text, [])
    if isinstance(value, list):
        return [v if isinstance(v, str) else str(v) for v in value]
    return [value] if isinstance(value, str) and value else []  # legacy free text


def _one(conn, sql: str, params: Any = ()) -> Any:
    for row in conn.execute(sql, params):
        return row
    return None


def stamp_write(tx, stamp: str) -> None:
    """Record the time of this write in plan_meta (session files): cleanup reads it."""
    tx.execute("INSERT INTO plan_meta (key, value) VALUES ('last_write_at', ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (stamp,))


def last_write_at(conn) -> str | None:
    row = _one(conn, "SELECT value FROM plan_meta WHERE key = 'last_write_at'")
    return None if row is None else row[0]


# --- memories ----------------------------------------------------------------------------------


def exists(conn, memory_id: str) -> bool:
    return _one(conn, "SELECT 1 FROM memories WHERE id = +?", (memory_id,)) is not None


def insert(tx, values: dict[str, Any]) -> None:
    cols = ("id", "memory_type", "content", "importance", "keywords", "tags", "context",
            "related_task_id", "metadata", "created_at", "updated_at")
    tx.execute(f"INSERT INTO memories ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
               tuple(values[c] for c in cols))


def get(conn, memory_id: str, session_id: str | None) -> Memory | None:
    row = _one(conn, f"SELECT {COLUMNS} FROM memories WHERE id = +?", (memory_id,))
    return None if row is None else _memory(row, session_id)


def update(tx, memory_id: str, values: dict[str, Any], stamp: str) -> bool:
    sets = [f"{k} = ?" for k in values if k in UPDATABLE]
    assert len(sets) == len(values)
    tx.execute(f"UPDATE memories SET {', '.join(sets + ['updated_at = ?'])} WHERE id = +?",
               (*values.values(), stamp, memory_id))
    return tx.conn.changes() > 0


def delete(tx, memory_id: str) -> bool:
    """Delete a memory; its FTS entry and embeddings go with it (triggers)."""
    tx.execute("DELETE FROM memories WHERE id = +?", (memory_id,))
    return tx.conn.changes() > 0


def _filters(memory_type, related_task_id, importance, prefix="") -> tuple[list[str], list]:
    where, params = [], []
    if memory_type is not None:
        where.append(f"{prefix}memory_type = +?")
        params.append(memory_type)
    if related_task_id is not None:
        where.append(f"{prefix}related_task_id = +?")
        params.append(related_task_id)
    if importance is not None:
        where.append(f"{prefix}importance = +?")
        params.append(importance)
    return where, params


def list_memories(conn, session_id: str | None, *, memory_type, related_task_id, importance,
                  limit: int, offset: int) -> list[Memory]:
    """Newest first."""
    where, params = _filters(memory_type, related_task_id, importance)
    sql = (f"SELECT {COLUMNS} FROM memories" + where_sql(where)
           + " ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?")
    return [_memory(r, session_id) for r in conn.execute(sql, (*params, limit, offset))]


PAGE_SCOPE = "memories"


def page_memories(conn, session_id: str | None, *, after: int | None, descending: bool,
                  limit: int, memory_type, related_task_id, importance
                  ) -> tuple[list[Memory], str | None]:
    """Keyset page on the append-only ``seq``: each memory once, even while others are added."""
    where, params = _filters(memory_type, related_task_id, importance)
    if after is not None:
        where.insert(0, "seq < ?" if descending else "seq > ?")
        params.insert(0, after)
    sql = (f"SELECT seq, {COLUMNS} FROM memories"
           + where_sql(where)
           + f" ORDER BY seq {'DESC' if descending else 'ASC'} LIMIT ?")
    rows = conn.execute(sql, (*params, limit + 1)).fetchall()
    rows, nxt = cursors.page(rows, limit, PAGE_SCOPE, descending)
    return [_memory(r[1:], session_id) for r in rows], nxt


def count(conn) -> int:
    return _one(conn, "SELECT count(*) FROM memories")[0]


# --- full-text search --------------------------------------------------------------------------


def match_expression(query: str, *, raw: bool, any_term: bool) -> str:
    """The FTS5 MATCH text for a user query.

    By default every word becomes a quoted term (so punctuation and FTS5 operators in user
    text are plain words), all required (`any_term`: any one). `raw` passes FTS5 syntax as is.
    """
    if raw:
        if not query.strip():
            raise InvalidInput("search query must not be blank")
        return query
    terms = _WORD.findall(query)
    if not terms:
        raise InvalidInput("search query has no words to look for")
    return (" OR " if any_term else " ").join(f'"{t}"' for t in terms[:64])


def search_text(conn, session_id: str | None, expression: str, *, limit: int,
                memory_type: str | None) -> list[MemoryHit]:
    where, params = _filters(memory_type, None, None, "m.")
    sql = (f"SELECT {_M_COLUMNS}, f.rank FROM memories_fts AS f JOIN memories AS m "
           "ON m.seq = f.rowid WHERE memories_fts MATCH ?"
           + "".join(" AND " + w for w in where) + " ORDER BY f.rank LIMIT ?")
    try:
        rows = conn.execute(sql, (expression, *params, limit)).fetchall()
    except apsw.SQLError as exc:  # FTS5 syntax errors in a raw query
        raise InvalidInput(f"bad full-text query {expression!r}: {exc}") from None
    return [MemoryHit(_memory(r[:-1], session_id), -float(r[-1])) for r in rows]


# --- embeddings --------------------------------------------------------------------------------


def vector_array(vector: Any) -> array:
    """A float32 array from a sequence of finite real numbers (1..65536 of them)."""
    if isinstance(vector, str | bytes | dict) or not hasattr(vector, "__len__"):
        raise InvalidInput("vector must be a sequence of numbers")
    n = len(vector)
    if not 1 <= n <= MAX_DIMENSION:
        raise InvalidInput(f"vector has {n} values; it must have 1 to {MAX_DIMENSION}")
    try:
        if bool in set(map(type, vector)):  # True would pass as 1.0: a caller's mistake
            raise TypeError
        arr = array("f", vector)
    except (TypeError, OverflowError):
        raise InvalidInput("vector must hold only real numbers within float32 range") from None
    # One C-speed pass: a NaN or infinity anywhere makes the sum non-finite, and finite
    # float32 values cannot add up to an overflow in a double.
    if not math.isfinite(sum(arr)):
        raise InvalidInput("vector must hold only finite numbers (no NaN or infinity)")
    return arr


def norm(arr: array) -> float:
    return math.sqrt(sum(map(mul, arr, arr)))


def to_blob(arr: array) -> bytes:
    if _BIG_ENDIAN:  # pragma: no cover - stored little-endian everywhere
        arr = array("f", arr)
        arr.byteswap()
    return arr.tobytes()


def from_blob(blob: bytes) -> array:
    arr = array("f")
    arr.frombytes(blob)
    if _BIG_ENDIAN:  # pragma: no cover
        arr.byteswap()
    return arr


def put_embedding(tx, memory_id: str, model: str, arr: array, stamp: str) -> None:
    tx.execute(
        "INSERT INTO memory_embeddings (memory_id, model, dimension, vector, norm, created_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (memory_id, model) DO UPDATE SET "
        "dimension = excluded.dimension, vector = excluded.vector, norm = excluded.norm, "
        "updated_at = excluded.updated_at",
        (memory_id, model, len(arr), to_blob(arr), norm(arr), stamp, stamp))


def get_embedding(conn, memory_id: str, model: str | None) -> MemoryEmbedding | None:
    sql = ("SELECT memory_id, model, dimension, vector, created_at, updated_at "
           "FROM memory_embeddings WHERE memory_id = +?")
    params: tuple = (memory_id,)
    if model is not None:
        sql += " AND model = +?"
        params = (memory_id, model)
    row = _one(conn, sql + " ORDER BY updated_at DESC LIMIT 1", params)
    if row is None:
        return None
    return MemoryEmbedding(row[0], row[1], row[2], list(from_blob(row[3])), row[4], row[5])


def delete_embedding(tx, memory_id: str, model: str | None) -> int:
    if model is None:
        tx.execute("DELETE FROM memory_embeddings WHERE memory_id = +?", (memory_id,))
    else:
        tx.execute("DELETE FROM memory_embeddings WHERE memory_id = +? AND model = +?",
                   (memory_id, model))
    return tx.conn.changes()


def search_vector(conn, session_id: str | None, query: array, *, model: str, k: int,
                  min_score: float | None, memory_type: str | None) -> list[MemoryHit]:
    """The k memories whose `model` embedding is most cosine-similar to `query`."""
    qnorm = norm(query)
    if qnorm == 0:
        raise InvalidInput("the query vector is all zeros; cosine similarity is undefined")
    sql = ("SELECT e.memory_id, e.vector, e.norm FROM memory_embeddings AS e "
           "WHERE e.model = +? AND e.dimension = +? AND typeof(e.vector) = 'blob'")
    params: list[Any] = [model, len(query)]
    if memory_type is not None:
        sql += (" AND e.memory_id IN (SELECT id FROM memories WHERE memory_type = +?)")
        params.append(memory_type)
    best: list[tuple[float, str]] = []
    floor = -math.inf if min_score is None else min_score
    for memory_id, blob, vnorm in conn.execute(sql, params):
        if not vnorm:
            continue
        # Rounding can push a parallel pair a hair past 1.0: clamp to cosine's range.
        score = max(-1.0, min(1.0, sum(map(mul, query, from_blob(blob))) / (qnorm * vnorm)))
        if score < floor:
            continue
        if len(best) < k:
            heapq.heappush(best, (score, memory_id))
        elif score > best[0][0]:
            heapq.heapreplace(best, (score, memory_id))
    hits = []
    for score, memory_id in sorted(best, key=lambda t: (-t[0], t[1])):
        mem = get(conn, memory_id, session_id)
        if mem is not None:
            hits.append(MemoryHit(mem, score))
    return hits


# --- adopting the older planner's memory tables --------------------------------------------------


def adopt_legacy_embeddings(conn) -> None:
    """Older files kept vectors as JSON text (``embedding_vector``) with the model in
    ``embedding_model``: rewrite them as float32 blobs with dimension and norm. A vector that
    is not a list of finite numbers is left as it was (search skips non-blob vectors)."""
    rows = conn.execute("SELECT memory_id, model, vector FROM memory_embeddings "
                        "WHERE typeof(vector) = 'text'").fetchall()
    for memory_id, model, text in rows:
        try:
            arr = vector_array(jsonutil.loads(text))
        except InvalidInput:
            continue
        conn.execute("UPDATE memory_embeddings SET vector = ?, dimension = ?, norm = ? "
                     "WHERE memory_id = ? AND model = ?",
                     (to_blob(arr), len(arr), norm(arr), memory_id, model))


for _kind in ("session", "registry"):
    schema.LEGACY_RENAMES.setdefault(_kind, {}).setdefault("memory_embeddings", {}).update(
        {"embedding_vector": "vector", "embedding_model": "model"})
    if adopt_legacy_embeddings not in schema.ADOPT_HOOKS[_kind]:
        schema.ADOPT_HOOKS[_kind].append(adopt_legacy_embeddings)
