"""PlanRepository: the one door. Each call lands in exactly one file (or, for plan lifecycle
calls, in the registry and one plan file, in a crash-safe order).

=================================  =========================================================
call                                file
=================================  =========================================================
create_plan / delete_plan           main/plan_registry.db + plans/plan_<id>.sqlite (see below)
list_plans / get_plan_summary       main/plan_registry.db only (no plan file is opened)
update_plan                         plans/plan_<id>.sqlite (plan_meta), then the registry
create_task ... restore_snapshot    plans/plan_<id>.sqlite
jobs, action logs (plan_id=None)    jobs/system_jobs.sqlite, else the plan's file
chat sessions, messages, runs       main/plan_registry.db
memories                            sessions/session_<id>.sqlite (no session: registry)
caches                              cache/<name>_cache.db
=================================  =========================================================

Crash-safe order of the multi-file steps (`plandb doctor` = `reconcile` repairs any cut):

create_plan
  1. registry: row ``state='creating'`` with a fresh id (never one a file on disk uses); before
     it commits, an flock on temp/plan_<id>.lock is taken and held until step 4 is done, so
     reconcile tells a creation still running (lock held: left alone) from a dead one
  2. temp/plan_<id>.building: template bytes written, plan_meta filled in, closed, fsynced
  3. rename into plans/plan_<id>.sqlite, fsync the folder
  4. registry: ``state='ready'``; only now does create_plan return.
  Reconcile: 'creating' + file in place -> ready; 'creating' without it -> row dropped and
  leftovers removed (nothing was acknowledged); a plan file with no row -> registered from its
  own plan_meta, keeping its id.
delete_plan
  1. registry: ``state='deleting'``  2. remove the file with -wal/-shm  3. delete the row.
  Reconcile: 'deleting' -> finish both steps.
update_plan
  1. the plan file's plan_meta  2. the registry row. Reconcile copies plan_meta into the row.

Task writes keep the registry's ``task_count``/``updated_at`` in step without a registry commit
per write: each plan commit marks the plan dirty (after commit), and dirty plans are flushed in one registry transaction at the next list/summary call,
on `flush()`/`close()`, or once `registry_sync_interval` seconds have passed. Other processes
see those two fields at most that late; after a crash, reconcile recomputes them from the plan
files. Crash tests stop the process between any two steps with ``PLANDB_CRASH_AT=<step>``
(see `plandb.crashpoints`).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw

from . import schema
from .config import DatabaseConfig, check_plan_id, fsync_path
from .connection import ConnectionPool, Handle, configure_connection, open_connection
from .crashpoints import crash_point
from .errors import CorruptDatabase, InvalidInput, PlanDBError, PlanNotFound, translate
from .models import PlanNode, PlanSummary, PlanTree, SnapshotInfo
from .payload import Payloads, clean_name
from .records import RecordsMixin
from .redaction import Redactor
from .stores import registry as reg
from .stores.plan import PlanStore
from .timestamps import now
from .transaction import read, write


def try_lock(path: Path, attempts: int = 50) -> int | None:
    """Take an exclusive flock on `path` (created 0600): the fd, or None if another process
    (or another open of it in this one) keeps holding it. The kernel releases it when the
    holder dies, which is what lets reconcile tell a live create_plan from a crashed one.

    Between creating the file and locking it, a concurrent reconcile may lock it briefly, or
    remove it as a stale leftover: so a busy lock is retried a few milliseconds later, and the
    lock only counts if `path` still names the very file we locked."""
    for _ in range(attempts):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except (BlockingIOError, FileNotFoundError):
            same = False
        if same:
            return fd
        os.close(fd)
        time.sleep(0.002)
    return None


def unlock(fd: int, path: Path) -> None:
    """Remove the lock file, then release it (a waiter re-checks state after acquiring)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.close(fd)


# What a create_tasks spec may hold: create_task's arguments, plus links to earlier specs.
_SPEC_FIELDS = frozenset((
    "name", "status", "instruction", "parent_id", "metadata", "dependencies", "position",
    "anchor_task_id", "anchor_position", "parent_index", "dependency_indexes"))


