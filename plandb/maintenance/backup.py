"""Backup, restore and vacuum of a whole DB_ROOT.

`backup_root` copies every database file with SQLite's online backup API while writers keep
writing: each file is copied in one step under one read transaction, so each copy is a
consistent snapshot holding every transaction committed before its copy began, WAL content
included (a bare file copy of a WAL database can miss or tear committed pages). There is no
atomic snapshot across files (SQLite has none), so the registry is copied before the other
files are listed: a plan created while the backup runs shows up as an orphan file, which
``plandb doctor --repair`` re-registers without loss; a plan deleted while it runs can leave its
row without a file (``missing_file``). ``manifest.json`` lists each file with its size, sha256, kind and
schema version.

`restore_root` verifies every checksum before touching anything, restores into an empty or
new root, and on a root that holds databases only with ``force=True``, after moving the
current files aside into ``backups/pre-restore-<stamp>/`` (nothing is deleted).

`vacuum_root` runs VACUUM on each file: a non-transactional operation by nature (SQLite refuses
VACUUM inside a transaction), so it runs outside `transaction.write`, one file at a time.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import apsw

from .. import jsonutil, schema
from ..config import FILE_MODE, DatabaseConfig, ensure_private_dir, fsync_path
from ..connection import open_connection
from ..errors import BackupError, PlanDBError, RootNotFound, translate
from ..timestamps import now
from ..transaction import retry_busy
from .inspect import Problem, Progress, no_progress
from .scan import DATA_FOLDERS, SIDE_SUFFIXES, database_files, file_sizes, read_snapshot

MANIFEST = "manifest.json"
FORMAT = "plandb-backup/1"
_CHUNK = 1 << 20


def stamp() -> str:
    """Now as a compact, sortable, file-name-safe string: 20261122T100124123456Z."""
    return now().replace(":", "").replace("-", "").replace(".", "")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, value: Any) -> None:
    """Write JSON durably: temp file (0600), fsync, rename, fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, jsonutil.dumps(value).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_path(path.parent)


# --- backup ----------------------------------------------------------------------------------


def copy_database(src: Path, dest: Path, *, busy_timeout_ms: int = 10_000) -> None:
    """Copy one live database to `dest` (new, 0600) with the online backup API, in one step.

    One ``step(-1)`` holds a single read transaction on the source, so the copy is a consistent
    snapshot and is never restarted by concurrent writers (in WAL mode it does not block them).
    The source is opened read-write without changing any setting, so that when this is its last
    connection, closing it checkpoints and removes the -wal as any plandb connection would.
    """
    if not src.exists():
        raise FileNotFoundError(str(src))
    if dest.exists():
        raise BackupError(f"{dest} already exists; nothing was overwritten")
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    os.close(fd)
    source = target = None
    try:
        source = apsw.Connection(str(src), flags=apsw.SQLITE_OPEN_READWRITE)
        source.set_busy_timeout(busy_timeout_ms)
        target = apsw.Connection(str(dest))

        def run() -> None:
            with target.backup("main", source, "main") as b:
                b.step(-1)

        retry_busy(run, path=src, retries=4)
    except BaseException as exc:
        if target is not None:
            target.close()
            target = None
        for suffix in ("", "-journal", "-wal", "-shm"):  # our own partial copy, never the source
            try:
                os.unlink(f"{dest}{suffix}")
            except FileNotFoundError:
                pass
        if isinstance(exc, apsw.Error):
            raise translate(exc, src) from exc
        raise
    finally:
        if target is not None:
            target.close()
        if source is not None:
            source.close()


def _describe_copy(path: Path) -> tuple[str | None, int | None]:
    """(kind, schema version) recorded in a copied file, read without writing."""
    def state(conn):
        return schema.read_state(conn)
    try:
        st = read_snapshot(path, state)
    except PlanDBError:
        return None, None
    return st.kind, st.version()


def _copy_one(f, dest: Path, busy_timeout_ms: int, entries: list, errors: list,
              problems: list[Problem]) -> None:
    """Copy one file into the backup and add its manifest entry (or its error)."""
    target = dest / f.rel
    ensure_private_dir(target.parent)
    try:
        copy_database(f.path, target, busy_timeout_ms=busy_timeout_ms)
    except FileNotFoundError:
        return  # deleted while we ran (a plan deleted meanwhile): nothing to keep
    except PlanDBError as exc:
        errors.append({"path": f.rel, "error": str(exc), "code": exc.code})
        problems.append(Problem("backup_failed", f.rel, str(exc), f.plan_id))
        return
    kind, version = _describe_copy(target)
    entries.append({
        "path": f.rel, "kind": kind or f.expected_kind, "schema_version": version,
        "bytes": target.stat().st_size, "sha256": sha256_file(target),
    })


def default_backup_dir(root: Path) -> Path:
    return root / "backups" / f"full-{stamp()}"


