"""Handling legacy database files safely: reading them without side effects, copying them
consistently into ``backups/`` before anything touches them, and quarantining unreadable ones.

The rule everything here follows: a ``-wal`` file can hold committed transactions that exist
nowhere else, so a database is never copied, moved or deleted apart from it.

- `Reader.read(path, fn)` runs ``fn(conn)`` on a read-only view of a legacy file that changes
  nothing on disk (`scan.read_snapshot`: ``immutable=1`` without a -wal, ``readonly_shm=1``
  with one). A -wal without its -shm cannot be read that way (SQLite must write to recover it);
  then db + -wal are copied together into a private scratch folder and the copy is opened
  normally, which replays the -wal there. No process can be writing such a file: a live WAL
  connection always has the -shm.
- `Backups.take(path, name)` writes a consistent copy with SQLite's backup API (WAL content
  included) under ``backups/legacy/<run>/``, switches the copy to a single self-contained file
  (journal_mode=DELETE), and records its fingerprint (sha256 of the file + its -wal) in
  ``backups/legacy/ledger.json``. The same content is never copied twice: a rerun after an
  interruption reuses the copy the first run took.
- `quarantine(...)` moves an unreadable file with its -wal/-shm/-journal into
  ``backups/quarantine/``: all side files are hard-linked there first, a note is written, and
  only then are the originals unlinked, so a kill at any point leaves at least one complete set;
  `finish_quarantines` completes a move a kill interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import apsw

from .. import jsonutil
from ..config import FILE_MODE, ensure_private_dir, fsync_path
from ..errors import NeedsRecovery, PlanDBError, StorageError, translate
from ..schema import backup_file
from ..timestamps import now
from .legacy_report import Backup, MigrationReport
from .scan import read_snapshot

T = TypeVar("T")
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
LEDGER_VERSION = 1


def stamp_name(stamp: str | None = None) -> str:
    """'2026-11-22T10:01:24.123456Z' -> '20261122T100124123456Z' (a folder-name timestamp)."""
    return (stamp or now()).replace(":", "").replace("-", "").replace(".", "")


def side_files(path: Path) -> list[Path]:
    """The side files of a database that exist now (-wal, -shm, -journal)."""
    return [p for p in (Path(f"{path}{s}") for s in SIDE_SUFFIXES) if p.exists()]


def fingerprint(path: Path) -> str:
    """sha256 over the database file and its -wal (the -shm is only an index)."""
    h = hashlib.sha256()
    for p in (path, Path(f"{path}-wal")):
        try:
            with open(p, "rb") as f:
                h.update(p.name.encode()[-4:])
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(chunk)
        except FileNotFoundError:
            h.update(b"-")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def private_dirs(root: Path, folder: Path) -> None:
    """Create `folder` and every missing folder between `root` and it, each 0700."""
    for part in reversed([folder, *folder.parents]):
        if part == root or root in part.parents:
            ensure_private_dir(part)


def write_json_atomic(path: Path, value: Any, *, durable: bool = True) -> None:
    """Write JSON to a temp file and rename it over `path` (a reader sees the old or the new
    document, never half of one). ``durable``: fsync the file and the folder too."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = (jsonutil.dumps(value) or "null").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_path(path.parent)


def read_json(path: Path, default: Any) -> Any:
    try:
        return jsonutil.loads(path.read_bytes(), default)
    except FileNotFoundError:
        return default


# --- reading ---------------------------------------------------------------------------------


