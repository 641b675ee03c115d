"""Importing a flat legacy directory (from before DB_ROOT existed) into a DB_ROOT.

Files are recognised by shape, not by name:

==================  ========================================================================
shape               what happens
==================  ========================================================================
tasks store         (tables plans + tasks + plan_tasks, the old ``tasks.db``) backed up, then
                    each old plan becomes a plandb plan through `PlanRepository`: a new id
                    (old ids collide with the registry's), the old id, source file and an
                    import reference in ``metadata["legacy"]``; its tasks a tree with their
                    old task ids (prompt -> instruction, output -> execution_result, context
                    -> context fields, priority/type/category/order/old path in each task's
                    ``metadata["legacy"]``), 'requires' links -> dependencies (to_id depends
                    on from_id). Old chat -> registry chat sessions with their messages.
                    Tables with no home (task_embeddings, evaluation_*...) stay in the backup.
old cache           (tables embedding_cache / llm_cache) merged into cache/<name>_cache.db:
                    only keys the root does not have (see `legacy_cache`).
anything else       (statistics.db, scratch files) backed up; named in the report as having
                    no home in plandb.
unreadable          copied into backups/quarantine/ (the original stays where it is).
==================  ========================================================================

Imports read from the backup copy, never from the original, so what is imported is exactly
what was backed up, WAL-only rows included.

Idempotent and restartable: a plan is created with ``import_state: "importing"``, then its
whole tree (and the state ``"imported"``) is written in one transaction by
`upsert_plan_tree`; a rerun finds the plan by its import reference and finishes it. A chat
session and all its messages are written in one registry transaction under a deterministic
session id.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw

from .. import jsonutil
from ..errors import PlanDBError
from ..models import PlanNode, PlanTree
from ..timestamps import normalize, now
from ..transaction import write
from .legacy_files import fingerprint, quarantine
from .legacy_root import Facts, read_facts, unreadable_reason
from .scan import DB_SUFFIXES, MAGIC, SIDE_SUFFIXES

if TYPE_CHECKING:
    from .legacy import Run
    from .legacy_root import RootPlan

TASKS_STORE_TABLES = {"plans", "tasks", "plan_tasks"}
NO_HOME_TABLES = ("task_embeddings", "evaluation_history", "evaluation_configs")
KNOWN_TABLES = TASKS_STORE_TABLES | {"task_links", "task_inputs", "task_outputs",
                                     "task_contexts", "chat_messages", "conversations",
                                     "messages"}
ROLE_MAP = {"user": "user", "human": "user", "assistant": "assistant", "ai": "assistant",
            "bot": "assistant", "agent": "assistant", "planner": "assistant",
            "system": "system", "tool": "tool", "function": "tool"}
MAX_NAME = 10_000


def _digest(*parts: Any) -> str:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()[:12]


def _stamp(value: Any) -> str | None:
    try:
        return normalize(value)
    except PlanDBError:
        return None


# --- reading the old store -------------------------------------------------------------------


def _rows(conn: apsw.Connection, table: str, wanted: tuple[str, ...],
          tables: dict) -> list[dict[str, Any]]:
    """Rows of `table` as dicts with every wanted column (None where the file lacks it)."""
    if table not in tables:
        return []
    have = [c for c in wanted if c in tables[table].columns]
    if not have:
        return []
    out = []
    # Names from the file's own schema, checked against fixed lists above; never user input.
    for row in conn.execute(f"SELECT {', '.join(have)} FROM {table} ORDER BY 1"):
        d = dict.fromkeys(wanted)
        d.update(zip(have, row, strict=True))
        out.append(d)
    return out


@dataclass(slots=True)
class OldStore:
    """Everything of one old tasks.db, loaded from its backup copy."""

    plans: dict[int, dict] = field(default_factory=dict)
    tasks: dict[int, dict] = field(default_factory=dict)
    members: dict[int, list[dict]] = field(default_factory=dict)   # plan id -> plan_tasks rows
    links: list[dict] = field(default_factory=list)
    inputs: dict[int, Any] = field(default_factory=dict)
    outputs: dict[int, Any] = field(default_factory=dict)
    contexts: dict[int, list[dict]] = field(default_factory=dict)
    chat: dict[Any, list[dict]] = field(default_factory=dict)      # old plan id -> messages
    conversations: dict[int, dict] = field(default_factory=dict)
    messages: dict[Any, list[dict]] = field(default_factory=dict)  # conversation id -> msgs


def load_store(conn: apsw.Connection) -> OldStore:
    facts = read_facts(conn)
    t = facts.tables
    s = OldStore()
    for r in _rows(conn, "plans", ("id", "title", "description", "status", "config_json",
                                   "created_at", "updated_at"), t):
        s.plans[r["id"]] = r
    for r in _rows(conn, "tasks", ("id", "name", "status", "priority", "parent_id", "path",
                                   "depth", "task_type"), t):
        s.tasks[r["id"]] = r
    for r in _rows(conn, "plan_tasks", ("plan_id", "task_id", "task_category", "task_order"),
                   t):
        s.members.setdefault(r["plan_id"], []).append(r)
    s.links = _rows(conn, "task_links", ("from_id", "to_id", "kind"), t)
    s.inputs = {r["task_id"]: r["prompt"] for r in _rows(conn, "task_inputs",
                                                         ("task_id", "prompt"), t)}
    s.outputs = {r["task_id"]: r["content"] for r in _rows(conn, "task_outputs",
                                                           ("task_id", "content"), t)}
    for r in _rows(conn, "task_contexts", ("task_id", "label", "combined", "sections", "meta",
                                           "created_at"), t):
        s.contexts.setdefault(r["task_id"], []).append(r)
    for r in _rows(conn, "chat_messages", ("id", "plan_id", "sender", "message", "timestamp"),
                   t):
        s.chat.setdefault(r["plan_id"], []).append(r)
    for r in _rows(conn, "conversations", ("id", "plan_id", "title", "created_at",
                                           "updated_at"), t):
        s.conversations[r["id"]] = r
    for r in _rows(conn, "messages", ("id", "conversation_id", "sender", "text", "metadata",
                                      "timestamp"), t):
        s.messages.setdefault(r["conversation_id"], []).append(r)
    return s


def plan_ref(source: str, plan: dict) -> str:
    """The import reference of one old plan: stable across runs and directory moves."""
    return f"{source}#plan:{plan['id']}:{_digest(plan.get('title'), plan.get('created_at'))}"


def chat_refs(source: str, store: OldStore) -> list[tuple[str, str, Any]]:
    """(reference, kind, key) of every chat group of an old store."""
    out = []
    for pid in sorted(store.chat, key=lambda x: (x is None, x or 0)):
        out.append((f"{source}#chat_messages:plan:{pid}", "plan_chat", pid))
    for cid, conv in sorted(store.conversations.items()):
        out.append((f"{source}#conversation:{cid}:{_digest(conv.get('title'), conv.get('created_at'))}",
                    "conversation", cid))
    for cid in sorted((c for c in store.messages if c not in store.conversations),
                      key=lambda x: (x is None, x or 0)):
        out.append((f"{source}#messages:conversation:{cid}", "lost_conversation", cid))
    return out


def session_id_for(ref: str) -> str:
    """A deterministic chat session id for an imported chat group."""
    return "legacy-" + hashlib.sha256(ref.encode()).hexdigest()[:24]


# --- the survey ------------------------------------------------------------------------------


@dataclass(slots=True)
class FlatFile:
    path: Path
    shape: str                  # tasks_store, cache, plandb, other, corrupt
    facts: Facts | None = None
    error: str | None = None
    store: OldStore | None = None

    @property
    def name(self) -> str:
        return self.path.name


def _candidates(folder: Path) -> list[Path]:
    out = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return out
    for e in entries:
        if not e.is_file(follow_symlinks=False) or e.name.startswith("."):
            continue
        if e.name.endswith(SIDE_SUFFIXES):
            continue
        if e.name.endswith(DB_SUFFIXES):
            out.append(Path(e.path))
            continue
        try:
            with open(e.path, "rb") as f:
                if f.read(16) == MAGIC:
                    out.append(Path(e.path))
        except OSError:
            continue
    return out


def survey_flat(run: Run) -> list[FlatFile]:
    out = []
    for path in _candidates(run.legacy_dir):
        try:
            facts = run.reader.read(path, read_facts)
        except (PlanDBError, apsw.Error) as exc:
            out.append(FlatFile(path, "corrupt", error=unreadable_reason(exc)))
            continue
        tables = set(facts.tables)
        if facts.kind is not None:
            shape = "plandb"
        elif TASKS_STORE_TABLES <= tables:
            shape = "tasks_store"
        elif tables & {"embedding_cache", "llm_cache"}:
            shape = "cache"
        else:
            shape = "other"
        f = FlatFile(path, shape, facts)
        if shape == "tasks_store":
            f.store = run.reader.read(path, load_store)
        out.append(f)
    return out


def _registry_state(run: Run) -> tuple[dict[str, tuple[int, str, str | None]], set[str]]:
    """Imported plans (ref -> (plan id, row state, import state)) and chat session ids."""
    path = run.config.main_db_path
    if not path.exists():
        return {}, set()

    def read(conn):
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        kind = None
        if "plan_meta" in tables:
            got = conn.execute("SELECT value FROM plan_meta WHERE key = 'kind'").fetchall()
            kind = got[0][0] if got else None
        if kind != "registry":
            return {}, set()  # a legacy registry: nothing was imported into it yet
        plans = {}
        for pid, state, ref, istate in conn.execute(
                "SELECT id, state, json_extract(metadata, '$.legacy.import_ref'), "
                "json_extract(metadata, '$.legacy.import_state') FROM plans "
                "WHERE json_valid(metadata) AND json_extract(metadata, '$.legacy.import_ref') "
                "IS NOT NULL ORDER BY id"):
            if ref not in plans or state == "ready":
                plans[ref] = (pid, state, istate)
        sessions = set()
        if "chat_sessions" in tables:
            sessions = {r[0] for r in conn.execute(
                "SELECT id FROM chat_sessions WHERE id LIKE 'legacy-%'")}
        return plans, sessions

    return run.reader.read(path, read)


# --- planning --------------------------------------------------------------------------------


def plan_flat(run: Run, root_plan: RootPlan) -> int:
    """Survey the legacy directory and plan its steps; returns the number of plan imports."""
    from .legacy_cache import plan_flat_caches

    report = run.report
    if not run.legacy_dir.is_dir():
        report.problem("legacy_dir_missing", str(run.legacy_dir),
                       "the legacy directory does not exist; nothing imported from it")
        return 0
    files = survey_flat(run)
    if not files:
        return 0
    imported, sessions = _registry_state(run)
    n_imports = 0
    cache_files = []
    for f in files:
        src = f.path.name
        if f.shape == "corrupt":
            fp = fingerprint(f.path)
            kept = _kept(run, fp)
            report.problem("unreadable_file", str(f.path),
                           f"unreadable ({f.error}); copied to "
                           f"{kept or 'backups/quarantine/'}, the original left in place")
            if kept is None:
                run.add("quarantine", str(f.path), "copy it (with side files) into "
                        "backups/quarantine/; the legacy directory is never changed",
                        _quarantine_copy_fn(run, f, fp))
            continue
        if f.shape == "plandb":
            report.problem("plandb_file_in_legacy_dir", str(f.path),
                           f"already a plandb {f.facts.kind} file; not imported (copy it into "
                           "a DB_ROOT, or run `plandb migrate` there)")
            continue
        fp = fingerprint(f.path)
        known = _kept(run, fp)
        backup = None
        if known is None:
            backup = run.add("backup", str(f.path), "consistent copy (WAL content included) "
                             "before anything reads it for import", _backup_fn(run, f, fp))
        kept_in = known or (f"backups/legacy/<run>/flat/{src}" if run.dry_run
                            else run.rel(run.backups.run_dir / "flat" / src))
        if f.shape == "other":
            for table, t in sorted(f.facts.tables.items()):
                report.leftover(src, "table", table, t.rows, kept_in)
            report.leftover(src, "file", src, None, kept_in)
            continue
        if f.shape == "cache":
            cache_files.append((f, backup))
            continue
        # the tasks store
        for table, t in sorted(f.facts.tables.items()):
            if table not in KNOWN_TABLES:
                report.leftover(src, "table", table, t.rows, kept_in)
        store = f.store
        planned = {pid for pid in store.members}
        stray = sorted(tid for tid in store.tasks
                       if not any(m["task_id"] == tid for ms in store.members.values()
                                  for m in ms))
        if stray:
            report.problem("unplanned_tasks", src, f"{len(stray)} task(s) belong to no plan; "
                           f"not imported, kept in {kept_in}", task_ids=stray)
        lost = sorted(pid for pid in planned if pid not in store.plans)
        if lost:
            report.problem("tasks_of_missing_plans", src,
                           f"plan_tasks rows name plan(s) {lost} that do not exist; their "
                           f"tasks are kept in {kept_in}", plan_ids=lost)
        steps_by_old: dict[int, Any] = {}
        for old_id, plan in sorted(store.plans.items()):
            ref = plan_ref(src, plan)
            done = imported.get(ref)
            if done is not None and done[1] == "ready" and done[2] == "imported":
                report.count("plans_already_imported")
                continue
            n_imports += 1
            tasks = len(store.members.get(old_id, []))
            steps_by_old[old_id] = run.add(
                "import_plan", f"{src} plan {old_id}",
                f"{plan.get('title')!r}: {tasks} task(s) -> a new plan"
                + (" (finishing an interrupted import)" if done else ""),
                _import_plan_fn(run, f, backup, old_id, ref), needs=(backup,),
                old_plan_id=old_id, tasks=tasks, import_ref=ref)
        for ref, kind, key in chat_refs(src, store):
            sid = session_id_for(ref)
            if sid in sessions:
                report.count("chats_already_imported")
                continue
            msgs = _chat_messages(store, kind, key)
            plan_step = steps_by_old.get(key) if kind == "plan_chat" else (
                steps_by_old.get(store.conversations[key].get("plan_id"))
                if kind == "conversation" else None)
            run.add("import_chat", f"{src} {kind} {key}",
                    f"{len(msgs)} message(s) -> chat session {sid}",
                    _import_chat_fn(run, f, backup, kind, key, ref, sid),
                    needs=tuple(s for s in (backup, plan_step) if s is not None),
                    session_id=sid, messages=len(msgs))
    plan_flat_caches(run, root_plan, cache_files)
    return n_imports


def _kept(run: Run, fp: str) -> str | None:
    """Where an earlier run copied this exact content, if that copy is still there."""
    entry = run.backups.known(fp)
    return entry["copy"] if entry else None


def _backup_fn(run: Run, f: FlatFile, fp: str):
    def go() -> dict:
        b = run.backups.take(f.path, f"flat/{f.name}", fp)
        return {"copy": b.copy, "reused": b.reused}
    return go


def _quarantine_copy_fn(run: Run, f: FlatFile, fp: str):
    def go() -> dict:
        qdir = quarantine(run.config.root, f.path, f"legacy/{f.name}", f.error or "unreadable",
                          move=False)
        rel = run.rel(qdir)
        run.backups.ledger["copies"][fp] = {"source": str(f.path), "copy": rel, "bytes": 0,
                                            "sha256": "", "taken_at": now(),
                                            "quarantine": True}
        run.backups._save()
        return {"copied_to": rel}
    return go


def _copy_of(run: Run, f: FlatFile, backup_step) -> Path:
    """The backup copy to import from: this run's, or an earlier run's identical one."""
    if backup_step is not None:
        return run.config.root / backup_step.data["copy"]
    entry = run.backups.known(fingerprint(f.path))
    if entry is None:
        raise PlanDBError(f"{f.path}: its backup copy is gone; run again to take a new one")
    return run.config.root / entry["copy"]


def _store_from(run: Run, f: FlatFile, backup_step) -> OldStore:
    copy = _copy_of(run, f, backup_step)
    key = ("old_store", copy)
    if key not in run.memo:
        run.memo[key] = run.reader.read(copy, load_store)
    return run.memo[key]


# --- one plan --------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _clean_name(value: Any, fallback: str, legacy: dict, key: str, limit: int) -> str:
    text = _text(value)
    if text is None or not text.strip() or "\x00" in text or len(text) > limit:
        if text is not None:
            legacy[key] = text
        cleaned = (text or "").replace("\x00", "").strip()[:limit]
        return cleaned or fallback
    return text


def _context_fields(rows: list[dict], legacy: dict) -> dict[str, Any]:
    """The 'latest' context (else the newest) -> context fields; others -> metadata."""
    if not rows:
        return {}
    chosen = next((r for r in rows if r.get("label") == "latest"), rows[-1])
    others = {str(r.get("label")): {k: r.get(k) for k in ("combined", "sections", "meta",
                                                            "created_at")}
              for r in rows if r is not chosen}
    if others:
        legacy["other_contexts"] = others
    if chosen.get("label") not in (None, "latest"):
        legacy["context_label"] = chosen.get("label")
    sections = jsonutil.loads(_text(chosen.get("sections")), [])
    if not isinstance(sections, list):
        sections = [sections]
    meta = jsonutil.loads(_text(chosen.get("meta")), {})
    if not isinstance(meta, dict):
        meta = {"value": meta}
    return {"context_combined": _text(chosen.get("combined")), "context_sections": sections,
            "context_meta": meta, "context_updated_at": _stamp(chosen.get("created_at"))}


def build_tree(store: OldStore, old_id: int, plan_id: int,
               problems: list[tuple[str, str, dict]]) -> PlanTree:
    """The old plan as a PlanTree with the old task ids (problems appended to `problems`)."""
    members = sorted(store.members.get(old_id, []),
                     key=lambda m: (m.get("task_order") is None, m.get("task_order") or 0,
                                    m["task_id"]))
    ids = [m["task_id"] for m in members if isinstance(m["task_id"], int) and m["task_id"] > 0]
    inplan = set(ids)
    missing = [m["task_id"] for m in members if m["task_id"] not in store.tasks]
    if missing:
        problems.append(("missing_tasks", f"plan_tasks of plan {old_id} name task(s) {missing} "
                         "that do not exist", {"task_ids": missing}))
    ids = [i for i in ids if i in store.tasks]
    inplan = set(ids)
    member = {m["task_id"]: m for m in members}
    tree = PlanTree(id=plan_id, title="")
    parents: dict[int, int | None] = {}
    for tid in ids:
        t = store.tasks[tid]
        legacy: dict[str, Any] = {"task_id": tid}
        for k in ("priority", "task_type", "path", "depth"):
            if t.get(k) is not None:
                legacy[k] = t[k]
        m = member[tid]
        for k in ("task_category", "task_order"):
            if m.get(k) is not None:
                legacy[k] = m[k]
        parent = t.get("parent_id")
        if parent is not None and parent not in inplan:
            legacy["parent_id"] = parent  # its parent is in another plan, or gone
            parent = None
        parents[tid] = parent
        name = _clean_name(t.get("name"), f"Task {tid}", legacy, "name", MAX_NAME)
        status = _clean_name(t.get("status") or "pending", "pending", legacy, "status", 64)
        fields = _context_fields(store.contexts.get(tid, []), legacy)
        tree.nodes[tid] = PlanNode(
            id=tid, plan_id=plan_id, name=name, status=status,
            instruction=_text(store.inputs.get(tid)), parent_id=parent,
            metadata={"legacy": legacy}, execution_result=_text(store.outputs.get(tid)),
            **fields)
    _break_parent_cycles(tree, parents, problems)
    rank: dict[int | None, int] = {}
    for tid in ids:  # sibling order: task_order, then id
        node = tree.nodes[tid]
        node.position = rank.get(node.parent_id, 0)
        rank[node.parent_id] = node.position + 1
    _dependencies(store, tree, inplan, problems)
    tree.relink()
    return tree


def _break_parent_cycles(tree: PlanTree, parents: dict[int, int | None], problems) -> None:
    for start in sorted(parents):
        seen = []
        cur = start
        while cur is not None and cur not in seen:
            seen.append(cur)
            cur = tree.nodes[cur].parent_id
        if cur is not None:  # cur is on a cycle: make the smallest id on it a root
            cycle = seen[seen.index(cur):]
            root = min(cycle)
            tree.nodes[root].metadata["legacy"]["parent_id"] = tree.nodes[root].parent_id
            tree.nodes[root].parent_id = None
            problems.append(("parent_cycle", f"tasks {cycle} are each other's parents; task "
                             f"{root} became a root", {"task_ids": cycle}))


def _dependencies(store: OldStore, tree: PlanTree, inplan: set[int], problems) -> None:
    """'requires' links inside the plan -> dependencies (to depends on from), refusing any that
    would close a cycle; every other link is kept in the from-task's metadata."""
    deps: dict[int, list[int]] = {}

    def reaches(a: int, b: int) -> bool:
        stack, seen = [a], set()
        while stack:
            x = stack.pop()
            if x == b:
                return True
            if x not in seen:
                seen.add(x)
                stack.extend(deps.get(x, ()))
        return False

    links = sorted(store.links, key=lambda r: (r.get("from_id") or 0, r.get("to_id") or 0,
                                               str(r.get("kind"))))
    for link in links:
        frm, to, kind = link.get("from_id"), link.get("to_id"), link.get("kind")
        if frm not in inplan and to not in inplan:
            continue
        keep_on = frm if frm in inplan else to
        record = {"from_id": frm, "to_id": to, "kind": kind}
        if kind == "requires" and frm in inplan and to in inplan and frm != to:
            if reaches(frm, to):
                problems.append(("dependency_cycle", f"link {frm} -> {to} would close a "
                                 "dependency cycle; kept in task metadata only", record))
                record["not_imported"] = "cycle"
            else:
                deps.setdefault(to, []).append(frm)
                continue
        elif kind == "requires":
            where = "another plan" if (frm in store.tasks and to in store.tasks) else \
                "a task that does not exist"
            problems.append(("link_not_imported", f"'requires' link {frm} -> {to} points to "
                             f"{where}; kept in task metadata", record))
            record["not_imported"] = where
        tree.nodes[keep_on].metadata["legacy"].setdefault("links", []).append(record)
    for tid, ds in deps.items():
        tree.nodes[tid].dependencies = sorted(set(ds))


