"""The `plandb` command: look into, check, repair, back up and restore a DB_ROOT.

One click group; every command takes ``--json`` and then prints one JSON document on stdout
(its shape is in the command's ``--help``), human text otherwise. Exit status: 0 fine,
1 problems found or an error, 2 usage error. Errors print ``Error: <what>`` and a hint on
stderr, or under ``--json`` ``{"ok": false, "error": "...", "code": "<PlanDBError.code>"}`` on
stdout. The work itself lives in `plandb.maintenance`; this module parses and prints.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .config import DatabaseConfig, default_root
from .errors import PlanDBError, RootNotFound, translate
from .maintenance.progress import make_progress, wants_progress
from .maintenance.render import human_bytes, inspect_text, problems_text, table, to_json

JSON_KEY = "plandb.json"

HINTS = {
    "root_not_found": "Pass --db-root PATH or set DB_ROOT; `plandb info` shows the resolved root.",
    "plan_not_found": "`plandb plans list` shows the plans under this root.",
    "schema_too_new": "Upgrade plandb; `plandb inspect` lists every file's schema version.",
    "corrupt_database": "`plandb doctor` checks every file; `--repair` quarantines bad ones.",
    "backup_error": "See `plandb backup --help` and `plandb restore --help`.",
    "schema_outdated": "`plandb migrate --dry-run` lists what would be upgraded.",
    "needs_recovery": "`plandb doctor --repair` replays the -wal; stop writers first.",
    "database_busy": "Another process holds the write lock; try again when it is idle.",
}
DEFAULT_HINT = "`plandb doctor` checks this root; `plandb --help` lists the commands."


# --- context, shared options, errors ---------------------------------------------------------


class Root:
    """What the group resolved: the root path, and configs for it that create nothing."""

    def __init__(self, db_root: Path | None):
        self.explicit = db_root
        self.path = DatabaseConfig(db_root, create=False).root

    @property
    def source(self) -> str:
        if self.explicit is not None:
            return "option"
        return "env" if os.environ.get("DB_ROOT") else "default"

    def existing(self) -> Path:
        """The root, which must exist (read commands never create it)."""
        if not self.path.is_dir():
            raise RootNotFound(self.path)
        return self.path

    def config(self, *, create: bool = False) -> DatabaseConfig:
        return DatabaseConfig(self.path, create=create)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.find_root().meta[JSON_KEY] = value
    return value


json_option = click.option(
    "--json", "as_json", is_flag=True, callback=_set_json, expose_value=True,
    help="Print one JSON document on stdout (shape below) instead of text.")


def is_json() -> bool:
    return bool(click.get_current_context().find_root().meta.get(JSON_KEY))


def progress():
    """The progress wrapper for this run: a bar only for a person at a terminal."""
    return make_progress(wants_progress(is_json()))


def emit(value: dict[str, Any], text: str | None = None) -> None:
    """Print the JSON document under --json, else the human text."""
    if is_json():
        click.echo(to_json(value))
    elif text is not None:
        click.echo(text)


def finish(ok: bool) -> None:
    """Exit 1 when problems were found (the report has already been printed)."""
    if not ok:
        click.get_current_context().exit(1)


class PlanDBGroup(click.Group):
    """Turns every PlanDBError into the CLI's one error shape and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PlanDBError as exc:
            self._fail(ctx, exc)
        except OSError as exc:
            self._fail(ctx, translate(exc, getattr(exc, "filename", None)))

    @staticmethod
    def _fail(ctx: click.Context, exc: PlanDBError) -> None:
        if ctx.meta.get(JSON_KEY):
            click.echo(to_json({"ok": False, "error": str(exc), "code": exc.code}))
        else:
            click.echo(f"Error: {exc}", err=True)
            click.echo(f"Hint: {HINTS.get(exc.code, DEFAULT_HINT)}", err=True)
        ctx.exit(getattr(exc, "exit_code", 1) or 1)


