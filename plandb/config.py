"""DatabaseConfig: where every file under DB_ROOT lives, and how ids become file names.

Layout (folders 0700, database files 0600)::

    DB_ROOT/
      main/plan_registry.db         plans index, chat, action runs, job index
      plans/plan_<id>.sqlite        one file per plan
      jobs/system_jobs.sqlite       jobs and action logs not bound to a plan
      sessions/session_<id>.sqlite  per-session memory
      cache/<name>_cache.db         embedding and LLM caches
      temp/  backups/

Ids become file names through `safe_name`, which is injective and contained: an id made only
of ``[A-Za-z0-9_-]`` (1..64 chars) is its own name; any other id becomes ``~`` + the sha256 of
its UTF-8 bytes. ``~`` is outside the safe alphabet, so a hashed name never equals a plain one,
and no name can contain a path separator or ``..``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidId, StorageError

FOLDERS = ("main", "plans", "jobs", "sessions", "cache", "temp", "backups")
DIR_MODE = 0o700
FILE_MODE = 0o600
MAX_PLAN_ID = 2**63 - 1

_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PLAN_FILE = re.compile(r"plan_([1-9][0-9]{0,18})\.sqlite")


def default_root() -> Path:
    """platformdirs' user data dir for "plandb", plus ``databases``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("plandb", appauthor=False)) / "databases"


def safe_name(value: str, what: str = "id") -> str:
    """Map an arbitrary string id to a file-name part (injective, never a path)."""
    if not isinstance(value, str):
        raise InvalidId(what, value, "must be a string")
    if _SAFE.fullmatch(value):
        return value
    try:
        raw = value.encode("utf-8", "surrogatepass")
    except UnicodeEncodeError:  # pragma: no cover - surrogatepass encodes every str
        raw = repr(value).encode()
    return "~" + hashlib.sha256(raw).hexdigest()


def check_plan_id(plan_id: Any) -> int:
    """Return plan_id if it is a positive integer, else raise InvalidId."""
    if isinstance(plan_id, bool) or not isinstance(plan_id, int):
        raise InvalidId("plan id", plan_id, "must be a positive integer")
    if not 0 < plan_id <= MAX_PLAN_ID:
        raise InvalidId("plan id", plan_id, f"must be between 1 and {MAX_PLAN_ID}")
    return plan_id


def plan_id_from_filename(name: str) -> int | None:
    """`plan_42.sqlite` -> 42; anything else -> None."""
    m = _PLAN_FILE.fullmatch(name)
    if not m:
        return None
    value = int(m.group(1))
    return value if value <= MAX_PLAN_ID else None


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) and make it 0700, whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    if (path.stat().st_mode & 0o777) != DIR_MODE:
        os.chmod(path, DIR_MODE)


def make_private(path: Path) -> None:
    """chmod a database file (and its -wal/-shm if present) to 0600."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if (p.stat().st_mode & 0o777) != FILE_MODE:
                os.chmod(p, FILE_MODE)
        except FileNotFoundError:
            pass


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (so a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class DatabaseConfig:
    """Resolves DB_ROOT and every path under it; creates the folders on construction.

    The root comes from the argument, else env ``DB_ROOT``, else `default_root()`. ``~`` and
    relative paths are resolved once, here. Tuning knobs for the connection layer live here too
    so that one object describes how a root is used.

    Example::

        cfg = DatabaseConfig("/var/lib/planner/db")
        cfg.plan_db_path(7)   # /var/lib/planner/db/plans/plan_7.sqlite
    """

    db_root: str | os.PathLike | None = None
    max_open_files: int = 64
    busy_timeout_ms: int = 10_000
    write_retries: int = 5
    # Pooled connections checkpoint their -wal in a background thread (plandb.checkpoints);
    # False keeps SQLite's own: the commit that crosses 1000 pages checkpoints inline.
    background_checkpoints: bool = True
    create: bool = True
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        raw = self.db_root if self.db_root is not None else os.environ.get("DB_ROOT")
        root = Path(raw).expanduser() if raw else default_root()
        self.root = root.resolve()
        if self.max_open_files < 2:
            raise ValueError("max_open_files must be at least 2")
        if self.create:
            self.ensure_layout()

    # -- layout ---------------------------------------------------------------------------

    def ensure_layout(self) -> None:
        """Create every folder of the layout with mode 0700."""
        try:
            ensure_private_dir(self.root)
            for name in FOLDERS:
                ensure_private_dir(self.root / name)
        except OSError as exc:
            raise StorageError(f"cannot create DB_ROOT folders under {self.root}: {exc}") from exc

    def folder(self, name: str) -> Path:
        """One of the layout's folders (a fixed name, never user input)."""
        if name not in FOLDERS:
            raise ValueError(f"unknown folder {name!r}")
        return self.root / name

    # -- paths ------------------------------------------------------------------------------

    @property
    def main_db_path(self) -> Path:
        return self.root / "main" / "plan_registry.db"

    @property
    def system_jobs_db_path(self) -> Path:
        return self.root / "jobs" / "system_jobs.sqlite"

    def plan_db_path(self, plan_id: int) -> Path:
        return self.root / "plans" / f"plan_{check_plan_id(plan_id)}.sqlite"

    def session_db_path(self, session_id: str) -> Path:
        return self.root / "sessions" / f"session_{safe_name(session_id, 'session id')}.sqlite"

    def cache_db_path(self, name: str) -> Path:
        return self.root / "cache" / f"{safe_name(name, 'cache name')}_cache.db"

    def temp_db_path(self, name: str) -> Path:
        return self.root / "temp" / f"{safe_name(name, 'temp name')}.sqlite"

    def backup_path(self, name: str, timestamp: str | None = None) -> Path:
        """`backups/<name>.<timestamp>.bak`, timestamp defaulting to now (UTC, compact)."""
        from .timestamps import now

        stamp = timestamp or now().replace(":", "").replace("-", "").replace(".", "")
        return self.root / "backups" / f"{safe_name(name, 'backup name')}.{safe_name(stamp)}.bak"

    def describe(self) -> dict[str, Any]:
        """The resolved layout as a JSON-ready dict."""
        return {
            "db_root": str(self.root),
            "folders": {name: str(self.root / name) for name in FOLDERS},
            "files": {
                "registry": str(self.main_db_path),
                "system_jobs": str(self.system_jobs_db_path),
                "plan": str(self.root / "plans" / "plan_<id>.sqlite"),
                "session": str(self.root / "sessions" / "session_<id>.sqlite"),
                "cache": str(self.root / "cache" / "<name>_cache.db"),
            },
            "max_open_files": self.max_open_files,
            "busy_timeout_ms": self.busy_timeout_ms,
            "background_checkpoints": self.background_checkpoints,
        }

    def plan_files(self) -> list[tuple[int, Path]]:
        """Every `plans/plan_<id>.sqlite` on disk, sorted by id (no temp or foreign files)."""
        found = []
        with os.scandir(self.root / "plans") as it:
            for entry in it:
                pid = plan_id_from_filename(entry.name)
                if pid is not None:
                    found.append((pid, Path(entry.path)))
        return sorted(found)

    def migrate_existing_databases(self, **kwargs: Any):
        """Bring legacy files into this root; see `plandb.maintenance.legacy`."""
        from .maintenance.legacy import migrate_existing_databases

        return migrate_existing_databases(self, **kwargs)
