"""One error tree for plandb, and the one place where apsw errors are translated.

Every exception the public API raises is a `PlanDBError`. Each class is named for what went
wrong, carries the facts as attributes, and its message says what to do about it. `code` is the
stable machine-readable name used by the CLI's `--json` error shape.
"""

from __future__ import annotations

import os
from typing import Any

import apsw


class PlanDBError(Exception):
    """Base class of every error plandb raises."""

    code = "plandb_error"
    exit_code = 1


# --- bad input -----------------------------------------------------------------------------


class InvalidInput(PlanDBError, ValueError):
    """An argument has the wrong type, shape or range; nothing was written."""

    code = "invalid_input"
    MAX_MESSAGE = 600

    def __init__(self, message: object = "", *args: object):
        # A message that echoes a huge argument back (a 10 kB id, a 50 MB string) is not a
        # clear message: keep its start (what was wrong) and its end, drop the middle.
        if isinstance(message, str) and len(message) > self.MAX_MESSAGE:
            message = (f"{message[:450]} ...[{len(message) - 550} characters cut]... "
                       f"{message[-100:]}")
        super().__init__(message, *args)


class InvalidId(InvalidInput):
    """An id is not of the form its kind requires (plan ids are positive integers)."""

    code = "invalid_id"

    def __init__(self, what: str, value: Any, rule: str):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid {what} {shown}: {rule}")
        self.what = what
        self.value = value


# --- not found -----------------------------------------------------------------------------


class NotFound(PlanDBError, LookupError):
    """Something asked for by id does not exist."""

    code = "not_found"


class PlanNotFound(NotFound):
    """No plan with this id exists under DB_ROOT."""

    code = "plan_not_found"

    def __init__(self, plan_id: int, detail: str = ""):
        msg = f"plan {plan_id} not found"
        super().__init__(msg + (f": {detail}" if detail else ""))
        self.plan_id = plan_id


class TaskNotFound(NotFound):
    """No task with this id exists in the plan."""

    code = "task_not_found"

    def __init__(self, plan_id: int, task_id: Any):
        super().__init__(f"task {task_id!r} not found in plan {plan_id}")
        self.plan_id = plan_id
        self.task_id = task_id


class RecordNotFound(NotFound):
    """A job, session, memory, snapshot or other record was not found."""

    code = "record_not_found"

    def __init__(self, what: str, key: Any, where: str = ""):
        super().__init__(f"{what} {key!r} not found" + (f" in {where}" if where else ""))
        self.what = what
        self.key = key


class RecordConflict(InvalidInput):
    """A record with this id already exists (here, or bound to another plan); nothing written."""

    code = "record_conflict"

    def __init__(self, what: str, key: Any, detail: str):
        super().__init__(f"{what} {key!r} {detail}")
        self.what = what
        self.key = key


class RootNotFound(NotFound):
    """DB_ROOT does not exist (read-only commands never create it)."""

    code = "root_not_found"

    def __init__(self, root: os.PathLike | str):
        super().__init__(f"DB_ROOT {root} does not exist; pass --db-root or set DB_ROOT")
        self.root = str(root)


# --- tree rules ----------------------------------------------------------------------------


class TreeError(InvalidInput):
    """A change would break the task tree or the dependency graph."""

    code = "tree_error"


class TreeCycle(TreeError):
    """Moving a task under itself or one of its descendants."""

    code = "tree_cycle"


class DependencyCycle(TreeError):
    """A dependency edge would close a cycle."""

    code = "dependency_cycle"


# --- files and schemas ---------------------------------------------------------------------


