"""Reconcile the registry with the plan files: find, and optionally repair, every state a crash
can leave between the steps of create_plan, delete_plan, update_plan and the batched registry
sync (the order of those steps is written down at the top of `plandb.repository`).

Example::

    with PlanRepository(root) as repo:
        report = reconcile(repo)                 # look only: creates and changes nothing
        if not report.ok:
            report = reconcile(repo, repair=True)
        print(report.to_dict())

Problem kinds (``Problem.kind``) and what ``repair=True`` does about each:

======================  ==================================================================
kind                    repair
======================  ==================================================================
creating_row            create_plan was cut: its file in place (and its plan_meta names this
                        plan) -> row marked ready; else row dropped, temp/ leftovers removed
                        (create_plan never returned, so nothing acknowledged is lost)
deleting_row            delete_plan was cut: the file, its -wal/-shm and the row are removed
stale_building_file     temp/plan_<id>.* or a template of a dead process: removed
orphan_file             a plan file without a row: registered from its own plan_meta, same id
missing_file            a ready row whose file is gone: reported only, the row is kept
stale_counts            registry task_count/updated_at behind the file: recomputed from it
registry_meta_mismatch  registry title/description/owner/metadata differ: copied from the file
unreadable_file         a plan file (or the registry) cannot be read as one: reported only
                        (`plandb doctor` quarantines it; reconcile never deletes data)
misplaced_file          plans/plan_<a>.sqlite whose plan_meta says it is plan <b>: reported only
======================  ==================================================================

Reconcile may run while other processes use the root: a create_plan still running holds a lock
on ``temp/plan_<id>.lock`` and is left alone, and each repair re-reads its row inside the
registry write transaction that repairs it. With ``repair=False`` files are read through
`scan.read_snapshot` (no schema upgrade, no side file created, nothing written).
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apsw

from .. import jsonutil
from ..connection import open_connection
from ..errors import PlanDBError, WrongDatabaseKind, translate
from ..repository import PlanRepository, try_lock, unlock
from ..stores import registry as reg
from ..timestamps import now
from ..transaction import read, write
from .scan import read_snapshot

_TEMP_PLAN = re.compile(r"plan_([1-9][0-9]{0,18})\.(?:building(?:-wal|-shm|-journal)?|lock)")
_TEMP_TEMPLATE = re.compile(r"(template-([0-9]+)-[0-9]+\.sqlite)(?:-wal|-shm|-journal|\.lock)?")
_SIDE = ("-wal", "-shm", "-journal")


@dataclass(slots=True)
class Problem:
    """One inconsistency found; `repaired` says whether this run fixed it."""

    kind: str
    plan_id: int | None
    path: str | None
    detail: str
    repaired: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ReconcileReport:
    """What `reconcile` found (and repaired)."""

    problems: list[Problem] = field(default_factory=list)
    repair: bool = False
    plans_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is left to do: no problems, or every one repaired."""
        return all(p.repaired for p in self.problems)

    @property
    def unrepaired(self) -> list[Problem]:
        return [p for p in self.problems if not p.repaired]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "repair": self.repair, "plans_checked": self.plans_checked,
                "problems": [p.to_dict() for p in self.problems]}


@dataclass(slots=True)
class PlanFacts:
    """What a plan file says about itself (plan_meta and its task count)."""

    plan_id: int | None
    title: str | None
    description: str | None
    owner: str | None
    metadata: str | None
    created_at: str | None
    updated_at: str | None
    task_count: int


@dataclass(slots=True)
class _Row:
    id: int
    title: str
    description: str | None
    metadata: str | None
    task_count: int
    updated_at: str
    owner: str | None
    state: str

    @classmethod
    def of(cls, row: tuple) -> _Row:
        # Columns as `registry.get_row` returns them.
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], row[7], row[8])