def _plan_metadata(src: str, path: Path, plan: dict, ref: str, state: str) -> dict:
    config = jsonutil.loads(_text(plan.get("config_json")), None)
    legacy = {"source_file": src, "source_path": str(path), "old_plan_id": plan["id"],
              "import_ref": ref, "import_state": state, "status": plan.get("status"),
              "config": config, "created_at": _stamp(plan.get("created_at")),
              "updated_at": _stamp(plan.get("updated_at"))}
    return {"legacy": {k: v for k, v in legacy.items() if v is not None}}


def _find_imported(run: Run, ref: str) -> int | None:
    from ..transaction import read

    with run.repo._registry() as conn, read(conn):
        rows = conn.execute(
            "SELECT id FROM plans WHERE state = 'ready' AND json_valid(metadata) AND "
            "json_extract(metadata, '$.legacy.import_ref') = ? ORDER BY id", (ref,)).fetchall()
    return rows[0][0] if rows else None


def _import_plan_fn(run: Run, f: FlatFile, backup_step, old_id: int, ref: str):
    def go() -> dict:
        store = _store_from(run, f, backup_step)
        plan = store.plans.get(old_id)
        if plan is None:
            raise PlanDBError(f"plan {old_id} is not in the backup copy of {f.name}")
        repo = run.repo
        src = f.path.name
        legacy_title: dict[str, Any] = {}
        title = _clean_name(plan.get("title"), f"Legacy plan {old_id}", legacy_title, "title",
                            MAX_NAME)
        description = _text(plan.get("description"))
        pid = _find_imported(run, ref)
        resumed = pid is not None
        if pid is None:
            created = repo.create_plan(title, description=description, metadata=_plan_metadata(
                src, f.path, plan, ref, "importing"))
            pid = created.id
        problems: list[tuple[str, str, dict]] = []
        tree = build_tree(store, old_id, pid, problems)
        tree.title = title
        tree.description = description
        tree.metadata = _plan_metadata(src, f.path, plan, ref, "imported")
        tree.metadata["legacy"].update(legacy_title)
        stored = repo.upsert_plan_tree(tree)
        for code, message, data in problems:
            run.report.problem(code, f"{src} plan {old_id}", message, new_plan_id=pid, **data)
        if len(stored) != len(tree):
            raise PlanDBError(f"plan {pid}: {len(stored)} tasks stored, {len(tree)} expected")
        changed = _redaction_changes(tree, stored)
        if changed:
            run.report.problem("redacted_on_import", f"{src} plan {old_id}",
                               f"{len(changed)} value(s) were scrubbed or cut by the redaction "
                               "layer on the way in; the originals are in the backup copy",
                               new_plan_id=pid, fields=changed[:50])
        run.report.count("plans_imported")
        run.report.count("tasks_imported", len(stored))
        return {"new_plan_id": pid, "resumed": resumed, "tasks": len(stored),
                "dependencies": sum(len(n.dependencies) for n in stored.nodes.values())}
    return go