class DatabaseFileError(PlanDBError):
    """A problem with one database file; `path` names it."""

    code = "database_file_error"

    def __init__(self, path: os.PathLike | str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = str(path)


class SchemaTooNew(DatabaseFileError):
    """The file was written by a newer plandb; it is refused and left untouched."""

    code = "schema_too_new"

    def __init__(self, path, kind: str, found: int, supported: int):
        super().__init__(
            path,
            f"{kind} schema v{found}; this plandb reads up to v{supported}. "
            "Upgrade plandb; the file was not modified.",
        )
        self.kind = kind
        self.found = found
        self.supported = supported


class WrongDatabaseKind(DatabaseFileError):
    """The file holds another kind of database than the one asked for."""

    code = "wrong_database_kind"

    def __init__(self, path, expected: str, found: str | None):
        super().__init__(
            path,
            f"is a {found or 'foreign (not plandb)'} database, expected {expected}; "
            "the file was not modified.",
        )
        self.expected = expected
        self.found = found


class CorruptDatabase(DatabaseFileError):
    """The file is not a readable SQLite database (garbage, truncated, or damaged)."""

    code = "corrupt_database"

    def __init__(self, path, detail: str = ""):
        super().__init__(
            path,
            "is corrupt or not a SQLite database"
            + (f" ({detail})" if detail else "")
            + ". Run `plandb doctor` to inspect it; `plandb doctor --repair` quarantines it.",
        )


class SchemaOutdated(DatabaseFileError):
    """The file needs a schema upgrade, which a read-only command does not perform."""

    code = "schema_outdated"

    def __init__(self, path, kind: str, found: int, latest: int):
        super().__init__(
            path,
            f"{kind} schema v{found} is older than v{latest}; read-only commands do not "
            "upgrade files. Run `plandb migrate` (it backs each file up first).",
        )
        self.kind = kind
        self.found = found
        self.latest = latest


class NeedsRecovery(DatabaseFileError):
    """A WAL database has a -wal but no -shm: reading it needs a write (WAL recovery)."""

    code = "needs_recovery"

    def __init__(self, path):
        super().__init__(
            path,
            "has a -wal file but no -shm, so it cannot be read without writing; "
            "`plandb doctor --repair` recovers it (a normal open replays the -wal).",
        )


class MigrationFailed(DatabaseFileError):
    """A schema upgrade step failed; the file was rolled back to how it was."""

    code = "migration_failed"


class DatabaseBusy(PlanDBError):
    """Another writer held the file longer than the busy timeout and every retry."""

    code = "database_busy"

    def __init__(self, path, waited_ms: int):
        super().__init__(
            f"{path}: still locked by another writer after {waited_ms} ms and retries; "
            "raise busy_timeout_ms or find the long-running writer."
        )
        self.path = str(path)


class StorageError(PlanDBError):
    """SQLite or the filesystem failed in a way not covered by a narrower class."""

    code = "storage_error"


class DiskFull(StorageError):
    """The disk (or SQLite's size limit) is full; the transaction was rolled back."""

    code = "disk_full"


class TransactionError(PlanDBError):
    """A transaction was misused (e.g. writing inside a read snapshot)."""

    code = "transaction_error"


class RepositoryClosed(PlanDBError):
    """The repository (or connection pool) was closed; open a new one."""

    code = "repository_closed"


class LockTimeout(PlanDBError):
    """A cross-process file lock could not be taken in time."""

    code = "lock_timeout"


class BackupError(PlanDBError):
    """A backup or restore could not be made safely; nothing was overwritten."""

    code = "backup_error"


def translate(exc: BaseException, path: os.PathLike | str | None = None) -> PlanDBError:
    """Map an apsw (or OS) exception to the narrowest PlanDBError; use `raise ... from exc`."""
    if isinstance(exc, PlanDBError):
        return exc
    where = str(path) if path is not None else "database"
    if isinstance(exc, (apsw.NotADBError, apsw.CorruptError)):
        return CorruptDatabase(where, str(exc))
    if isinstance(exc, apsw.BusyError | apsw.LockedError):
        return DatabaseBusy(where, 0)
    if isinstance(exc, apsw.FullError):
        return DiskFull(f"{where}: disk or database full ({exc})")
    if isinstance(exc, apsw.CantOpenError):
        return StorageError(f"{where}: cannot open ({exc}); check the path and permissions")
    if isinstance(exc, apsw.ReadOnlyError):
        return StorageError(f"{where}: read-only ({exc})")
    if isinstance(exc, apsw.ConstraintError):
        return InvalidInput(f"{where}: constraint failed ({exc})")
    if isinstance(exc, OSError):
        return StorageError(f"{where}: {exc.strerror or exc}")
    return StorageError(f"{where}: {type(exc).__name__}: {exc}")
