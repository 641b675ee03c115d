"""What a legacy migration did (or, in a dry run, would do): steps, backups, problems, leftovers.

One `MigrationReport` per run. `to_dict()` is the ``--json`` document (its shape is pinned by
the tests); `to_text()` is what a person reads. Nothing here touches a file.

- ``steps``: each action, in the order it runs: ``planned`` in a dry run, then ``done`` /
  ``failed`` / ``skipped``. A failed step never stops the run; the next run retries it.
- ``backups``: every consistent copy taken (or reused from an earlier run), named.
- ``problems``: broken cases, reported and never fatal: a registry row whose file is missing,
  an orphan file, an unreadable file (quarantined), an unsafe session id, a dangling link...
- ``leftovers``: legacy data with no home in plandb (tables, columns, whole files), and the
  backup copy that keeps it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

REPORT_VERSION = 1


@dataclass(slots=True)
class Step:
    """One action of the migration."""

    action: str            # backup, quarantine, rename_session, adopt, upgrade, fill_plan_meta,
                           # reconcile, import_plan, import_chat, convert_cache, merge_cache,
                           # reserve_ids, redact, keep_file
    target: str            # what it acts on: a path relative to DB_ROOT or the legacy dir
    detail: str            # one line for people
    data: dict[str, Any] = field(default_factory=dict)
    status: str = "planned"  # planned | done | failed | skipped
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Problem:
    """A broken or surprising case found in the legacy data. Reported, never fatal."""

    code: str      # missing_plan_file, orphan_plan_file, unreadable_file, unsafe_session_id, ...
    path: str | None
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Leftover:
    """Legacy data plandb has no place for; it stays in `kept_in` (a backup copy)."""

    source: str            # the legacy file
    what: str              # "table", "column" or "file"
    name: str              # table name, "table.column", or the file name
    rows: int | None
    kept_in: str | None    # backup copy holding it (relative to DB_ROOT)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Backup:
    """A consistent copy of a legacy file, taken before anything touched it."""

    source: str            # absolute path of the legacy file
    copy: str              # relative to DB_ROOT
    bytes: int
    sha256: str
    reused: bool = False   # taken by an earlier (possibly interrupted) run of the same content

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class MigrationReport:
    """Everything one run of `migrate_existing_databases` did or would do."""

    db_root: str
    legacy_dir: str | None
    dry_run: bool
    redact: bool
    started_at: str
    finished_at: str | None = None
    run_folder: str | None = None  # backups/legacy/<stamp>/, relative to DB_ROOT
    steps: list[Step] = field(default_factory=list)
    backups: list[Backup] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    # --- building --------------------------------------------------------------------------

    def step(self, action: str, target: str, detail: str, **data: Any) -> Step:
        s = Step(action, target, detail, data)
        self.steps.append(s)
        return s

    def problem(self, code: str, path: str | None, message: str, **data: Any) -> Problem:
        p = Problem(code, path, message, data)
        self.problems.append(p)
        return p

    def leftover(self, source: str, what: str, name: str, rows: int | None,
                 kept_in: str | None) -> None:
        key = (source, what, name)
        if any((x.source, x.what, x.name) == key for x in self.leftovers):
            return
        self.leftovers.append(Leftover(source, what, name, rows, kept_in))

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    # --- reading ---------------------------------------------------------------------------

    @property
    def changed(self) -> bool:
        """True if this run changed anything (never in a dry run)."""
        return any(s.status == "done" for s in self.steps)

    @property
    def ok(self) -> bool:
        """True when no step failed (broken cases found are reported, not failures)."""
        return not any(s.status == "failed" for s in self.steps)

    @property
    def nothing_to_do(self) -> bool:
        return not self.steps

    def summary(self) -> str:
        if self.nothing_to_do:
            return ("nothing to do: every legacy file is already migrated "
                    "(this run changed nothing)")
        done = sum(s.status == "done" for s in self.steps)
        failed = sum(s.status == "failed" for s in self.steps)
        if self.dry_run:
            return f"dry run: {len(self.steps)} steps would run; nothing was changed"
        text = f"{done} steps done"
        if failed:
            text += f", {failed} FAILED (run again to retry them)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "report_version": REPORT_VERSION,
            "ok": self.ok,
            "changed": self.changed,
            "nothing_to_do": self.nothing_to_do,
            "dry_run": self.dry_run,
            "redact": self.redact,
            "summary": self.summary(),
            "db_root": self.db_root,
            "legacy_dir": self.legacy_dir,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "run_folder": self.run_folder,
            "counts": dict(sorted(self.counts.items())),
            "steps": [s.to_dict() for s in self.steps],
            "backups": [b.to_dict() for b in self.backups],
            "problems": [p.to_dict() for p in self.problems],
            "leftovers": [x.to_dict() for x in self.leftovers],
        }

    def to_text(self) -> str:
        lines = [f"DB_ROOT    {self.db_root}",
                 f"legacy dir {self.legacy_dir or '-'}",
                 self.summary()]
        if self.steps:
            lines.append("")
            lines.append("Steps" + (" (planned)" if self.dry_run else ""))
            for s in self.steps:
                mark = {"planned": "-", "done": "+", "failed": "!", "skipped": "="}.get(
                    s.status, "?")
                lines.append(f"  {mark} {s.action:<15} {s.target}: {s.detail}"
                             + (f"  [{s.error}]" if s.error else ""))
        if self.backups:
            lines.append("")
            lines.append("Backups (consistent copies taken before anything was touched)")
            for b in self.backups:
                lines.append(f"  {b.copy}  <- {b.source}" + ("  (from an earlier run)"
                                                           if b.reused else ""))
        if self.problems:
            lines.append("")
            lines.append("Problems (reported; none stopped the migration)")
            for p in self.problems:
                lines.append(f"  {p.code:<22} {p.path or ''}: {p.message}")
        if self.leftovers:
            lines.append("")
            lines.append("No home in plandb (kept in the backup copy named)")
            for x in self.leftovers:
                rows = "" if x.rows is None else f" ({x.rows} rows)"
                lines.append(f"  {x.what:<6} {x.name}{rows} from {x.source}"
                             f" -> {x.kept_in or 'not copied'}")
        if self.counts:
            lines.append("")
            lines.append("Counts: " + ", ".join(f"{k}={v}" for k, v in
                                                sorted(self.counts.items())))
        return "\n".join(lines)