def pass_root(fn):
    """Give the command the group's resolved `Root` as its first argument."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(click.get_current_context().find_root().obj, *args, **kwargs)
    return wrapper


@contextmanager
def repository(root: Root, *, read_only: tuple[tuple[Path, str], ...] = ()):
    """A PlanRepository on an existing root (creates no folder).

    `read_only` lists the (path, kind) files a read command will touch: each must already be
    at the current schema, because the repository upgrades older files on open and a read
    command must not (`SchemaOutdated` says to run `plandb migrate`).
    """
    from .maintenance.scan import check_current
    from .repository import PlanRepository

    root.existing()
    for path, kind in read_only:
        check_current(path, kind)
    repo = PlanRepository(root.config(create=False))
    try:
        yield repo
    finally:
        repo.close()


@click.group(cls=PlanDBGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="PATH",
              help="The storage root. Default: $DB_ROOT, else the platform's data folder "
                   f"({default_root()}).")
@click.version_option(package_name="plandb")
@click.pass_context
def main(ctx: click.Context, db_root: Path | None) -> None:
    """Look into, check, repair, back up and restore a plandb DB_ROOT.

    Read commands (info, inspect, plans, logs) never create a root. Every command accepts
    --json. Exit status: 0 fine, 1 problems found or error, 2 usage error.
    """
    ctx.obj = Root(db_root)


# --- read ------------------------------------------------------------------------------------


@main.command()
@json_option
@pass_root
def info(root: Root, as_json: bool) -> None:
    """Show the resolved layout of DB_ROOT and the versions in use.

    \b
    JSON: {"ok": true, "db_root": str, "exists": bool, "source": "option"|"env"|"default",
           "folders": {name: path}, "files": {name: path pattern},
           "max_open_files": int, "busy_timeout_ms": int, "background_checkpoints": bool,
           "schema_versions": {kind: latest version},
           "versions": {"plandb": str, "sqlite": str, "apsw": str}}
    """
    import apsw

    from . import __version__, schema

    out = {"ok": True, **root.config().describe(), "exists": root.path.is_dir(),
           "source": root.source,
           "schema_versions": {k: schema.latest_version(k) for k in schema.KINDS},
           "versions": {"plandb": __version__, "sqlite": apsw.sqlite_lib_version(),
                        "apsw": apsw.apsw_version()}}
    lines = [f"DB_ROOT  {out['db_root']}  ({root.source}"
             f"{'' if out['exists'] else ', does not exist yet'})", ""]
    lines.append(table(["folder", "path"], out["folders"].items(), width=200))
    lines.append("")
    lines.append(table(["file", "path"], out["files"].items(), width=200))
    lines.append("")
    lines.append("schema versions: " + ", ".join(
        f"{k} v{v}" for k, v in out["schema_versions"].items()))
    lines.append("plandb {plandb}, SQLite {sqlite}, apsw {apsw}".format(**out["versions"]))
    emit(out, "\n".join(lines))


@main.command()
@click.option("--check", type=click.Choice(["quick", "integrity", "none"]), default="quick",
              show_default=True, help="Per-file check: PRAGMA quick_check, integrity_check, "
                                      "or none.")
@click.option("--all", "show_all", is_flag=True, help="List every file (text output).")
@json_option
@pass_root
def inspect(root: Root, check: str, show_all: bool, as_json: bool) -> None:
    """Every database file under DB_ROOT, and what is wrong with them.

    Per file: kind, schema version and status (current/older/too_new/unknown), size including
    -wal, rows per table, last modified, check result. Per folder: totals. Problems: registry
    rows whose file is missing, plan files no row points at, rows left 'creating'/'deleting',
    files that fail to open or fail the check, schemas too new. Read-only: creates and
    changes no file, opens one file at a time. Exit 1 if problems were found.

    \b
    JSON: {"ok": bool, "db_root": str,
           "files": [{"path": str, "folder": str, "kind": str|null, "expected_kind": str|null,
                      "plan_id": int|null, "schema_version": int|null,
                      "latest_version": int|null, "schema_status": str, "legacy": bool,
                      "size_bytes": int, "wal_bytes": int, "modified_at": str|null,
                      "tables": {name: int|null}, "rows": int,
                      "check": "ok"|"failed"|"skipped"|"not_run", "error": str|null}],
           "folders": {name: {"files": int, "bytes": int, "rows": int|null}},
           "totals": {"files": int, "bytes": int, "rows": int, "problems": int},
           "problems": [{"kind": str, "path": str|null, "plan_id": int|null,
                         "detail": str, "repaired": false, "action": null}]}
    """
    from .maintenance.inspect import inspect_root

    report = inspect_root(root.existing(), check=None if check == "none" else check,
                          progress=progress())
    data = report.to_dict()
    emit(data, inspect_text(data, show_all=show_all))
    finish(report.ok)


@main.group()
def plans() -> None:
    """List plans and show one plan's task tree."""