class Reader:
    """Read-only views of legacy files that leave every byte on disk as it was."""

    def __init__(self, busy_timeout_ms: int = 10_000):
        self.busy_timeout_ms = busy_timeout_ms
        self._scratch: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, path: Path, fn: Callable[[apsw.Connection], T]) -> T:
        """``fn(conn)`` on a read-only view of `path` (see the module doc)."""
        try:
            return read_snapshot(path, fn, busy_timeout_ms=self.busy_timeout_ms)
        except NeedsRecovery:
            with self.recovered_copy(path) as copy:
                conn = apsw.Connection(str(copy))
                try:
                    conn.set_busy_timeout(self.busy_timeout_ms)
                    return fn(conn)
                except apsw.Error as exc:
                    raise translate(exc, path) from exc
                finally:
                    conn.close()

    @contextlib.contextmanager
    def recovered_copy(self, path: Path) -> Iterator[Path]:
        """db + -wal copied together into a private scratch folder (for a -wal with no -shm)."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="plandb-legacy-")
            os.chmod(self._scratch.name, 0o700)
        folder = Path(tempfile.mkdtemp(dir=self._scratch.name))
        copy = folder / "db.sqlite"
        try:
            shutil.copyfile(path, copy)
            wal = Path(f"{path}-wal")
            if wal.exists():
                shutil.copyfile(wal, f"{copy}-wal")
            yield copy
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# --- backups ---------------------------------------------------------------------------------


class Backups:
    """Consistent copies of legacy files under ``backups/legacy/<run>/``, with a ledger.

    The ledger (``backups/legacy/ledger.json``) maps a source fingerprint to its copy, so a
    rerun never copies the same content again and a second run can name the copy that keeps
    what has no home in plandb. It is rewritten atomically after each copy.
    """

    def __init__(self, root: Path, reader: Reader, report: MigrationReport, stamp: str):
        self.root = root
        self.reader = reader
        self.report = report
        self.base = root / "backups" / "legacy"
        self.run_dir = self.base / stamp_name(stamp)
        self.ledger_path = self.base / "ledger.json"
        self.ledger = read_json(self.ledger_path, {}) or {}
        self.ledger.setdefault("version", LEDGER_VERSION)
        self.ledger.setdefault("copies", {})

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def known(self, fp: str) -> dict | None:
        """The ledger entry of an earlier copy of this exact content, if the copy still exists."""
        entry = self.ledger["copies"].get(fp)
        if entry and (self.root / entry["copy"]).exists():
            return entry
        return None

    def take(self, source: Path, name: str, fp: str | None = None) -> Backup:
        """Copy `source` consistently to ``<run>/<name>`` (or reuse an earlier identical copy)."""
        fp = fp or fingerprint(source)
        entry = self.known(fp)
        if entry is not None:
            b = Backup(str(source), entry["copy"], entry["bytes"], entry["sha256"], reused=True)
            self.report.backups.append(b)
            return b
        dest = self.run_dir / name
        private_dirs(self.root, dest.parent)
        for stale in (dest, *(Path(f"{dest}{s}") for s in SIDE_SUFFIXES)):
            stale.unlink(missing_ok=True)

        def copy(conn: apsw.Connection) -> None:
            backup_file(conn, dest)

        try:
            self.reader.read(source, copy)
            _self_contained(dest)
        except PlanDBError:
            for p in (dest, *(Path(f"{dest}{s}") for s in SIDE_SUFFIXES)):
                p.unlink(missing_ok=True)
            raise
        b = Backup(str(source), self.rel(dest), dest.stat().st_size, file_sha256(dest))
        self.ledger["copies"][fp] = {"source": str(source), "copy": b.copy, "bytes": b.bytes,
                                     "sha256": b.sha256, "taken_at": now()}
        self._save()
        self.report.backups.append(b)
        return b

    def _save(self) -> None:
        # Not fsynced: after a power cut a lost entry only means that content is copied
        # again next run (the copy itself is a durable SQLite file).
        write_json_atomic(self.ledger_path, self.ledger, durable=False)


def _self_contained(path: Path) -> None:
    """Make a backup copy one file: out of WAL mode, every page in the main file, checked."""
    conn = apsw.Connection(str(path))
    try:
        conn.execute("PRAGMA journal_mode=DELETE").fetchall()
        bad = conn.execute("PRAGMA quick_check").fetchall()
        if bad != [("ok",)]:
            raise StorageError(f"{path}: backup copy failed quick_check: {bad[:3]}")
    except apsw.Error as exc:
        raise translate(exc, path) from exc
    finally:
        conn.close()
    os.chmod(path, FILE_MODE)


# --- quarantine ------------------------------------------------------------------------------


def quarantine_dir(root: Path, rel: str, stamp: str) -> Path:
    flat = rel.replace("/", "__")
    return root / "backups" / "quarantine" / f"{stamp_name(stamp)}-{flat}"


def quarantine(root: Path, path: Path, rel: str, reason: str, *, move: bool) -> Path:
    """Put `path` and its side files into ``backups/quarantine/<stamp>-<rel>/`` with a note.

    ``move=True`` (files inside DB_ROOT): hard links first (copies across filesystems), the
    note, then the originals are unlinked, database file first. ``move=False`` (the legacy
    directory, which is never changed): copies only. Returns the quarantine folder.
    """
    stamp = now()
    qdir = quarantine_dir(root, rel, stamp)
    private_dirs(root, qdir)
    files = [path, *side_files(path)]
    placed = []
    for src in files:
        dst = qdir / src.name
        if move:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
        else:
            shutil.copy2(src, dst)
        os.chmod(dst, FILE_MODE)
        placed.append({"original": str(src), "copy": dst.name})
    fsync_path(qdir)
    note = {"source": str(path), "relative": rel, "reason": reason, "quarantined_at": stamp,
            "files": placed, "state": "moving" if move else "copied"}
    write_json_atomic(qdir / "note.json", note)
    if move:
        _unlink_originals(qdir, note)
    return qdir


def _unlink_originals(qdir: Path, note: dict) -> None:
    for item in note["files"]:  # the database first: once it is gone nobody opens it
        original, copy = Path(item["original"]), qdir / item["copy"]
        try:
            same = os.path.samefile(original, copy) or file_sha256(original) == file_sha256(copy)
        except FileNotFoundError:
            continue
        if same:
            original.unlink()
    fsync_path(Path(note["files"][0]["original"]).parent)
    note["state"] = "done"
    write_json_atomic(qdir / "note.json", note)


def finish_quarantines(root: Path) -> list[str]:
    """Complete quarantine moves a kill interrupted; returns the folders finished."""
    base = root / "backups" / "quarantine"
    done = []
    try:
        entries = sorted(base.iterdir())
    except FileNotFoundError:
        return done
    for qdir in entries:
        note = read_json(qdir / "note.json", None)
        if isinstance(note, dict) and note.get("state") == "moving":
            _unlink_originals(qdir, note)
            done.append(qdir.relative_to(root).as_posix())
    return done
