"""`plandb migrate-legacy`: bring existing (legacy) databases into a DB_ROOT, losing nothing.

The command object `migrate_legacy` is registered on the `plandb` group by `plandb.cli`, and
is also what ``scripts/migrate_existing_databases.py`` runs on its own; both call
`plandb.maintenance.legacy.migrate_existing_databases`. It is self-contained (its own
``--db-root`` and ``--json``, its own error shape, the same as the group's) so that it works
outside the group too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .errors import PlanDBError, translate
from .maintenance.progress import wants_progress
from .maintenance.render import to_json

# The key plandb.cli's group reads to print its own errors as JSON (kept in step with it).
JSON_KEY = "plandb.json"


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.find_root().meta[JSON_KEY] = value
    return value


class _Bar:
    """A click progress bar on stderr, created once the number of steps is known."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int, step) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="migrating", file=sys.stderr,
                                         show_pos=True)
            self.bar.__enter__()
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@click.command("migrate-legacy")
@click.option("--db-root", "db_root", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="ROOT",
              help="The DB_ROOT to upgrade in place (created if absent). Default: the group's "
                   "--db-root, else $DB_ROOT, else the platform's data folder.")
@click.option("--legacy-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR",
              help="Flat legacy directory to import (tasks.db, *_cache.db, ...). It is only "
                   "read, never changed. Default: the current directory.")
@click.option("--dry-run", is_flag=True,
              help="Print the plan of actions; change nothing (no file, not even DB_ROOT, is "
                   "created).")
@click.option("--redact", is_flag=True,
              help="Also re-scrub legacy job/action log and chat payloads already in the root "
                   "with the redaction layer (flat imports are always redacted).")
@click.option("--json", "as_json", is_flag=True, callback=_remember_json,
              help="Print the report as one JSON document on stdout.")
@click.pass_context
def migrate_legacy(ctx: click.Context, db_root: Path | None, legacy_dir: Path | None,
                   dry_run: bool, redact: bool, as_json: bool) -> None:
    """Migrate existing databases (an older DB_ROOT, a flat legacy directory) into DB_ROOT.

    Every legacy file is copied consistently into backups/legacy/<run>/ before anything
    touches it, and the report names each copy; an unreadable file goes to
    backups/quarantine/. Broken cases (a registry row whose file is missing, an orphan plan
    file, an unsafe session id, ...) are reported and never stop the run. A second run changes
    nothing and says so; a run that was killed is finished by the next one. A progress bar is
    shown on a terminal.

    Exit status: 0 done (or nothing to do), 1 a step failed (run again) or an error, 2 usage.

    \b
    JSON: {"report_version": 1, "ok": bool, "changed": bool, "nothing_to_do": bool,
           "dry_run": bool, "redact": bool, "summary": str, "db_root": str,
           "legacy_dir": str|null, "started_at": str, "finished_at": str|null,
           "run_folder": str|null, "counts": {str: int},
           "steps": [{"action": str, "target": str, "detail": str, "data": {...},
                      "status": "planned"|"done"|"failed"|"skipped", "error": str|null}],
           "backups": [{"source": str, "copy": str, "bytes": int, "sha256": str,
                        "reused": bool}],
           "problems": [{"code": str, "path": str|null, "message": str, "data": {...}}],
           "leftovers": [{"source": str, "what": "table"|"column"|"file"|"rows",
                          "name": str, "rows": int|null, "kept_in": str|null}]}
    """
    from .config import DatabaseConfig
    from .maintenance.legacy import migrate_existing_databases

    if db_root is None:
        parent = ctx.find_root().obj
        db_root = getattr(parent, "explicit", None)
    bar = _Bar() if wants_progress(as_json) and not dry_run else None
    try:
        config = DatabaseConfig(db_root, create=not dry_run)
        report = migrate_existing_databases(config, legacy_dir=legacy_dir, dry_run=dry_run,
                                            redact=redact, progress=bar)
    except PlanDBError as exc:
        _fail(ctx, exc, as_json)
        return
    except OSError as exc:
        _fail(ctx, translate(exc, getattr(exc, "filename", None)), as_json)
        return
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        click.echo(to_json(report.to_dict()))
    else:
        click.echo(report.to_text())
    if not report.ok:
        ctx.exit(1)


def _fail(ctx: click.Context, exc: PlanDBError, as_json: bool) -> None:
    if as_json:
        click.echo(to_json({"ok": False, "error": str(exc), "code": exc.code}))
    else:
        click.echo(f"Error: {exc}", err=True)
        click.echo("Hint: run with --dry-run to see the plan; `plandb doctor` checks a root.",
                   err=True)
    ctx.exit(getattr(exc, "exit_code", 1) or 1)


def main(argv: list[str] | None = None) -> None:
    """Entry point for scripts/migrate_existing_databases.py."""
    migrate_legacy.main(args=argv, prog_name="migrate_existing_databases.py")
