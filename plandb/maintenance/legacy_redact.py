"""``--redact``: re-scrub payloads that came from the older planner with the redaction layer.

Flat imports always go through the repository API, so they are redacted on the way in. Rows
adopted in place (plan files, system jobs, the registry's chat) are copied as they were; with
``--redact`` their log and message payloads are passed through the `Redactor` again:

=========================  =================================================================
table                      columns
=========================  =================================================================
decomposition_job_logs     message, metadata
plan_action_logs           user_message, message, parameters, details
decomposition_jobs         params, metadata, stats, result, error
chat_messages              content, metadata
chat_action_runs           user_message, context, history, structured, result, errors
=========================  =================================================================

Only values the redactor changes are rewritten (JSON compared parsed, so formatting alone is
no change), which makes the step idempotent: redaction is (``redact(redact(x)) ==
redact(x)``), so a second run finds nothing and plans nothing. The survey counts with the
legacy column names too (``parameters_json``...), so a dry run's numbers are the real ones.
The originals stay in the backup copies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import apsw

from .. import jsonutil
from ..redaction import DEFAULT_REDACTOR, Redactor
from ..transaction import write

if TYPE_CHECKING:
    from .legacy import Run
    from .legacy_root import RootFile, RootPlan

# table -> [(column, "text" | "json")]; legacy spellings beside the current ones.
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "decomposition_job_logs": [("message", "text"), ("metadata", "json"),
                               ("metadata_json", "json")],
    "plan_action_logs": [("user_message", "text"), ("message", "text"),
                         ("parameters", "json"), ("parameters_json", "json"),
                         ("details", "json"), ("details_json", "json")],
    "decomposition_jobs": [("params", "json"), ("params_json", "json"), ("metadata", "json"),
                           ("metadata_json", "json"), ("stats", "json"), ("stats_json", "json"),
                           ("result", "json"), ("result_json", "json"), ("error", "text")],
    "chat_messages": [("content", "text"), ("metadata", "json"), ("metadata_json", "json")],
    "chat_action_runs": [("user_message", "text"), ("context", "json"),
                         ("context_json", "json"), ("history", "json"),
                         ("history_json", "json"), ("structured", "json"),
                         ("structured_json", "json"), ("result", "json"),
                         ("result_json", "json"), ("errors", "json"), ("errors_json", "json")],
}
KINDS = ("plan", "jobs", "registry")


def _scrubbed(redactor: Redactor, how: str, raw: Any) -> tuple[bool, Any]:
    """(changed, new stored value) for one stored value."""
    if raw is None or isinstance(raw, int | float | bytes):
        return False, raw
    if how == "text":
        out = redactor.redact(raw)
        out = out if isinstance(out, str) else str(out)
        return out != raw, out
    value = jsonutil.loads(raw)
    if isinstance(value, str) and value == raw:  # free text where JSON was expected
        out = redactor.redact_text(raw)
        return out != raw, out
    cleaned = redactor.redact(value)
    if cleaned == value:
        return False, raw
    return True, jsonutil.dumps(cleaned)


def scan(conn: apsw.Connection, redactor: Redactor) -> list[tuple[str, str, int, Any]]:
    """(table, column, rowid, new value) for every value the redactor would change."""
    tables = {r[0]: {c[1] for c in conn.execute("SELECT * FROM pragma_table_info(?)", (r[0],))}
              for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    out = []
    for table, columns in COLUMNS.items():
        have = tables.get(table)
        if not have:
            continue
        for column, how in columns:
            if column not in have:
                continue
            # Table and column names come from the fixed COLUMNS above.
            for rowid, raw in conn.execute(
                    f"SELECT rowid, {column} FROM {table} WHERE {column} IS NOT NULL"):
                changed, new = _scrubbed(redactor, how, raw)
                if changed:
                    out.append((table, column, rowid, new))
    return out


def _redactor(run: Run) -> Redactor:
    return run.redactor or DEFAULT_REDACTOR


def plan_redact(run: Run, root_plan: RootPlan) -> None:
    """Plan one `redact` step per file holding legacy payloads the redactor would change."""
    redactor = _redactor(run)
    for f in root_plan.files:
        if f.kind not in KINDS or f.status not in ("current", "adopt", "upgrade"):
            continue
        found = run.reader.read(f.path, lambda c: scan(c, redactor))
        if not found:
            continue
        by_table: dict[str, int] = {}
        for table, _c, _r, _v in found:
            by_table[table] = by_table.get(table, 0) + 1
        run.add("redact", f.rel, f"re-scrub {len(found)} legacy payload value(s)",
                _redact_fn(run, f), values=by_table)


def _redact_fn(run: Run, f: RootFile):
    def go() -> dict:
        redactor = _redactor(run)
        repo = run.repo
        with repo._open(f.path, f.kind, create=False) as conn:
            with write(conn, f.path, retries=run.config.write_retries) as tx:
                found = scan(conn, redactor)
                for table, column, rowid, new in found:
                    tx.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (new, rowid))
            if found:
                # The old values still sit in free pages (and the rebuilt legacy tables' old
                # pages): rewrite the file without them, then empty the -wal.
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        run.report.count("values_redacted", len(found))
        return {"rewritten": len(found)}
    return go
