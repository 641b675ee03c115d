"""Human-readable output for the `plandb` command: aligned tables, sizes, problem lists.

JSON output does not come through here: `--json` prints the reports' own ``to_dict()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

_JSON_OPTS = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS


def to_json(value: Any, *, indent: bool = True) -> str:
    """One JSON document (indented unless `indent` is false, as for one-per-line streams)."""
    return orjson.dumps(value, option=_JSON_OPTS if indent else orjson.OPT_NON_STR_KEYS).decode()


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def cell(value: Any, width: int = 60) -> str:
    """One table cell: None as '-', one line, cut to `width` characters."""
    if value is None:
        return "-"
    text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], width: int = 60) -> str:
    """Left-aligned columns separated by two spaces, with a header line."""
    body = [[cell(v, width) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def problems_text(problems: Sequence[dict[str, Any]], *, show_repair: bool = False) -> str:
    """'No problems found.' or a table of problems (with what repair did)."""
    if not problems:
        return "No problems found."
    headers = ["problem", "path", "plan", "detail"]
    rows = []
    for p in problems:
        row = [p["kind"], p.get("path"), p.get("plan_id"), p.get("detail")]
        if show_repair:
            row.append(p.get("action") or ("repaired" if p.get("repaired") else "not repaired"))
        rows.append(row)
    if show_repair:
        headers.append("action")
    return f"Problems ({len(problems)}):\n" + table(headers, rows, width=90)


def inspect_text(report: dict[str, Any], *, show_all: bool = False,
                 max_per_folder: int = 40) -> str:
    """The human form of `InspectReport.to_dict()`."""
    out = [f"DB_ROOT {report['db_root']}", ""]
    out.append(table(["folder", "files", "size", "rows"], [
        (name, agg["files"], human_bytes(agg["bytes"]), agg["rows"])
        for name, agg in report["folders"].items()]))
    t = report["totals"]
    out.append(f"total: {t['files']} database files, {human_bytes(t['bytes'])}, {t['rows']} rows")
    out.append("")
    rows, hidden = [], {}
    per_folder: dict[str, int] = {}
    for f in report["files"]:
        per_folder[f["folder"]] = per_folder.get(f["folder"], 0) + 1
        if not show_all and per_folder[f["folder"]] > max_per_folder:
            hidden[f["folder"]] = hidden.get(f["folder"], 0) + 1
            continue
        version = "-" if f["schema_version"] is None else f"v{f['schema_version']}"
        rows.append((f["path"], f["kind"], f"{version} {f['schema_status']}",
                     human_bytes(f["size_bytes"]), f["rows"], f["modified_at"], f["check"]))
    if rows:
        out.append(table(["file", "kind", "schema", "size", "rows", "modified", "check"], rows))
    for folder, n in hidden.items():
        out.append(f"... {n} more files in {folder}/ (use --all to list them, or --json)")
    out.append("")
    out.append(problems_text(report["problems"]))
    return "\n".join(out)