def _earlier(index: Any, i: int) -> int:
    """A create_tasks index that names one of the specs before spec `i` (no negatives)."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < i:
        raise IndexError(index)
    return index


def _empty_file(path: Path) -> bool:
    """True if `path` has no bytes and no -wal holding its pages."""
    try:
        if path.stat().st_size:
            return False
    except FileNotFoundError:
        return False
    try:
        return Path(f"{path}-wal").stat().st_size == 0
    except FileNotFoundError:
        return True


class _PlanWrite(write):
    """The context manager behind `PlanRepository._plan_write`: the plan's pooled handle, one
    `write()` transaction on it (this is a `write`, set up on the handle's connection), the
    call's timestamp, and the dirty mark once the plan file has committed.

    A class rather than a generator: it runs on every task write, where a generator-based
    context manager costs more than all of this bookkeeping."""

    __slots__ = ("repo", "plan_id", "touch_meta", "handle", "store", "stamp")

    def __init__(self, repo: PlanRepository, plan_id: int, touch_meta: bool):
        self.repo = repo
        self.plan_id = plan_id
        self.touch_meta = touch_meta

    def __enter__(self) -> PlanStore:
        repo, plan_id = self.repo, self.plan_id
        handle, path = repo._acquire_plan(plan_id)
        try:
            store = repo._store(handle, plan_id)
            self.conn, self.path, self.retries = store.conn, path, repo.config.write_retries
            tx = write.__enter__(self)
        except BaseException as exc:
            repo.pool.release(handle)
            if isinstance(exc, FileNotFoundError):
                raise PlanNotFound(plan_id, "no plan file") from None
            raise
        self.handle, self.store = handle, store
        stamp = self.stamp = store.stamp = now()  # one timestamp for every row this call writes
        if self.savepoint is not None:  # inside another write: dirty once that one commits
            tx.after_commit(lambda: repo._mark_dirty(plan_id, stamp))
        if self.touch_meta:
            try:
                store.touch(stamp)
            except BaseException as exc:
                self.__exit__(type(exc), exc, exc.__traceback__)
                raise
        return store

    def __exit__(self, etype: Any, exc: Any, tb: Any) -> bool:
        repo = self.repo
        try:
            write.__exit__(self, etype, exc, tb)  # commit, or roll back (and maybe translate)
        except FileNotFoundError:
            self.store.cache.clear()
            raise PlanNotFound(self.plan_id, "no plan file") from None
        except BaseException:
            self.store.cache.clear()
            raise
        finally:
            repo.pool.release(self.handle)
        if etype is not None:
            # Rolled back: the tree cache may hold rows that never committed.
            self.store.cache.clear()
            if issubclass(etype, FileNotFoundError):
                raise PlanNotFound(self.plan_id, "no plan file") from None
            return False
        if self.savepoint is None:  # committed
            repo._mark_dirty(self.plan_id, self.stamp)
        repo._maybe_flush()
        return False


class PlanRepository(RecordsMixin):
    """Routes every read and write to the right file under one DB_ROOT.

    Thread-safe; use one per process (or per thread pool) and `close()` it, or use it as a
    context manager. Example::

        with PlanRepository(DatabaseConfig("/tmp/db")) as repo:
            plan = repo.create_plan("Ship v2", owner="ana")
            root = repo.create_task(plan.id, name="Design")
            repo.create_task(plan.id, name="Schema", parent_id=root.id)
            print(repo.get_plan_tree(plan.id).to_outline())
    """

    def __init__(
        self,
        config: DatabaseConfig | str | os.PathLike | None = None,
        *,
        redactor: Redactor | None = None,
        registry_sync_interval: float = 1.0,
    ):
        if not isinstance(config, DatabaseConfig):
            config = DatabaseConfig(config)
        self.config = config
        self.pool = ConnectionPool(config.max_open_files, config.busy_timeout_ms,
                                   background_checkpoints=config.background_checkpoints)
        self.payloads = Payloads(redactor)
        self.registry_sync_interval = registry_sync_interval
        self._dirty: dict[int, str] = {}
        self._dirty_lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._template: bytes | None = None
        self._template_lock = threading.Lock()
        # plan id -> (file path, its str): pathlib is slow per call, os.stat takes the str
        self._plan_paths: dict[int, tuple[Path, str]] = {}
        self._backups = config.folder("backups")
        self._open_checks = {kind: self._on_open(kind) for kind in schema.KINDS}
        self._init_records()

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Flush registry bookkeeping and close every connection. Idempotent."""
        if self.pool._closed:
            return
        try:
            self._flush_records()  # batched cache stats, pending job index entries
            self.flush()
        finally:
            self.pool.close()

    def __enter__(self) -> PlanRepository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connections -----------------------------------------------------------------------

    def _on_open(self, kind: str):
        backups = self._backups
        timeout = self.config.busy_timeout_ms

        def check(conn: apsw.Connection, path: Path) -> None:
            if kind == "plan" and _empty_file(path):
                # Plan files are built whole and renamed into place, never empty: an empty one
                # lost its data (truncated). Building a fresh schema in it would hide that.
                raise CorruptDatabase(path, "the file is empty (0 bytes): its plan's data is "
                                            "gone; restore it from a backup")
            schema.ensure_schema(
                conn, path, kind, backup_dir=backups,
                configure=lambda: configure_connection(conn, path, timeout))

        return check

    @contextmanager
    def _handle(self, path: Path, kind: str, *, create: bool = True) -> Iterator[Handle]:
        """The pooled, schema-checked connection handle for `path` (a file of `kind`)."""
        try:
            with self.pool.use(path, self._open_checks[kind], create=create) as handle:
                yield handle
        except apsw.Error as exc:
            raise translate(exc, path) from exc

    @contextmanager
    def _open(self, path: Path, kind: str, *, create: bool = True) -> Iterator[apsw.Connection]:
        """A pooled, schema-checked connection to `path` (a file of `kind`)."""
        with self._handle(path, kind, create=create) as handle:
            yield handle.conn

    def _registry(self):
        return self._open(self.config.main_db_path, "registry")

    def _plan_path(self, plan_id: int) -> Path:
        """`config.plan_db_path`, memoised: building a Path costs more than a small write."""
        return self._plan_file(plan_id)[0]

    def _plan_file(self, plan_id: int) -> tuple[Path, str]:
        entry = self._plan_paths.get(plan_id) if type(plan_id) is int else None
        if entry is None:
            path = self.config.plan_db_path(plan_id)  # validates the id
            if len(self._plan_paths) >= 4096:
                self._plan_paths.clear()
            entry = self._plan_paths[plan_id] = (path, str(path))
        return entry

    def _acquire_plan(self, plan_id: int) -> tuple[Handle, Path]:
        """The plan file's pooled handle, locked (give it back with `pool.release`), checked to
        still be the file on disk; PlanNotFound if there is none. One function, not nested
        context managers: it runs on every task call."""
        path, key = self._plan_file(plan_id)
        pool = self.pool
        check = self._open_checks["plan"]
        for _attempt in range(3):
            try:
                handle = pool.acquire(key, check, create=False)
            except FileNotFoundError:
                raise PlanNotFound(plan_id, "no plan file") from None
            except apsw.Error as exc:
                raise translate(exc, path) from exc
            # A cached connection outlives its file when another process deletes (or
            # replaces) the plan: writing through it would be acknowledged and lost. SQLite
            # tells in one stat; the connection is then dropped and the file reopened (or
            # PlanNotFound, if it is gone).
            try:
                moved = handle.file_moved()
            except BaseException:
                pool.release(handle)
                raise
            if not moved:
                return handle, path
            pool.discard(key)
            pool.release(handle)
        raise PlanNotFound(plan_id, "its file keeps being replaced; retry")

    def _store(self, handle: Handle, plan_id: int) -> PlanStore:
        """The PlanStore kept with the handle (its sibling cache lives as long as the
        connection), reset for a new call."""
        store = handle.cache.get("store")
        if store is None or store.plan_id != plan_id:
            store = handle.cache["store"] = PlanStore(handle.conn, plan_id, self.payloads)
        store.stamp = None
        store.version_checked = False
        return store

    @contextmanager
    def _plan(self, plan_id: int) -> Iterator[PlanStore]:
        """A PlanStore on the plan's file; PlanNotFound if the file does not exist."""
        handle, path = self._acquire_plan(plan_id)
        try:
            yield self._store(handle, plan_id)
        except FileNotFoundError:
            raise PlanNotFound(plan_id, "no plan file") from None
        except apsw.Error as exc:
            raise translate(exc, path) from exc
        finally:
            self.pool.release(handle)

    def _plan_write(self, plan_id: int, *, touch_meta: bool = False) -> _PlanWrite:
        """A write transaction on the plan's file that marks the plan dirty after commit; use
        as ``with self._plan_write(plan_id) as store:``.

        Reconcile recomputes the registry's ``updated_at`` after a crash as the later of
        plan_meta ``updated_at`` and the newest task ``updated_at``. Calls that stamp the rows
        they write need nothing more; calls that may leave no stamped row (deletes, whole-tree
        replacements) pass ``touch_meta=True`` (one more page per commit, so not for all)."""
        return _PlanWrite(self, plan_id, touch_meta)

    def _mark_dirty(self, plan_id: int, stamp: str) -> None:
        with self._dirty_lock:
            self._dirty[plan_id] = stamp

    def _maybe_flush(self) -> None:
        if self._dirty and time.monotonic() - self._last_flush >= self.registry_sync_interval:
            self.flush()

    def flush(self) -> None:
        """Write pending task counts and update times of written plans into the registry."""
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, {}
            self._last_flush = time.monotonic()
        if not dirty:
            return
        try:
            # Counts are read under the registry's write lock: flushes (of every repository
            # and process) take turns, so the last one to write is also the last one to have
            # counted. Read before taking the lock, a slow flush could overwrite a newer count
            # with its older one (seen under `make stress`).
            with self._registry() as conn, write(conn, self.config.main_db_path) as _tx:
                rows = []
                for plan_id, stamp in dirty.items():
                    try:
                        with self._plan(plan_id) as store:
                            rows.append((plan_id, store.task_count(), stamp))
                    except PlanDBError:
                        # Deleted meanwhile, or unreadable now: the registry keeps its last
                        # values (reconcile reports the file); the others still go in.
                        continue
                reg.sync_counts(conn, rows)
        except BaseException:
            with self._dirty_lock:  # try again next time; marks made meanwhile are newer
                for plan_id, stamp in dirty.items():
                    self._dirty.setdefault(plan_id, stamp)
            raise

    # --- plans -----------------------------------------------------------------------------

    def _template_bytes(self) -> bytes:
        """A plan file with the schema already applied, built once per repository."""
        with self._template_lock:
            if self._template is None:
                tmp = self.config.temp_db_path(f"template-{os.getpid()}-{id(self)}")
                leftovers = [Path(f"{tmp}{s}") for s in ("", "-wal", "-shm", ".lock")]
                for p in leftovers:  # a crashed process with a recycled pid may have left them
                    p.unlink(missing_ok=True)
                conn = open_connection(tmp, busy_timeout_ms=self.config.busy_timeout_ms)
                try:
                    schema.ensure_schema(conn, tmp, "plan")
                finally:
                    conn.close()
                self._template = tmp.read_bytes()
                for p in leftovers:  # .lock: the schema runner's filelock stays behind
                    p.unlink(missing_ok=True)
            return self._template

    def _plan_image(self, plan_id: int, meta: dict[str, Any]) -> bytes:
        """The bytes of a new plan file: the template with plan_meta filled in, in memory.

        Nothing touches the disk until the image is complete, so creating a plan costs one
        write and two fsyncs (file, folder) instead of a WAL open, commit and checkpoint.
        """
        image = bytearray(self._template_bytes())
        # Bytes 18/19 of the header are 2 in a WAL database; an in-memory copy must say 1
        # (legacy) to open, and the file gets 2 back so its first open needs no journal switch.
        image[18] = image[19] = 1
        mem = apsw.Connection(":memory:")
        try:
            mem.deserialize("main", bytes(image))
            with write(mem, "plan template"):
                PlanStore(mem, plan_id, self.payloads).write_meta(**meta)
            image = bytearray(mem.serialize("main"))
        finally:
            mem.close()
        image[18] = image[19] = 2
        return bytes(image)

    def _file_taken(self, plan_id: int) -> bool:
        return (self.config.plan_db_path(plan_id).exists()
                or self._building_path(plan_id).exists()
                or self._creation_lock_path(plan_id).exists())

    def _building_path(self, plan_id: int) -> Path:
        return self.config.folder("temp") / f"plan_{plan_id}.building"

    def _creation_lock_path(self, plan_id: int) -> Path:
        return self.config.folder("temp") / f"plan_{plan_id}.lock"

    def create_plan(
        self,
        title: str,
        *,
        owner: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> PlanTree:
        """Create a plan: a registry row and its own file. Returns the (empty) tree."""
        p = self.payloads
        title = p.text(clean_name(title, "title"))
        owner = None if owner is None else clean_name(owner, "owner", 1000)
        description = p.text(description, "description")
        meta_json = p.json_object(metadata)
        stamp = now()
        main = self.config.main_db_path
        lock: int | None = None
        try:
            with self._registry() as conn:
                with write(conn, main, retries=self.config.write_retries):
                    plan_id = reg.next_plan_id(conn, self._file_taken)
                    final = self.config.plan_db_path(plan_id)
                    # Held from before the row is visible until it is ready or dropped, so
                    # reconcile can leave a creation that is still running alone.
                    lock = try_lock(self._creation_lock_path(plan_id))
                    if lock is None:  # never: the id is fresh and its lock file did not exist
                        raise PlanDBError(f"plan id {plan_id}: creation lock is held; retry")
                    reg.insert_plan(conn, plan_id, title=title, owner=owner,
                                    description=description, metadata_json=meta_json,
                                    plan_file=str(final.relative_to(self.config.root)),
                                    state="creating", stamp=stamp)
            crash_point("create:row")
            try:
                self._build_plan_file(plan_id, final, {
                    "plan_id": str(plan_id), "title": title, "description": description,
                    "owner": owner, "metadata": meta_json, "created_at": stamp,
                    "updated_at": stamp,
                })
            except BaseException:
                self._abandon_creation(plan_id)
                raise
            crash_point("create:renamed")
            with self._registry() as conn, write(conn, main, retries=self.config.write_retries):
                reg.set_state(conn, plan_id, "ready")
        finally:
            if lock is not None:
                unlock(lock, self._creation_lock_path(plan_id))
        return PlanTree(id=plan_id, title=title, description=description,
                        metadata=(metadata and self._decoded(meta_json)) or {})

    @staticmethod
    def _decoded(meta_json: str | None) -> dict:
        from .jsonutil import loads
        return loads(meta_json, {}) or {}

    def _build_plan_file(self, plan_id: int, final: Path, meta: dict[str, Any]) -> None:
        building = self._building_path(plan_id)
        image = memoryview(self._plan_image(plan_id, meta))
        fd = os.open(building, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while image:
                image = image[os.write(fd, image):]
            os.fsync(fd)
        finally:
            os.close(fd)
        crash_point("create:built")
        os.replace(building, final)
        fsync_path(final.parent)

    def _abandon_creation(self, plan_id: int) -> None:
        """Undo a create_plan that failed half-way (best effort; reconcile covers the rest)."""
        for p in (self._building_path(plan_id),):
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(f"{p}{suffix}")
                except FileNotFoundError:
                    pass
        try:
            with self._registry() as conn, write(conn, self.config.main_db_path):
                reg.delete_row(conn, plan_id)
        except PlanDBError:
            pass

    def get_plan_summary(self, plan_id: int) -> PlanSummary:
        """The registry's view of one plan (PlanNotFound if absent or not ready)."""
        check_plan_id(plan_id)
        self.flush()
        with self._registry() as conn:
            return reg.get_summary(conn, plan_id)

    def list_plans(self, owner: str | None = None, limit: int | None = None,
                   offset: int = 0) -> list[PlanSummary]:
        """Plans newest first (by updated_at), from the registry alone."""
        self.flush()
        with self._registry() as conn:
            return reg.list_plans(conn, owner, limit, offset)

    def update_plan(self, plan_id: int, *, title: str | None = None,
                    description: str | None = None,
                    metadata: dict[str, Any] | None = None) -> PlanSummary:
        """Change title/description/metadata in the plan file's plan_meta and the registry."""
        check_plan_id(plan_id)
        p = self.payloads
        values: dict[str, Any] = {}
        if title is not None:
            values["title"] = p.text(clean_name(title, "title"))
        if description is not None:
            values["description"] = p.text(description, "description")
        if metadata is not None:
            values["metadata"] = p.json_object(metadata)
        with self._registry() as conn:
            reg.get_summary(conn, plan_id)  # PlanNotFound before anything is written
        with self._plan_write(plan_id) as store:
            if values:
                store.write_meta(**values, updated_at=now())
        # The plan file is the truth; a crash here leaves the registry stale until reconcile
        # copies plan_meta back into it.
        crash_point("update_plan:file")
        with self._registry() as conn, write(conn, self.config.main_db_path):
            reg.update_plan(conn, plan_id, values, now())
        return self.get_plan_summary(plan_id)

    def delete_plan(self, plan_id: int) -> None:
        """Delete the registry row, the plan file and its -wal/-shm (crash-safe order)."""
        check_plan_id(plan_id)
        main = self.config.main_db_path
        with self._registry() as conn, write(conn, main):
            row = reg.get_row(conn, plan_id)
            if row is None or row[8] == "creating":  # a creation never acknowledged
                raise PlanNotFound(plan_id, "" if row is None else "it is being created")
            reg.set_state(conn, plan_id, "deleting")
        crash_point("delete:marked")
        self.finish_delete(plan_id)

    def finish_delete(self, plan_id: int) -> None:
        """Steps 2 and 3 of delete_plan (also used by reconcile)."""
        path = self.config.plan_db_path(plan_id)
        self.pool.discard(path)
        with self._dirty_lock:
            self._dirty.pop(plan_id, None)
        for suffix in ("", "-wal", "-shm", ".lock"):
            try:
                os.unlink(f"{path}{suffix}")
            except FileNotFoundError:
                pass
            crash_point(f"delete:unlinked{suffix}")
        fsync_path(path.parent)
        with self._registry() as conn, write(conn, self.config.main_db_path):
            reg.delete_row(conn, plan_id)
            self._forget_plan_records(conn, plan_id)  # job index, chat bindings

    # --- tasks -----------------------------------------------------------------------------

    def create_task(
        self, plan_id: int, *, name: str, status: str = "pending",
        instruction: str | None = None, parent_id: int | None = None,
        metadata: dict[str, Any] | None = None, dependencies: list[int] | None = None,
        position: int | None = None, anchor_task_id: int | None = None,
        anchor_position: str | None = None,
    ) -> PlanNode:
        """Add a task. Appends under `parent_id` (None = a root) unless `position` (0-based
        rank) or `anchor_task_id` + `anchor_position` ("before"/"after") say where."""
        with self._plan_write(plan_id) as store:
            return store.create_task(
                name=name, status=status, instruction=instruction, parent_id=parent_id,
                metadata=metadata, dependencies=dependencies, position=position,
                anchor_task_id=anchor_task_id, anchor_position=anchor_position)

    def create_tasks(self, plan_id: int, specs: list[dict[str, Any]]) -> list[PlanNode]:
        """Create many tasks in one transaction (all or nothing).

        A spec may name a parent created earlier in the same call by its index in `specs`
        with ``parent_index`` (and dependencies with ``dependency_indexes``).
        """
        if not isinstance(specs, list | tuple):
            raise InvalidInput("specs must be a list of dicts")
        out: list[PlanNode] = []
        inserted = False
        with self._plan_write(plan_id) as store:
            create = store.create_task
            for i, spec in enumerate(specs):
                if not isinstance(spec, dict):
                    raise InvalidInput(f"spec {i} must be a dict")
                if not _SPEC_FIELDS.issuperset(spec):
                    unknown = ", ".join(sorted(map(repr, set(spec) - _SPEC_FIELDS)))
                    raise InvalidInput(f"spec {i}: unknown field(s) {unknown}")
                if "name" not in spec:
                    raise InvalidInput(f"spec {i}: a task needs a name")
                get = spec.get
                parent_id, deps = get("parent_id"), get("dependencies")
                pidx, didx = get("parent_index"), get("dependency_indexes")
                try:
                    if pidx is not None:
                        parent_id = out[_earlier(pidx, i)].id
                    if didx:
                        deps = list(deps or []) + [out[_earlier(j, i)].id for j in didx]
                except (IndexError, TypeError):
                    raise InvalidInput(f"spec {i}: parent_index/dependency_indexes must refer "
                                       "to earlier specs") from None
                position, anchor = get("position"), get("anchor_task_id")
                out.append(create(spec["name"], get("status", "pending"), get("instruction"),
                                  parent_id, get("metadata"), deps, position, anchor,
                                  get("anchor_position")))
                inserted = inserted or position is not None or anchor is not None
            if inserted:  # a later insert shifted earlier siblings: report final positions
                out = [store.node(n.id) for n in out]
        return out

    def get_node(self, plan_id: int, task_id: int) -> PlanNode:
        """One task with its dependencies (TaskNotFound if absent)."""
        with self._plan(plan_id) as store, read(store.conn, self._plan_path(plan_id)):
            return store.node(task_id)

    def update_task(
        self, plan_id: int, task_id: int, *, name: str | None = None,
        status: str | None = None, instruction: str | None = None,
        metadata: dict[str, Any] | None = None, dependencies: list[int] | None = None,
        context_combined: str | None = None, context_sections: list[Any] | None = None,
        context_meta: dict[str, Any] | None = None, execution_result: str | None = None,
    ) -> PlanNode:
        """Change the given fields (None = unchanged); dependencies replace the old set.
        Context changes stamp context_updated_at."""
        # Only the fields given, in UPDATABLE order (the first invalid one is reported).
        # Spelled out: this runs on every status change, and a dict of all nine passed to the
        # store's loop costs 3% more instructions per update_task (callgrind, 115k -> 118.5k).
        fields: dict[str, Any] = {}
        if name is not None:
            fields["name"] = name
        if status is not None:
            fields["status"] = status
        if instruction is not None:
            fields["instruction"] = instruction
        if metadata is not None:
            fields["metadata"] = metadata
        if execution_result is not None:
            fields["execution_result"] = execution_result
        if context_combined is not None:
            fields["context_combined"] = context_combined
        if context_sections is not None:
            fields["context_sections"] = context_sections
        if context_meta is not None:
            fields["context_meta"] = context_meta
        if dependencies is not None:
            fields["dependencies"] = dependencies
        with self._plan_write(plan_id) as store:
            return store.update_task(task_id, fields)

    def delete_task(self, plan_id: int, task_id: int) -> int:
        """Delete a task with its whole subtree and their dependency edges; returns the count."""
        with self._plan_write(plan_id, touch_meta=True) as store:
            return store.delete_task(task_id)

    def move_task(self, plan_id: int, task_id: int, *, new_parent_id: int | None,
                  new_position: int | None = None) -> PlanNode:
        """Move a task (and its subtree) under `new_parent_id` (None = root) at `new_position`
        (0-based rank; None = last). TreeCycle if the target is the task or a descendant."""
        with self._plan_write(plan_id) as store:
            store.move_task(task_id, new_parent_id, new_position)
            return store.node(task_id)

    # --- whole trees -----------------------------------------------------------------------

    def get_plan_tree(self, plan_id: int) -> PlanTree:
        """The whole plan, read in one consistent snapshot."""
        # The path names the file in errors (a page found corrupt mid-read, for one).
        with self._plan(plan_id) as store, read(store.conn, self._plan_path(plan_id)):
            return store.tree()

    def upsert_plan_tree(self, tree: PlanTree, *, note: str | None = None) -> PlanTree:
        """Replace the stored tree (tasks, edges, title, description, metadata) atomically;
        with `note`, also store a snapshot of the new tree."""
        if not isinstance(tree, PlanTree):
            raise InvalidInput("tree must be a PlanTree")
        check_plan_id(tree.id)
        p = self.payloads
        with self._plan_write(tree.id, touch_meta=True) as store:
            store.replace_tree(tree)
            store.write_meta(title=p.text(clean_name(tree.title, "title")),
                             description=p.text(tree.description, "description"),
                             metadata=p.json_object(tree.metadata or None))
            stored = store.tree()
            if note is not None:
                store.add_snapshot(stored, note)
        self._sync_title(tree.id, stored)
        return stored

    def _sync_title(self, plan_id: int, tree: PlanTree) -> None:
        with self._registry() as conn, write(conn, self.config.main_db_path):
            if reg.get_row(conn, plan_id) is not None:
                reg.update_plan(conn, plan_id, {
                    "title": tree.title, "description": tree.description,
                    "metadata": self.payloads.json_object(tree.metadata or None),
                    "task_count": len(tree)}, now())

    def create_snapshot(self, plan_id: int, note: str | None = None) -> SnapshotInfo:
        """Store a snapshot of the current tree."""
        with self._plan_write(plan_id) as store:
            tree = store.tree()
            sid = store.add_snapshot(tree, note)
            return next(s for s in store.list_snapshots() if s.id == sid)

    def list_snapshots(self, plan_id: int) -> list[SnapshotInfo]:
        with self._plan(plan_id) as store:
            return store.list_snapshots()

    def restore_snapshot(self, plan_id: int, snapshot_id: int) -> PlanTree:
        """Replace the current tree with a stored snapshot (the snapshots themselves stay)."""
        with self._plan_write(plan_id, touch_meta=True) as store:
            tree = store.load_snapshot(snapshot_id)
            store.replace_tree(tree)
            store.write_meta(title=tree.title, description=tree.description,
                             metadata=self.payloads.json_object(tree.metadata or None))
            stored = store.tree()
        self._sync_title(plan_id, stored)
        return stored

    def session(self, plan_id: int) -> PlanSession:
        """A handle bound to one plan."""
        return PlanSession(self, plan_id)


class PlanSession:
    """The task methods of `PlanRepository` bound to one plan id, plus a cached tree."""

    def __init__(self, repo: PlanRepository, plan_id: int):
        check_plan_id(plan_id)
        self.repo = repo
        self.plan_id = plan_id
        self.tree: PlanTree | None = None

    def refresh(self) -> PlanTree:
        """Re-read the whole tree from the file."""
        self.tree = self.repo.get_plan_tree(self.plan_id)
        return self.tree

    def summary(self) -> PlanSummary:
        return self.repo.get_plan_summary(self.plan_id)

    def create_task(self, **kwargs: Any) -> PlanNode:
        return self.repo.create_task(self.plan_id, **kwargs)

    def create_tasks(self, specs: list[dict[str, Any]]) -> list[PlanNode]:
        return self.repo.create_tasks(self.plan_id, specs)

    def get_node(self, task_id: int) -> PlanNode:
        return self.repo.get_node(self.plan_id, task_id)

    def update_task(self, task_id: int, **kwargs: Any) -> PlanNode:
        return self.repo.update_task(self.plan_id, task_id, **kwargs)

    def delete_task(self, task_id: int) -> int:
        return self.repo.delete_task(self.plan_id, task_id)

    def move_task(self, task_id: int, **kwargs: Any) -> PlanNode:
        return self.repo.move_task(self.plan_id, task_id, **kwargs)

    def upsert_tree(self, tree: PlanTree, *, note: str | None = None) -> PlanTree:
        self.tree = self.repo.upsert_plan_tree(tree, note=note)
        return self.tree

    def list_snapshots(self) -> list[SnapshotInfo]:
        return self.repo.list_snapshots(self.plan_id)

    def restore_snapshot(self, snapshot_id: int) -> PlanTree:
        self.tree = self.repo.restore_snapshot(self.plan_id, snapshot_id)
        return self.tree