@plans.command("list")
@click.option("--owner", default=None, help="Only plans of this owner.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most N plans.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip the first N.")
@json_option
@pass_root
def plans_list(root: Root, owner: str | None, limit: int | None, offset: int,
               as_json: bool) -> None:
    """Plans newest first, from the registry (no plan file is opened).

    \b
    JSON: {"ok": true, "plans": [{"id": int, "title": str, "description": str|null,
           "metadata": {}, "task_count": int, "updated_at": str, "created_at": str,
           "owner": str|null, "state": "ready"}]}
    """
    root.existing()
    if not root.config().main_db_path.exists():
        found = []
    else:
        registry = root.config().main_db_path
        with repository(root, read_only=((registry, "registry"),)) as repo:
            found = repo.list_plans(owner=owner, limit=limit, offset=offset)
    data = {"ok": True, "plans": [p.to_dict() for p in found]}
    emit(data, table(["id", "title", "owner", "tasks", "updated"], [
        (p.id, p.title, p.owner, p.task_count, p.updated_at) for p in found])
        if found else "No plans.")


@plans.command("show")
@click.argument("plan_id", type=click.IntRange(min=1), metavar="ID")
@click.option("--max-depth", type=click.IntRange(min=1), default=None,
              help="Outline depth (default: all).")
@click.option("--max-nodes", type=click.IntRange(min=1), default=None,
              help="Outline size (default: all).")
@json_option
@pass_root
def plans_show(root: Root, plan_id: int, max_depth: int | None, max_nodes: int | None,
               as_json: bool) -> None:
    """One plan's task tree as an outline with each task's status.

    \b
    JSON (PlanTree.to_dict()): {"id": int, "title": str, "description": str|null,
           "metadata": {}, "nodes": [{"id": int, "plan_id": int, "name": str, "status": str,
           "instruction": str|null, "parent_id": int|null, "position": int, "path": str,
           "depth": int, "metadata": {}, "dependencies": [int], "execution_result": str|null,
           "context_combined": str|null, "context_sections": [], "context_meta": {},
           "context_updated_at": str|null, "created_at": str, "updated_at": str}]}
           (nodes in outline order: depth first, siblings by position)
    """
    with repository(root, read_only=((root.config().plan_db_path(plan_id), "plan"),)) as repo:
        tree = repo.get_plan_tree(plan_id)
    text = tree.to_outline(max_depth=max_depth or 10**9, max_nodes=max_nodes or 10**9)
    emit(tree.to_dict(), text + f"\n({len(tree)} tasks)")


@main.command()
@click.option("--plan", "plan_id", type=click.IntRange(min=1), default=None, metavar="ID",
              help="The plan whose logs to show.")
