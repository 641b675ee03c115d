"""Session memory: sessions/session_<safe id>.sqlite per session; ``session_id=None`` -> the
registry's memory tables.

Memories have add/get/update/delete/list, full-text search (FTS5, kept in sync by triggers)
and embeddings (float32 vector + model + dimension) with top-k cosine similarity. Content,
keywords, tags, context and metadata pass through the redaction layer; vectors are numbers and
are stored as given.

Reads never create a session file: a session without one simply has no memories yet.

Idle cleanup (`cleanup_idle_sessions`) must never remove a session someone is using or has
just written. A file is a candidate when its newest time among the database, ``-wal`` and
``-shm`` is older than the cutoff. It is then opened alone and, in exclusive locking mode,
switched out of WAL: SQLite allows that only when no other connection (any process) has the
file open, and from that moment the exclusive lock keeps everyone out. Under that lock the
file's own ``last_write_at`` stamp (written by every memory write) is checked again, and only
then are ``-wal``, ``-shm``, ``-journal`` and, last, the file itself removed. A process that opens the file
while it is being removed gets SQLite's "database moved" error, which the memory calls here
answer by reopening a fresh file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw

from .errors import InvalidInput, PlanDBError, RecordConflict, RecordNotFound, StorageError
from .record_models import Memory, MemoryEmbedding, MemoryHit, SessionCleanupReport
from .records_common import (
    label,
    limit_arg,
    new_id,
    offset_arg,
    opt_int,
    record_id,
    str_list,
)
from .stores import cursor as cursors
from .stores import memory
from .timestamps import ago, now
from .transaction import read, write

log = logging.getLogger("plandb.memory")

_DBMOVED = apsw.mapping_extended_result_codes["SQLITE_READONLY_DBMOVED"]


def _moved(exc: BaseException | None) -> bool:
    """Did this error come from the file being removed while we opened it?

    An idle cleanup in another process can unlink a session file between our open() and our
    first lock. SQLite then reports it as "database moved" (a write to an unlinked file), as
    a failed fstat (an I/O error), or, if it went between our create and our open, as "cannot
    open". Nothing was written in any of these cases, so the caller retries on a fresh file.
    """
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, apsw.ReadOnlyError) and getattr(
                exc, "extendedresult", None) == _DBMOVED:
            return True
        if isinstance(exc, apsw.IOError | apsw.CantOpenError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _last_activity(path: Path) -> float | None:
    """Newest mtime of the database and its -wal/-shm; None if the database is gone."""
    newest = None
    for suffix in ("", "-wal", "-shm"):
        try:
            mtime = os.stat(f"{path}{suffix}").st_mtime
        except FileNotFoundError:
            if not suffix:
                return None
            continue
        newest = mtime if newest is None else max(newest, mtime)
    return newest


class MemoryMixin:
    """Memories (mixed into PlanRepository)."""

    # --- routing ---------------------------------------------------------------------------

    def _session_path(self, session_id: str) -> Path:
        return self.config.session_db_path(session_id)

    @contextmanager
    def _session_conn(self, path: Path, create: bool) -> Iterator[apsw.Connection]:
        """The pooled connection to a session file, reopened if the file was replaced."""
        for _attempt in range(3):
            with self._handle(path, "session", create=create) as handle:
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    self.pool.discard(path)
                    if not create:
                        raise
                    continue
                if handle.cache.setdefault("file_id", (st.st_dev, st.st_ino)) != (
                        st.st_dev, st.st_ino):
                    self.pool.discard(path)
                    continue
                yield handle.conn
                return
        raise StorageError(f"{path}: the session file keeps being replaced; retry")

    def _memory_call(self, session_id: str | None, fn: Callable, *, writing: bool,
                     missing: Any = None) -> Any:
        """Run ``fn(conn, tx)`` on the memory tables of `session_id` (None: the registry):
        in a write transaction (stamping last_write_at) or a read snapshot (``tx`` None).
        A read of a session that has no file returns `missing`."""
        if session_id is None:
            main = self.config.main_db_path
            with self._registry() as conn:
                if writing:
                    with write(conn, main, retries=self.config.write_retries) as tx:
                        return fn(conn, tx)
                with read(conn, main):
                    return fn(conn, None)
        path = self._session_path(session_id)
        for attempt in range(5):
            try:
                with self._session_conn(path, create=writing) as conn:
                    if writing:
                        with write(conn, path, retries=self.config.write_retries) as tx:
                            result = fn(conn, tx)
                            memory.stamp_write(tx, now())
                        return result
                    with read(conn, path):
                        return fn(conn, None)
            except FileNotFoundError:
                return missing
            except PlanDBError as exc:
                # Removed by an idle cleanup while we opened it: a fresh file is the truth.
                if attempt < 4 and _moved(exc):
                    self.pool.discard(path)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _sid(self, session_id: str | None) -> str | None:
        return None if session_id is None else record_id(session_id, "session id",
                                                         self.payloads)

    @staticmethod
    def _where(session_id: str | None) -> str:
        return "the registry" if session_id is None else f"session {session_id!r}"

    # --- memories ----------------------------------------------------------------------------

    def add_memory(
        self, session_id: str | None, *, content: str, memory_type: str = "conversation",
        importance: str = "medium", keywords: list[str] | None = None,
        tags: list[str] | None = None, context: str | None = None,
        related_task_id: int | None = None, metadata: dict[str, Any] | None = None,
        memory_id: str | None = None, embedding: Any = None, embedding_model: str | None = None,
    ) -> Memory:
        """Store a memory in the session's file (None: the registry); returns it. An
        `embedding` (with `embedding_model`) is stored in the same transaction.
        RecordConflict if `memory_id` is taken."""
        p = self.payloads
        sid = self._sid(session_id)
        mid = new_id() if memory_id is None else record_id(memory_id, "memory id", p)
        if not isinstance(content, str) or not content.strip():
            raise InvalidInput("content must be a non-blank string")
        stamp = now()
        values = {
            "id": mid, "memory_type": label(memory_type, "memory_type", p),
            "content": p.text(content, "content"),
            "importance": label(importance, "importance", p, 50),
            "keywords": p.json(str_list(keywords, "keywords")),
            "tags": p.json(str_list(tags, "tags")),
            "context": p.text(context, "context"),
            "related_task_id": opt_int(related_task_id, "related_task_id"),
            "metadata": p.json_object(metadata),
            "created_at": stamp, "updated_at": stamp,
        }
        vector = model = None
        if embedding is not None or embedding_model is not None:
            if embedding is None or embedding_model is None:
                raise InvalidInput("give embedding and embedding_model together")
            vector = memory.vector_array(embedding)
            model = label(embedding_model, "embedding_model", p)

        def run(conn, tx):
            if memory.exists(conn, mid):
                raise RecordConflict("memory", mid, f"already exists in {self._where(sid)}")
            memory.insert(tx, values)
            if vector is not None:
                memory.put_embedding(tx, mid, model, vector, stamp)
            return memory.get(conn, mid, sid)

        return self._memory_call(sid, run, writing=True)

    def get_memory(self, session_id: str | None, memory_id: str) -> Memory:
        """One memory (RecordNotFound if absent)."""
        sid = self._sid(session_id)
        mid = record_id(memory_id, "memory id", self.payloads)
        found = self._memory_call(sid, lambda conn, tx: memory.get(conn, mid, sid),
                                  writing=False)
        if found is None:
            raise RecordNotFound("memory", mid, self._where(sid))
        return found

    def update_memory(
        self, session_id: str | None, memory_id: str, *, content: str | None = None,
        memory_type: str | None = None, importance: str | None = None,
        keywords: list[str] | None = None, tags: list[str] | None = None,
        context: str | None = None, related_task_id: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Memory:
        """Change the given fields (None = unchanged); the full-text index follows."""
        p = self.payloads
        sid = self._sid(session_id)
        mid = record_id(memory_id, "memory id", p)
        values: dict[str, Any] = {}
        if content is not None:
            if not isinstance(content, str) or not content.strip():
                raise InvalidInput("content must be a non-blank string")
            values["content"] = p.text(content, "content")
        if memory_type is not None:
            values["memory_type"] = label(memory_type, "memory_type", p)
        if importance is not None:
            values["importance"] = label(importance, "importance", p, 50)
        if keywords is not None:
            values["keywords"] = p.json(str_list(keywords, "keywords"))
        if tags is not None:
            values["tags"] = p.json(str_list(tags, "tags"))
        if context is not None:
            values["context"] = p.text(context, "context")
        if related_task_id is not None:
            values["related_task_id"] = opt_int(related_task_id, "related_task_id")
        if metadata is not None:
            values["metadata"] = p.json_object(metadata)

        def run(conn, tx):
            if not memory.exists(conn, mid):
                raise RecordNotFound("memory", mid, self._where(sid))
            if values:
                memory.update(tx, mid, values, now())
            return memory.get(conn, mid, sid)

        if sid is not None and not self._session_path(sid).exists():
            raise RecordNotFound("memory", mid, self._where(sid))
        return self._memory_call(sid, run, writing=True)

    def delete_memory(self, session_id: str | None, memory_id: str) -> None:
        """Delete a memory with its full-text entry and embeddings (RecordNotFound if absent)."""
        sid = self._sid(session_id)
        mid = record_id(memory_id, "memory id", self.payloads)

        def run(conn, tx):
            if not memory.delete(tx, mid):
                raise RecordNotFound("memory", mid, self._where(sid))

        if sid is not None and not self._session_path(sid).exists():
            raise RecordNotFound("memory", mid, self._where(sid))
        self._memory_call(sid, run, writing=True)

    def list_memories(
        self, session_id: str | None, *, memory_type: str | None = None,
        related_task_id: int | None = None, importance: str | None = None,
        limit: int = 100, offset: int = 0,
    ) -> list[Memory]:
        """Memories newest first, optionally filtered."""
        sid = self._sid(session_id)
        opt_int(related_task_id, "related_task_id")
        limit, offset = limit_arg(limit), offset_arg(offset)
        return self._memory_call(sid, lambda conn, tx: memory.list_memories(
            conn, sid, memory_type=memory_type, related_task_id=related_task_id,
            importance=importance, limit=limit, offset=offset), writing=False, missing=[])

    def list_memories_page(
        self, session_id: str | None, *, limit: int = 100, cursor: str | None = None,
        reverse: bool = False, memory_type: str | None = None,
        related_task_id: int | None = None, importance: str | None = None,
    ) -> tuple[list[Memory], str | None]:
        """One page of memories in the order they were added (reverse=True: newest first) and
        the next page's cursor (None at the end): every memory exactly once, even while others
        are being added. Same cursor rules as `list_action_logs`."""
        sid = self._sid(session_id)
        opt_int(related_task_id, "related_task_id")
        limit = limit_arg(limit)
        reverse = bool(reverse)
        after = None if cursor is None else cursors.decode(cursor, memory.PAGE_SCOPE, reverse)
        return self._memory_call(sid, lambda conn, tx: memory.page_memories(
            conn, sid, after=after, descending=reverse, limit=limit, memory_type=memory_type,
            related_task_id=related_task_id, importance=importance), writing=False,
            missing=([], None))

    def count_memories(self, session_id: str | None) -> int:
        sid = self._sid(session_id)
        return self._memory_call(sid, lambda conn, tx: memory.count(conn), writing=False,
                                 missing=0)

    def search_memories(
        self, session_id: str | None, query: str, *, limit: int = 10,
        memory_type: str | None = None, match: str = "all", raw: bool = False,
    ) -> list[MemoryHit]:
        """Full-text search over content, keywords and tags, best first (bm25).

        Each word of `query` is a term; ``match="all"`` needs every term, ``"any"`` one of
        them. ``raw=True`` passes FTS5 query syntax through (InvalidInput if malformed).
        """
        sid = self._sid(session_id)
        if not isinstance(query, str):
            raise InvalidInput("query must be a string")
        if match not in ("all", "any"):
            raise InvalidInput(f"match must be 'all' or 'any', got {match!r}")
        expression = memory.match_expression(query, raw=bool(raw), any_term=match == "any")
        limit = limit_arg(limit)
        return self._memory_call(sid, lambda conn, tx: memory.search_text(
            conn, sid, expression, limit=limit, memory_type=memory_type), writing=False,
            missing=[])

    # --- embeddings --------------------------------------------------------------------------

    def set_memory_embedding(self, session_id: str | None, memory_id: str, vector: Any, *,
                             model: str) -> MemoryEmbedding:
        """Store (or replace) the memory's embedding for `model` as float32."""
        sid = self._sid(session_id)
        mid = record_id(memory_id, "memory id", self.payloads)
        arr = memory.vector_array(vector)
        model = label(model, "model", self.payloads)

        def run(conn, tx):
            if not memory.exists(conn, mid):
                raise RecordNotFound("memory", mid, self._where(sid))
            memory.put_embedding(tx, mid, model, arr, now())
            return memory.get_embedding(conn, mid, model)

        if sid is not None and not self._session_path(sid).exists():
            raise RecordNotFound("memory", mid, self._where(sid))
        return self._memory_call(sid, run, writing=True)

    def get_memory_embedding(self, session_id: str | None, memory_id: str, *,
                             model: str | None = None) -> MemoryEmbedding:
        """The memory's embedding for `model` (None: the most recently written one)."""
        sid = self._sid(session_id)
        mid = record_id(memory_id, "memory id", self.payloads)
        found = self._memory_call(sid, lambda conn, tx: memory.get_embedding(conn, mid, model),
                                  writing=False)
        if found is None:
            raise RecordNotFound("embedding", f"{mid}/{model or '*'}", self._where(sid))
        return found

    def search_memories_by_embedding(
        self, session_id: str | None, vector: Any, *, model: str, k: int = 10,
        min_score: float | None = None, memory_type: str | None = None,
    ) -> list[MemoryHit]:
        """The `k` memories whose `model` embedding (of the query's dimension) is most
        cosine-similar to `vector`, best first; `min_score` drops weaker ones."""
        sid = self._sid(session_id)
        query = memory.vector_array(vector)
        model = label(model, "model", self.payloads)
        k = limit_arg(k, "k")
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(
                min_score, int | float) or not -1.0 <= min_score <= 1.0):
            raise InvalidInput(f"min_score must be a number from -1 to 1, got {min_score!r}")
        return self._memory_call(sid, lambda conn, tx: memory.search_vector(
            conn, sid, query, model=model, k=k, min_score=min_score, memory_type=memory_type),
            writing=False, missing=[])

    # --- session files -----------------------------------------------------------------------

    def cleanup_idle_sessions(self, *, idle_days: float,
                              dry_run: bool = False) -> SessionCleanupReport:
        """Remove session memory files idle for at least `idle_days` (by the newest time of
        the file, its -wal and -shm, re-checked against the file's own last write under an
        exclusive lock), with their -wal/-shm. Files open elsewhere or written meanwhile are
        kept and listed in `in_use`. With `dry_run`, only lists what would be removed."""
        if (isinstance(idle_days, bool) or not isinstance(idle_days, int | float)
                or not 0 <= idle_days < 1e6):
            raise InvalidInput(f"idle_days must be a number >= 0, got {idle_days!r}")
        report = SessionCleanupReport(dry_run=bool(dry_run))
        cutoff_epoch = time.time() - idle_days * 86400
        cutoff = ago(idle_days)
        folder = self.config.folder("sessions")
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it
                           if e.name.startswith("session_") and e.name.endswith(".sqlite"))
        for name in names:
            path = folder / name
            last = _last_activity(path)
            if last is None or last >= cutoff_epoch:
                continue
            if dry_run:
                report.removed.append(name)
                continue
            outcome, freed = self._remove_session_file(path, cutoff)
            if outcome == "removed":
                report.removed.append(name)
                report.bytes_freed += freed
            elif outcome == "in_use":
                report.in_use.append(name)
        return report

    def drop_session_memory(self, session_id: str) -> bool:
        """Remove a session's memory file now, whatever its age; False if it had none.
        StorageError if another connection has it open (nothing is removed then)."""
        sid = record_id(session_id, "session id", self.payloads)
        outcome, _ = self._remove_session_file(self._session_path(sid), cutoff=None)
        if outcome == "in_use":
            raise StorageError(f"session {sid!r}: its memory file is open elsewhere; "
                               "close it there and retry (nothing was removed)")
        return outcome == "removed"

    def _remove_session_file(self, path: Path, cutoff: str | None) -> tuple[str, int]:
        """('removed' | 'in_use' | 'gone' | 'unreadable', bytes freed). See the module doc."""
        self.pool.discard(path)
        try:
            conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
        except apsw.CantOpenError:
            return "gone", 0
        try:
            conn.set_busy_timeout(50)
            try:
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
                # Leaving WAL needs every other connection closed; afterwards the exclusive
                # lock (kept in this locking mode) keeps new ones out until we close. MEMORY:
                # this connection then never creates or deletes a -journal by name, which
                # could by then belong to a new file at the same path.
                mode = conn.execute("PRAGMA journal_mode=MEMORY").fetchall()[0][0]
                if str(mode).lower() != "memory":
                    return "in_use", 0
                conn.execute("BEGIN EXCLUSIVE")
                if str(conn.execute("PRAGMA journal_mode").fetchall()[0][0]).lower() != "memory":
                    return "in_use", 0
                if cutoff is not None:
                    try:
                        stamp = memory.last_write_at(conn)
                    except apsw.SQLError:  # no plan_meta: not written by plandb
                        stamp = None
                    if stamp is not None and stamp >= cutoff:
                        return "in_use", 0
            except (apsw.BusyError, apsw.LockedError):
                return "in_use", 0
            except (apsw.NotADBError, apsw.CorruptError) as exc:
                log.warning("%s: not removed, unreadable (%s)", path, exc)
                return "unreadable", 0
            # Side files first, the database last: while the database is still in place (and
            # locked by us) nobody can create side files of a new one with these names.
            freed = 0
            for suffix in ("-wal", "-shm", "-journal", "", ".lock"):
                try:
                    p = f"{path}{suffix}"
                    freed += os.stat(p).st_size if suffix != ".lock" else 0
                    os.unlink(p)
                except FileNotFoundError:
                    pass
            return "removed", freed
        finally:
            conn.close()