def _redaction_changes(tree: PlanTree, stored: PlanTree) -> list[str]:
    out = []
    for tid, node in tree.nodes.items():
        got = stored.nodes.get(tid)
        if got is None:
            continue
        for fname in ("name", "instruction", "execution_result", "context_combined"):
            if getattr(node, fname) != getattr(got, fname):
                out.append(f"task {tid}.{fname}")
    return out


# --- chat ------------------------------------------------------------------------------------


def _chat_messages(store: OldStore, kind: str, key: Any) -> list[dict]:
    if kind == "plan_chat":
        return [{"id": m["id"], "sender": m["sender"], "text": m["message"], "metadata": None,
                 "timestamp": m["timestamp"]} for m in store.chat.get(key, [])]
    return list(store.messages.get(key, []))


def _import_chat_fn(run: Run, f: FlatFile, backup_step, kind: str, key: Any, ref: str,
                    sid: str):
    def go() -> dict:
        from ..stores import chat

        store = _store_from(run, f, backup_step)
        src = f.path.name
        repo = run.repo
        old_plan = key if kind == "plan_chat" else (
            store.conversations[key].get("plan_id") if kind == "conversation" else None)
        new_plan = None
        if old_plan is not None and old_plan in store.plans:
            new_plan = _find_imported(run, plan_ref(src, store.plans[old_plan]))
        legacy: dict[str, Any] = {"source_file": src, "import_ref": ref, "table": {
            "plan_chat": "chat_messages", "conversation": "conversations",
            "lost_conversation": "messages"}[kind]}
        if kind == "plan_chat":
            legacy["old_plan_id"] = key
            plan = store.plans.get(key)
            name = (f"Legacy chat: {plan.get('title')}" if plan else
                    "Legacy chat (no plan)" if key is None else
                    f"Legacy chat of plan {key} (plan no longer exists)")
        elif kind == "conversation":
            conv = store.conversations[key]
            legacy.update(old_conversation_id=key, old_plan_id=conv.get("plan_id"),
                          created_at=_stamp(conv.get("created_at")),
                          updated_at=_stamp(conv.get("updated_at")))
            name = _text(conv.get("title")) or f"Legacy conversation {key}"
        else:
            legacy["old_conversation_id"] = key
            name = f"Legacy conversation {key} (conversation row missing)"
        if old_plan is not None and new_plan is None:
            run.report.problem("chat_plan_missing", f"{src} {kind} {key}",
                               f"its plan {old_plan} does not exist (or was not imported); "
                               "the session is imported unbound", session_id=sid)
        msgs = _chat_messages(store, kind, key)
        main = run.config.main_db_path
        # One transaction: the session appears with all of its messages, or not at all.
        with repo._registry() as conn, write(conn, main, retries=run.config.write_retries):
            if chat.session_exists(conn, sid):
                return {"already": True}
            repo.create_chat_session(sid, name=name[:500], name_source="legacy_import",
                                     plan_id=new_plan,
                                     metadata={"legacy": {k: v for k, v in legacy.items()
                                                          if v is not None}})
            for m in msgs:
                sender = _text(m.get("sender"))
                role = ROLE_MAP.get((sender or "").strip().lower(), "user")
                meta: dict[str, Any] = {"legacy": {"message_id": m.get("id")}}
                if sender is not None and sender != role:
                    meta["legacy"]["sender"] = sender
                extra = jsonutil.loads(_text(m.get("metadata")), None)
                if extra is not None:
                    meta["legacy"]["metadata"] = extra
                stamp = _stamp(m.get("timestamp"))
                if stamp is None and m.get("timestamp") is not None:
                    meta["legacy"]["timestamp"] = _text(m.get("timestamp"))
                content = _text(m.get("text"))
                if content is None:
                    meta["legacy"]["content_was_null"] = True
                repo.append_chat_message(sid, role=role, content=content or "",
                                         metadata=meta, created_at=stamp)
        run.report.count("chat_sessions_imported")
        run.report.count("chat_messages_imported", len(msgs))
        return {"messages": len(msgs), "plan_id": new_plan}
    return go