@click.option("--system", is_flag=True, help="The system jobs file (logs bound to no plan).")
@click.option("--job", "job_id", default=None, metavar="JOB",
              help="Only this job: its own log (if it is a decomposition job) and its actions.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="Show the newest N entries (oldest first).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new entries until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Seconds between polls with --follow.")
@click.option("--follow-seconds", type=click.FloatRange(min=0), default=None, hidden=True)
@json_option
@pass_root
def logs(root: Root, plan_id: int | None, system: bool, job_id: str | None, limit: int,
         follow: bool, interval: float, follow_seconds: float | None, as_json: bool) -> None:
    """Action logs and job logs of a plan (--plan ID) or of the system jobs file (--system),
    as stored: secrets were redacted before they were written.

    \b
    JSON: {"ok": true, "plan_id": int|null, "job_id": str|null,
           "job": {"job_id": str, "plan_id": int|null, "job_type": str, "status": str, ...}|null,
           "job_logs": [{"id": int, "job_id": str, "timestamp": str, "level": str,
                         "message": str, "metadata": {}}],
           "action_logs": [{"id": int, "plan_id": int|null, "job_id": str, "job_type": str|null,
                            "sequence": int, "session_id": str|null, "user_message": str|null,
                            "action_kind": str|null, "action_name": str|null,
                            "status": str|null, "success": bool|null, "message": str|null,
                            "parameters": any, "details": any, "created_at": str}]}
    With --follow --json: one JSON object per line, {"type": "job_log"|"action_log",
    "entry": {...}}, first the newest N, then each new entry as it arrives.
    """
    from .maintenance.logview import LogView, action_line, job_header, job_log_line

    if (plan_id is None) == (not system):
        raise click.UsageError("pass exactly one of --plan ID or --system")
    root.existing()
    view = LogView(plan_id, job_id, limit)
    # Nothing was ever logged to a system jobs file that does not exist: do not create it.
    absent = system and not root.config().system_jobs_db_path.exists()
    if follow:
        _follow(root, view, absent, interval, follow_seconds)
        return
    job_logs, actions = [], []
    if not absent:
        with _log_repository(root, plan_id) as repo:
            job_logs, actions = view.first(repo)
    if is_json():
        click.echo(to_json({"ok": True, "plan_id": plan_id, "job_id": job_id, "job": view.job,
                            "job_logs": [x.to_dict() for x in job_logs],
                            "action_logs": [x.to_dict() for x in actions]}))
        return
    if view.job is not None:
        click.echo(job_header(view.job))
        for x in job_logs:
            click.echo("  " + job_log_line(x))
    for x in actions:
        click.echo(action_line(x))
    if not actions and not job_logs:
        click.echo("No log entries.")


def _log_repository(root: Root, plan_id: int | None):
    cfg = root.config()
    logs_file = (cfg.plan_db_path(plan_id), "plan") if plan_id else (
        cfg.system_jobs_db_path, "jobs")
    return repository(root, read_only=(logs_file, (cfg.main_db_path, "registry")))


def _follow(root: Root, view, absent: bool, interval: float,
            follow_seconds: float | None) -> None:
    from .maintenance.logview import action_line, follow, job_log_line

    def show(job_logs, actions) -> None:
        for kind, items, line in (("job_log", job_logs, job_log_line),
                                  ("action_log", actions, action_line)):
            for x in items:
                click.echo(to_json({"type": kind, "entry": x.to_dict()}, indent=False)
                           if is_json() else line(x))

    system_file = root.config().system_jobs_db_path
    follow(view, lambda: _log_repository(root, view.plan_id), show,
           ready=lambda: not absent or system_file.exists(),
           interval=interval, seconds=follow_seconds)


# --- repair and keep -------------------------------------------------------------------------


@main.command()
@click.option("--repair", is_flag=True,
              help="Fix what can be fixed: re-register orphans, finish or roll back "
                   "half-made plans, quarantine unreadable files (never deletes data).")
@json_option
@pass_root
def doctor(root: Root, repair: bool, as_json: bool) -> None:
    """Integrity check of every file and registry <-> file reconciliation.

    Without --repair nothing is written. With --repair: a -wal left without its -shm is
    replayed; files that fail to open or fail integrity_check are moved with their -wal/-shm
    into backups/quarantine/<stamp>/ beside a .note.json (original path, reason, time); then
    reconcile re-registers orphan plan files and finishes or rolls back plans cut short, and
    the registry's job index is rebuilt from the job files. Stop writers first. Exit 0 when nothing is (left) wrong, else 1.

    \b
    JSON: {"ok": bool, "db_root": str, "repair": bool, "files_checked": int,
           "problems": [{"kind": str, "path": str|null, "plan_id": int|null, "detail": str,
                         "repaired": bool, "action": str|null}],
           "counts": {"problems": int, "repaired": int, "remaining": int},
           "reconcile": {"ok": bool, "repair": bool, "plans_checked": int,
                         "problems": [...]}|null,
           "job_index": {"files_scanned": int, "jobs_seen": int, "missing": [str],
                         "wrong": [str], "stale": [str], "duplicates": {job: [plan]},
                         "unreadable": [str], "repaired": bool}|null,
           "quarantine": str|null, "notes": [str]}
    """
    from .maintenance.doctor import doctor_root

    root.existing()
    report = doctor_root(root.config(create=False), repair=repair, progress=progress())
    data = report.to_dict()
    c = data["counts"]
    summary = (f"{data['files_checked']} files checked; {c['problems']} problems"
               + (f", {c['repaired']} repaired, {c['remaining']} remaining" if repair else ""))
    text = "\n".join([problems_text(data["problems"], show_repair=repair), summary,
                      *data["notes"]])
    emit(data, text)
    finish(report.ok)


@main.command()
@click.option("--dry-run", is_flag=True, help="Only list the pending steps; change nothing.")
@json_option
@pass_root
def migrate(root: Root, dry_run: bool, as_json: bool) -> None:
    """Upgrade every file to the current schema (each backed up into backups/ first).

    Files newer than this plandb, corrupt, or of the wrong kind are reported and left alone
    (exit 1).

    \b
    JSON: {"ok": bool, "db_root": str, "dry_run": bool,
           "files": [{"path": str, "kind": str|null, "from_version": int|null,
                      "to_version": int|null, "action": "current"|"pending"|"upgrade"|
                      "adopt"|"create"|"skipped", "steps": ["0002_name"],
                      "backup": str|null, "error": str|null}],
           "totals": {"files": int, "changed": int, "pending": int},
           "problems": [{"kind": str, "path": str, ...}]}
    """
    from .maintenance.upgrade import upgrade_root

    data = upgrade_root(root.existing(), dry_run=dry_run, progress=progress())
    rows = [(f["path"], f["kind"], f["from_version"], f["to_version"], f["action"],
             ", ".join(f["steps"]) or "-", f["error"] or f["backup"]) for f in data["files"]
            if f["action"] != "current" or f["error"]]
    t = data["totals"]
    text = (table(["file", "kind", "from", "to", "action", "steps", "note"], rows, width=80)
            if rows else "Every file is at the current schema.")
    text += (f"\n{t['files']} files; {t['pending']} with pending steps" if dry_run
             else f"\n{t['files']} files; {t['changed']} upgraded")
    emit(data, text)
    finish(data["ok"])


@main.command()
@click.argument("dest", required=False, type=click.Path(file_okay=False, path_type=Path))
@json_option
@pass_root
def backup(root: Root, dest: Path | None, as_json: bool) -> None:
    """Copy the whole DB_ROOT consistently while writers keep writing.

    Each file is copied with SQLite's online backup API (never a bare copy of a WAL file)
    into DEST (default: DB_ROOT/backups/full-<timestamp>/), with manifest.json: every file's
    path, size, sha256, kind and schema version. backups/ and temp/ are not copied.

    \b
    JSON: {"ok": bool, "dest": str,
           "manifest": {"format": "plandb-backup/1", "db_root": str, "started_at": str,
                        "finished_at": str, "sqlite_version": str,
                        "files": [{"path": str, "kind": str|null,
                                   "schema_version": int|null, "bytes": int, "sha256": str}],
                        "errors": [{"path": str, "error": str, "code": str}],
                        "totals": {"files": int, "bytes": int}},
           "problems": [...]}
    """
    from .maintenance.backup import backup_root

    result = backup_root(root.existing(), dest, progress=progress())
    m = result.manifest
    text = (f"Backed up {m['totals']['files']} files ({human_bytes(m['totals']['bytes'])}) "
            f"to {result.dest}")
    if result.problems:
        text += "\n" + problems_text([p.to_dict() for p in result.problems])
    emit(result.to_dict(), text)
    finish(result.ok)


@main.command()
@click.argument("backup_dir", metavar="BACKUP",
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="Restore into a root that holds files: move them into "
                   "backups/pre-restore-<timestamp>/ first (nothing is deleted).")
@json_option
@pass_root
def restore(root: Root, backup_dir: Path, force: bool, as_json: bool) -> None:
    """Restore a backup folder into DB_ROOT (an empty or new root).

    Every checksum of the manifest is verified before anything is written. A root whose data
    folders hold files is refused unless --force; stop every writer before using it.

    \b
    JSON: {"ok": bool, "db_root": str, "backup": str,
           "files": [{"path": str, "bytes": int, "kind": str|null,
                      "schema_version": int|null, "check": "ok"|"failed"}],
           "moved_aside": str|null, "problems": [...]}
    """
    from .maintenance.backup import restore_root

    result = restore_root(backup_dir, root.path, force=force, progress=progress())
    text = f"Restored {len(result.files)} files from {result.backup} into {result.db_root}"
    if result.moved_aside:
        text += f"\nThe previous files were moved to {result.moved_aside}"
    if result.problems:
        text += "\n" + problems_text([p.to_dict() for p in result.problems])
    emit(result.to_dict(), text)
    finish(result.ok)


@main.command()
@json_option
@pass_root
def vacuum(root: Root, as_json: bool) -> None:
    """VACUUM every database file, then truncate its -wal.

    VACUUM cannot run inside a transaction: this is an explicit, non-transactional operation
    that rewrites each file (one at a time) and waits for writers of that file.

    \b
    JSON: {"ok": bool, "db_root": str,
           "files": [{"path": str, "bytes_before": int, "bytes_after": int,
                      "error": str|null}],
           "totals": {"files": int, "bytes_before": int, "bytes_after": int},
           "problems": [...]}
    """
    from .maintenance.backup import vacuum_root

    data = vacuum_root(root.existing(), progress=progress())
    t = data["totals"]
    text = (f"Vacuumed {t['files']} files: {human_bytes(t['bytes_before'])} -> "
            f"{human_bytes(t['bytes_after'])}")
    if data["problems"]:
        text += "\n" + problems_text(data["problems"])
    emit(data, text)
    finish(data["ok"])


try:  # the legacy import command lives in its own module (it may not be there yet)
    from .cli_legacy import migrate_legacy
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is checked out
    if exc.name != f"{__package__}.cli_legacy":
        raise
else:
    main.add_command(migrate_legacy)


if __name__ == "__main__":  # pragma: no cover
    main()