def read_file(path: Path, fn: Callable[[apsw.Connection], Any], *,
              allow_side_files: bool = False) -> Any:
    """``fn(conn)`` on a read-only view of `path`, creating no file unless `allow_side_files`.

    With its -wal and -shm present (a live writer, or one that was killed) the file is opened
    plainly read-only: that creates nothing, and it can rebuild a stale index in the -shm. A
    ``readonly_shm`` open cannot: after a writer was killed it retries for ~10 s, then fails
    with SQLITE_PROTOCOL. Without side files, `scan.read_snapshot` reads it ``immutable`` and
    writes nothing at all. A -wal without its -shm needs a write to be read (`NeedsRecovery`),
    which only `allow_side_files` permits.
    """
    wal, shm = (Path(f"{path}{s}").exists() for s in ("-wal", "-shm"))
    if not (wal and shm) and not (wal and allow_side_files):
        return read_snapshot(path, fn)
    conn = open_connection(path, readonly=True)
    try:
        return fn(conn)
    except apsw.Error as exc:
        raise translate(exc, path) from exc
    finally:
        conn.close()


def read_plan_facts(path: Path, *, allow_side_files: bool = False) -> PlanFacts:
    """Read plan_meta and the task count without writing anything (see `read_file`); raises
    PlanDBError for a file that is not a readable plan file."""

    def facts(conn) -> PlanFacts:
        with read(conn, path):
            meta = dict(conn.execute("SELECT key, value FROM plan_meta").fetchall())
            count, newest = conn.execute(
                "SELECT count(*), max(updated_at) FROM tasks").fetchall()[0]
        if meta.get("kind") != "plan":
            raise WrongDatabaseKind(path, "plan", meta.get("kind"))
        raw_id = meta.get("plan_id")
        try:
            plan_id = int(raw_id) if raw_id is not None else None
        except (TypeError, ValueError):
            plan_id = -1  # never a real id: reported as misplaced
        # Task writes stamp their rows, not plan_meta (see PlanRepository._plan_write).
        updated = max((s for s in (meta.get("updated_at"), newest) if s), default=None)
        return PlanFacts(plan_id, meta.get("title"), meta.get("description"), meta.get("owner"),
                         meta.get("metadata"), meta.get("created_at"), updated, count)

    return read_file(path, facts, allow_side_files=allow_side_files)