def _check_dest(root: Path, dest: Path) -> None:
    dest = dest.resolve()
    backups = (root / "backups").resolve()
    if (dest == root or root in dest.parents) and backups not in dest.parents:
        raise BackupError(f"{dest} is inside DB_ROOT {root}; back up into {backups}/ or a "
                          "folder outside the root")
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty; choose a new or empty folder")


@dataclass(slots=True)
class BackupResult:
    dest: str
    manifest: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "dest": self.dest, "manifest": self.manifest,
                "problems": [p.to_dict() for p in self.problems]}


def backup_root(root: Path, dest: Path | None = None, *, progress: Progress = no_progress,
                busy_timeout_ms: int = 10_000) -> BackupResult:
    """Copy every database file under `root` into `dest` (default backups/full-<stamp>/).

    Files that cannot be copied (corrupt, unreadable) are listed as problems and in the
    manifest's ``errors``; every other file is still copied. Raises `RootNotFound`, or
    `BackupError` when `dest` is not new/empty or sits inside the root's data folders.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise RootNotFound(root)
    dest = Path(dest).resolve() if dest is not None else default_backup_dir(root)
    _check_dest(root, dest)
    ensure_private_dir(dest)
    started = now()
    entries: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    problems: list[Problem] = []
    # The registry is copied before the other files are even listed: every plan its copy
    # calls ready had its file in place by then, so that file is in the listing below.
    registry = [f for f in database_files(root, ("main",)) if f.expected_kind == "registry"]
    for f in registry:
        _copy_one(f, dest, busy_timeout_ms, entries, errors, problems)
    rest = [f for f in database_files(root) if f.expected_kind != "registry"]
    for f in progress(rest, "backing up"):
        _copy_one(f, dest, busy_timeout_ms, entries, errors, problems)
    manifest = {
        "format": FORMAT,
        "db_root": str(root),
        "started_at": started,
        "finished_at": now(),
        "sqlite_version": apsw.sqlite_lib_version(),
        "files": entries,
        "errors": errors,
        "totals": {"files": len(entries), "bytes": sum(e["bytes"] for e in entries)},
    }
    for folder in {dest / e["path"] for e in entries}:
        fsync_path(folder)
        fsync_path(folder.parent)
    _write_json(dest / MANIFEST, manifest)
    return BackupResult(str(dest), manifest, problems)


# --- restore ---------------------------------------------------------------------------------


def _safe_rel(rel: Any) -> PurePosixPath:
    """A manifest path must be folder/name inside a data folder: nothing else is restored."""
    if not isinstance(rel, str):
        raise BackupError(f"manifest path {rel!r} is not a string; the backup is damaged")
    p = PurePosixPath(rel)
    if (p.is_absolute() or len(p.parts) != 2 or p.parts[0] not in DATA_FOLDERS
            or p.name in ("", ".", "..") or p.name.endswith(SIDE_SUFFIXES)):
        raise BackupError(f"manifest path {rel!r} is not a database file of the layout; "
                          "the backup is damaged or was not made by plandb")
    return p


def load_manifest(backup: Path) -> dict[str, Any]:
    path = Path(backup) / MANIFEST
    try:
        manifest = jsonutil.loads(path.read_bytes())
    except FileNotFoundError:
        raise BackupError(f"{backup} has no {MANIFEST}; is it a plandb backup folder?") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is not a {FORMAT} manifest")
    return manifest


def verify_backup(backup: Path, *, progress: Progress = no_progress) -> dict[str, Any]:
    """Check every file of the manifest (present, size, sha256); raise BackupError if not."""
    backup = Path(backup)
    manifest = load_manifest(backup)
    bad = []
    for entry in progress(manifest.get("files", []), "verifying"):
        rel = _safe_rel(entry.get("path"))
        path = backup / rel
        if not path.is_file():
            bad.append(f"{rel}: missing")
        elif path.stat().st_size != entry.get("bytes"):
            bad.append(f"{rel}: {path.stat().st_size} bytes, manifest says {entry.get('bytes')}")
        elif sha256_file(path) != entry.get("sha256"):
            bad.append(f"{rel}: sha256 differs from the manifest")
    if bad:
        raise BackupError(f"backup {backup} failed verification ({len(bad)} file(s)): "
                          + "; ".join(bad[:5]) + ". Nothing was restored.")
    return manifest


def _occupied(root: Path) -> list[str]:
    """Database files (and their side files) in the root's data folders."""
    found = []
    for folder in DATA_FOLDERS:
        try:
            names = sorted(os.listdir(root / folder))
        except FileNotFoundError:
            continue
        found.extend(f"{folder}/{n}" for n in names)
    return found


def _move_aside(root: Path, reason: str, backup: Path) -> Path:
    """Move everything in the data folders into backups/pre-restore-<stamp>/ (rename only)."""
    aside = root / "backups" / f"pre-restore-{stamp()}"
    ensure_private_dir(aside)
    for folder in DATA_FOLDERS:
        src_dir = root / folder
        if not src_dir.is_dir():
            continue
        for name in sorted(os.listdir(src_dir)):
            ensure_private_dir(aside / folder)
            os.rename(src_dir / name, aside / folder / name)
        fsync_path(src_dir)
    _write_json(aside / "MOVED.json", {"reason": reason, "restored_from": str(backup),
                                       "original_root": str(root), "moved_at": now()})
    return aside


@dataclass(slots=True)
class RestoreResult:
    db_root: str
    backup: str
    files: list[dict[str, Any]]
    moved_aside: str | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "db_root": self.db_root, "backup": self.backup,
                "files": self.files, "moved_aside": self.moved_aside,
                "problems": [p.to_dict() for p in self.problems]}


def restore_root(backup: Path, root: Path, *, force: bool = False,
                 progress: Progress = no_progress) -> RestoreResult:
    """Restore the backup folder `backup` into `root` (see module doc).

    Raises `BackupError` (nothing changed) when the backup fails verification, or when `root`
    already holds files in its data folders and `force` is false.
    """
    backup = Path(backup).resolve()
    root = Path(root).resolve()
    manifest = verify_backup(backup, progress=progress)
    occupied = _occupied(root)
    if occupied and not force:
        raise BackupError(
            f"DB_ROOT {root} is not empty ({len(occupied)} file(s), e.g. {occupied[0]}); "
            "restore into an empty or new root, or pass --force to move its current files "
            "into backups/pre-restore-<timestamp>/ first (stop every writer before that)")
    DatabaseConfig(root)  # creates the layout, 0700
    aside = _move_aside(root, "plandb restore --force", backup) if occupied else None
    restored: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for entry in progress(manifest["files"], "restoring"):
        rel = _safe_rel(entry["path"])
        final = root / rel
        tmp = final.with_name(final.name + ".restoring")
        h = hashlib.sha256()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            with open(backup / rel, "rb") as src:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    os.write(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        if h.hexdigest() != entry["sha256"]:
            tmp.unlink()
            raise BackupError(f"{rel} changed while it was restored; restore again")
        os.replace(tmp, final)
        fsync_path(final.parent)
        check = read_snapshot(final, lambda c: [r[0] for r in c.execute("PRAGMA quick_check(5)")])
        if check != ["ok"]:
            problems.append(Problem("check_failed", str(rel), "; ".join(check)))
        restored.append({"path": str(rel), "bytes": entry["bytes"], "kind": entry.get("kind"),
                         "schema_version": entry.get("schema_version"), "check": "ok"
                         if check == ["ok"] else "failed"})
    return RestoreResult(str(root), str(backup), restored, str(aside) if aside else None,
                         problems)


# --- vacuum ----------------------------------------------------------------------------------


def vacuum_file(path: Path, *, busy_timeout_ms: int = 10_000) -> None:
    """VACUUM one file, then truncate its -wal. Not inside `write()`: VACUUM cannot be."""
    conn = open_connection(path, create=False, configure=False, busy_timeout_ms=busy_timeout_ms)
    try:
        retry_busy(conn.execute, "VACUUM", path=path, retries=4)
        if str(conn.execute("PRAGMA journal_mode").fetchall()[0][0]).lower() == "wal":
            retry_busy(conn.wal_checkpoint, "main", apsw.SQLITE_CHECKPOINT_TRUNCATE, path=path,
                       retries=4)
    except apsw.Error as exc:
        raise translate(exc, path) from exc
    finally:
        conn.close()


def vacuum_root(root: Path, *, progress: Progress = no_progress,
                busy_timeout_ms: int = 10_000) -> dict[str, Any]:
    """VACUUM every database file; report bytes before/after per file and any failures."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise RootNotFound(root)
    files, problems = [], []
    for f in progress(database_files(root), "vacuuming"):
        before = file_sizes(f.path)[0]
        try:
            vacuum_file(f.path, busy_timeout_ms=busy_timeout_ms)
        except FileNotFoundError:
            continue
        except PlanDBError as exc:
            problems.append(Problem("vacuum_failed", f.rel, str(exc), f.plan_id))
            files.append({"path": f.rel, "bytes_before": before, "bytes_after": before,
                          "error": str(exc)})
            continue
        files.append({"path": f.rel, "bytes_before": before,
                      "bytes_after": file_sizes(f.path)[0], "error": None})
    return {
        "ok": not problems,
        "db_root": str(root),
        "files": files,
        "totals": {"files": len(files), "bytes_before": sum(x["bytes_before"] for x in files),
                   "bytes_after": sum(x["bytes_after"] for x in files)},
        "problems": [p.to_dict() for p in problems],
    }