def lock_held(path: Path) -> bool:
    """True if a live process holds the flock on `path` (checked without creating it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our lock, if we got it
    return False


def _lock_existing(path: Path) -> tuple[bool, int | None]:
    """Lock a creation lock file that is already there: (busy, fd). (False, None) when there is
    none any more, or when its creator removed it while we waited (it finished, nothing is
    stale); (True, None) when a live process holds it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        now_there = os.stat(path)
    except BlockingIOError:
        os.close(fd)
        return True, None
    except FileNotFoundError:
        os.close(fd)
        return False, None
    if os.fstat(fd).st_ino != now_there.st_ino:
        os.close(fd)
        return False, None
    return False, fd


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove(paths: list[Path]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _mirrored(facts: PlanFacts) -> dict[str, Any]:
    """The registry columns that mirror plan_meta, from the file. A value the file does not
    hold (None: legacy files, or never set) leaves the registry's as it is: nothing is lost,
    and update_plan never sets one back to None."""
    values = {"title": facts.title, "description": facts.description, "owner": facts.owner,
              "metadata": facts.metadata}
    return {k: v for k, v in values.items() if v is not None}


class _Reconciler:
    def __init__(self, repo: PlanRepository, repair: bool):
        self.repo = repo
        self.cfg = repo.config
        self.repair = repair
        self.report = ReconcileReport(repair=repair)
        self._facts: dict[int, PlanFacts | PlanDBError] = {}
        # Plans this repository has written but not yet synced: their counts lag on purpose.
        self.pending = set() if repair else set(repo._dirty)

    # --- helpers ---------------------------------------------------------------------------

    def problem(self, kind: str, plan_id: int | None, path: Path | str | None, detail: str,
                repaired: bool = False) -> None:
        self.report.problems.append(
            Problem(kind, plan_id, None if path is None else str(path), detail, repaired))

    def facts(self, plan_id: int) -> PlanFacts | PlanDBError:
        """The plan file's facts, or the error reading it (cached for this run)."""
        if plan_id not in self._facts:
            path = self.cfg.plan_db_path(plan_id)
            try:
                try:
                    self._facts[plan_id] = read_plan_facts(path, allow_side_files=self.repair)
                except WrongDatabaseKind as exc:
                    # No kind recorded: a plan file in an older shape (e.g. its first open, which
                    # upgrades it, was killed and rolled back). Repair opens it as plandb does,
                    # which upgrades it; a file that is not a plan at all is refused untouched.
                    if not self.repair or exc.found is not None:
                        raise
                    with self.repo._open(path, "plan", create=False):
                        pass
                    self._facts[plan_id] = read_plan_facts(path, allow_side_files=True)
            except FileNotFoundError as exc:
                self._facts[plan_id] = PlanDBError(f"{path}: missing ({exc})")
            except PlanDBError as exc:
                self._facts[plan_id] = exc
        return self._facts[plan_id]

    def registry_rows(self) -> dict[int, _Row]:
        main = self.cfg.main_db_path
        if self.repair:
            with self.repo._registry() as conn, read(conn, main):
                rows = reg.full_rows(conn)
        elif not main.exists():
            rows = []
        else:
            rows = read_file(main, reg.full_rows)
        return {r[0]: _Row.of(r) for r in rows}

    @contextmanager
    def _registry_write(self) -> Iterator[Any]:
        """A registry write transaction (each repair re-reads its row inside one)."""
        main = self.cfg.main_db_path
        with self.repo._registry() as conn, write(conn, main,
                                                  retries=self.cfg.write_retries):
            yield conn

    def _registry_row(self, plan_id: int) -> tuple | None:
        """The row as it is now (a fresh read, not the snapshot the run started from)."""
        main = self.cfg.main_db_path
        if not self.repair:
            return read_file(main, lambda conn: reg.get_row(conn, plan_id))
        with self.repo._registry() as conn, read(conn, main):
            return reg.get_row(conn, plan_id)

    def _sync_from_file(self, conn, row: _Row, facts: PlanFacts) -> None:
        """Copy what the registry mirrors from the file into the row (inside a transaction)."""
        stamp = max(row.updated_at or "", facts.updated_at or "") or now()
        reg.update_plan(conn, row.id, _mirrored(facts), stamp)
        reg.sync_counts(conn, [(row.id, facts.task_count, stamp)])

    # --- the passes ------------------------------------------------------------------------

    def run(self) -> ReconcileReport:
        if self.repair:
            self.repo.flush()
        try:
            rows = self.registry_rows()
        except PlanDBError as exc:
            self.problem("unreadable_file", None, self.cfg.main_db_path,
                         f"the registry cannot be read: {exc}")
            return self.report
        files = dict(self.cfg.plan_files())
        owned = set()  # plan ids whose files belong to a row (any state)
        for row in rows.values():
            if row.state == "creating":
                if self.creating(row):
                    owned.add(row.id)
            elif row.state == "deleting":
                self.deleting(row)
                owned.add(row.id)
            else:
                self.ready(row, row.id in files)
                owned.add(row.id)
        self.temp_leftovers(rows)
        for plan_id, path in files.items():
            if plan_id not in owned:
                self.orphan(plan_id, path)
        self.report.plans_checked = len(set(files) | set(rows))
        return self.report

    def creating(self, row: _Row) -> bool:
        """A row of an unfinished create_plan; returns True if the row stays (ready or busy)."""
        pid = row.id
        lock_path = self.repo._creation_lock_path(pid)
        final = self.cfg.plan_db_path(pid)
        if not self.repair:
            if lock_held(lock_path):
                return True  # still being created by a live process
            facts = self.facts(pid) if final.exists() else None
            complete = isinstance(facts, PlanFacts) and facts.plan_id == pid
            self.problem("creating_row", pid, final,
                         "create_plan was cut after its file was in place: would mark ready"
                         if complete else
                         "create_plan was cut before its file was in place: would drop the row "
                         "and temp/ leftovers (it never returned)")
            return complete
        lock = try_lock(lock_path)
        if lock is None:
            return True
        try:
            with self._registry_write() as conn:
                current = reg.get_row(conn, pid)
                if current is None or current[8] != "creating":
                    return current is not None  # finished or undone meanwhile
                facts = self.facts(pid) if final.exists() else None
                if isinstance(facts, PlanFacts) and facts.plan_id == pid:
                    reg.set_state(conn, pid, "ready")
                    self._sync_from_file(conn, _Row.of(current), facts)
                    self.problem("creating_row", pid, final,
                                 "create_plan was cut after its file was in place: marked ready",
                                 True)
                    return True
                reg.delete_row(conn, pid)
            building = self.repo._building_path(pid)
            _remove([building, *(Path(f"{building}{s}") for s in _SIDE)])
            self.problem("creating_row", pid, final,
                         "create_plan was cut before its file was in place: row dropped and "
                         "temp/ leftovers removed (it never returned)", True)
            return False
        finally:
            unlock(lock, lock_path)

    def deleting(self, row: _Row) -> None:
        path = self.cfg.plan_db_path(row.id)
        if not self.repair:
            self.problem("deleting_row", row.id, path,
                         "delete_plan was cut: would remove the file, its -wal/-shm and the row")
            return
        self.repo.finish_delete(row.id)
        self.problem("deleting_row", row.id, path,
                     "delete_plan was cut: finished (file, -wal/-shm and row removed)", True)

    def ready(self, row: _Row, has_file: bool) -> None:
        path = self.cfg.plan_db_path(row.id)
        facts = self.facts(row.id) if has_file else None
        if facts is None or (isinstance(facts, PlanDBError) and not path.exists()):
            # A delete_plan running right now is not a problem: look at the row again.
            current = self._registry_row(row.id)
            if current is None or current[8] != "ready" or path.exists():
                return
            self.problem("missing_file", row.id, path,
                         "the registry lists this plan but its file is gone; the row is kept "
                         "(restore the file from backups/, or delete_plan it)")
            return
        if isinstance(facts, PlanDBError):
            self.problem("unreadable_file", row.id, path, str(facts))
            return
        if facts.plan_id is not None and facts.plan_id != row.id:
            self.problem("misplaced_file", row.id, path,
                         f"its plan_meta says it is plan {facts.plan_id}; left as it is")
            return
        stale = row.id not in self.pending and (
            facts.task_count != row.task_count
            or (facts.updated_at or "") > (row.updated_at or ""))
        mine = {"title": row.title, "description": row.description, "owner": row.owner,
                "metadata": row.metadata}
        mismatched = [
            key for key, theirs in _mirrored(facts).items()
            if (jsonutil.loads(mine[key], {}) != jsonutil.loads(theirs, {}) if key == "metadata"
                else mine[key] != theirs)
        ]
        if not stale and not mismatched:
            return
        repaired = False
        if self.repair:
            with self._registry_write() as conn:
                current = reg.get_row(conn, row.id)
                if current is not None and current[8] == "ready":
                    self._sync_from_file(conn, _Row.of(current), facts)
                    repaired = True
        if stale:
            self.problem("stale_counts", row.id, path,
                         f"registry task_count={row.task_count} updated_at={row.updated_at}; "
                         f"the file has {facts.task_count} tasks, updated_at={facts.updated_at}",
                         repaired)
        if mismatched:
            self.problem("registry_meta_mismatch", row.id, path,
                         "registry values differ from the file's plan_meta: "
                         + ", ".join(mismatched), repaired)

    def temp_leftovers(self, rows: dict[int, _Row]) -> None:
        temp = self.cfg.folder("temp")
        plans: dict[int, list[Path]] = {}
        templates: dict[str, tuple[int, list[Path]]] = {}
        try:
            entries = list(os.scandir(temp))
        except FileNotFoundError:
            return
        for entry in entries:
            m = _TEMP_PLAN.fullmatch(entry.name)
            if m:
                plans.setdefault(int(m.group(1)), []).append(Path(entry.path))
                continue
            m = _TEMP_TEMPLATE.fullmatch(entry.name)
            if m:
                templates.setdefault(m.group(1), (int(m.group(2)), []))[1].append(
                    Path(entry.path))
        for pid, paths in sorted(plans.items()):
            lock_path = self.repo._creation_lock_path(pid)
            building = self.repo._building_path(pid)
            row = rows.get(pid)
            if row is not None and row.state == "creating" and not self.repair:
                continue  # reported with its row
            if not self.repair:
                left = [p for p in paths if p.exists()]  # a creator may have finished since
                if left and not lock_held(lock_path):
                    self.problem("stale_building_file", pid, building,
                                 "leftovers of a create_plan that died: would remove "
                                 + ", ".join(p.name for p in sorted(left)))
                continue
            busy, lock = _lock_existing(lock_path)
            if busy:
                continue  # a create_plan in progress
            try:
                current = self._registry_row(pid)
                if current is not None and current[8] == "creating":
                    continue  # its row was left alone above; so are its files
                # A lock file alone is not reported: a create_plan may have just created it and
                # not locked it yet (it re-checks and retries); only building files are
                # leftovers of a creation that died.
                left = [p for p in paths if p != lock_path and p.exists()]
                _remove(left)
                if lock is not None and left:
                    left.append(lock_path)  # removed by unlock() below
            finally:
                if lock is not None:
                    unlock(lock, lock_path)
            if left:
                self.problem("stale_building_file", pid, building,
                             "leftovers of a create_plan that died: removed "
                             + ", ".join(p.name for p in sorted(left)), True)
        for name, (pid, paths) in sorted(templates.items()):
            if pid == os.getpid() or _pid_alive(pid):
                continue
            if self.repair:
                _remove(paths)
            self.problem("stale_building_file", None, temp / name,
                         f"plan template of process {pid}, which is gone: "
                         + ("removed" if self.repair else "would remove"), self.repair)

    def orphan(self, plan_id: int, path: Path) -> None:
        facts = self.facts(plan_id)
        if isinstance(facts, PlanDBError) and not path.exists():
            return  # deleted meanwhile
        if isinstance(facts, PlanDBError):
            self.problem("unreadable_file", plan_id, path, str(facts))
            return
        if facts.plan_id is not None and facts.plan_id != plan_id:
            self.problem("misplaced_file", plan_id, path,
                         f"its plan_meta says it is plan {facts.plan_id}; left as it is")
            return
        repaired = False
        if self.repair:
            with self._registry_write() as conn:
                if reg.get_row(conn, plan_id) is not None:
                    return  # a create_plan registered it meanwhile
                title = facts.title or f"plan {plan_id}"
                stamp = facts.created_at or facts.updated_at or now()
                reg.insert_plan(
                    conn, plan_id, title=title, owner=facts.owner,
                    description=facts.description, metadata_json=facts.metadata,
                    plan_file=str(path.relative_to(self.cfg.root)), state="ready",
                    stamp=stamp, task_count=facts.task_count)
                reg.sync_counts(conn, [(plan_id, facts.task_count, facts.updated_at or stamp)])
            repaired = True
        self.problem("orphan_file", plan_id, path,
                     f"a plan file with no registry row ({facts.task_count} tasks): "
                     + ("registered from its plan_meta" if repaired
                        else "would register it from its plan_meta"), repaired)


def reconcile(repo: PlanRepository, *, repair: bool = False) -> ReconcileReport:
    """Check the registry against the plan files under `repo`'s root; with ``repair=True``
    also fix what can be fixed without losing anything (see the module doc for each kind).

    Without repair nothing is created or written (files are read through read-only snapshots).
    """
    return _Reconciler(repo, repair).run()
