"""Hostile input: every public call either succeeds or raises a `PlanDBError` subclass with a
clear message, and a call that fails changes nothing.

`Harness` keeps one root with a base plan (a small tree with a dependency edge) and runs one
call at a time: it flushes the registry bookkeeping, dumps every table of every file with the
stdlib ``sqlite3`` module, makes the call, and on failure dumps again and compares. Calls are
drawn by hypothesis from `calls()`: hostile ids (negative, huge, strings, ``../``, NUL, lone
surrogates, unicode digits, 10 kB), names and JSON metadata (non-serialisable objects, NaN,
deep nesting, self-reference, huge ints, tuple keys), cycles in dependencies and moves, unknown
parents, positions out of range, SQL-looking strings, malformed trees for `upsert_plan_tree`.
Arguments that should name something real are drawn as references (``Ref("task", 1)``) and
resolved against the base plan when the call runs, so the same draw exercises both valid and
hostile paths. The 50 MB cases are explicit (`HUGE_CASES`), not generated.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plandb import PlanDBError, PlanNode, PlanRepository, PlanSession, PlanTree
from plandb.maintenance.scan import database_files

from . import features
from .checks import dump_root

MAX_MESSAGE = 2000  # an error message that echoes a 10 kB input back is not a clear message


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference resolved at call time: ("plan", 0) is the base plan, ("task", i) its i-th
    task in outline order (wrapping), ("snapshot", i) one of its snapshots."""

    what: str
    index: int = 0


# --- values ------------------------------------------------------------------------------------

SQL_LIKE = [
    "'; DROP TABLE tasks; --", "Robert'); DROP TABLE plans;--", "\" OR 1=1 --", "%", "_",
    "\\", "1 UNION SELECT key, value FROM plan_meta", "NULL", ")", "' || (SELECT 1) || '",
    "*/ DELETE FROM tasks /*", "main.plans", "?", ":name", "$x", "@p",
]
ODD_STRINGS = [
    "", " ", "\t\n", "a\x00b", "\x00", "\ud800", "a\udfffb", "..", "../x", "../../etc/passwd",
    "/abs", "C:\\x", "plan_1.sqlite", "~", "１２", "١٢٣", "𝟙", "é", "\u202e", "\ufeff",
    "x" * 10_000, "x" * 10_001, "é" * 10_001,
]


def odd_ids() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([0, -1, 1, 2, 3, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30]),
        st.text(max_size=12),
        st.sampled_from(ODD_STRINGS + SQL_LIKE),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([None, True, False, b"1", [1], (1,), {"id": 1}, 1.0, 1 + 0j]),
        st.builds(object),
    )


def names() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text(max_size=30),
        st.sampled_from(ODD_STRINGS + SQL_LIKE),
        st.sampled_from([None, 1, 1.5, b"bytes", ["x"], {"x": 1}]),
    )


def _deep(depth: int, dict_levels: bool = False) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"d": value} if dict_levels else [value]
    return value


def _self_ref() -> dict:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    return d


def _list_self_ref() -> dict:
    lst: list[Any] = [1]
    lst.append(lst)
    return {"l": lst}


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_LEAF, lambda c: st.one_of(
    st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)), max_leaves=15)


def metadata() -> st.SearchStrategy[Any]:
    odd = st.sampled_from([
        "object", "set", "bytes", "complex", "bigint", "tuplekey", "nan", "inf", "deep300",
        "deep5000", "deepdict3000", "selfref", "listselfref", "notdict", "list", "str", "frozenset",
        "type", "func", "nonstrkeys", "sqlkeys", "nulkey", "surrogate",
    ]).map(Odd)
    return st.one_of(st.none(), st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5),
                     odd)


@dataclass(frozen=True, slots=True)
class Odd:
    """An odd metadata value, built only when the call runs (hypothesis never prints it: a
    5000-deep list or a self-referencing dict would break its printer)."""

    kind: str

    def build(self) -> Any:
        return _odd_meta(self.kind)


def _odd_meta(kind: str) -> Any:
    return {
        "object": lambda: {"o": object()},
        "set": lambda: {"s": {1, 2}},
        "bytes": lambda: {"b": b"\xff\x00"},
        "complex": lambda: {"c": 1 + 2j},
        "bigint": lambda: {"n": 2**70},
        "tuplekey": lambda: {(1, 2): "tuple key"},
        "nan": lambda: {"nan": math.nan},
        "inf": lambda: {"inf": -math.inf},
        "deep300": lambda: {"deep": _deep(300)},
        "deep5000": lambda: {"deep": _deep(5000)},
        "deepdict3000": lambda: _deep(3000, dict_levels=True),
        "selfref": _self_ref,
        "listselfref": _list_self_ref,
        "notdict": lambda: 5,
        "list": lambda: [1, 2],
        "str": lambda: "{\"a\": 1}",
        "frozenset": lambda: {"f": frozenset({1})},
        "type": lambda: {"t": int},
        "func": lambda: {"f": print},
        "nonstrkeys": lambda: {1: "a", None: "b", 2.5: "c"},
        "sqlkeys": lambda: {"'; DROP TABLE tasks; --": 1, "$.x": 2},
        "nulkey": lambda: {"a\x00b": "c\x00d"},
        "surrogate": lambda: {"\ud800": "\udfff"},
    }[kind]()


def task_refs() -> st.SearchStrategy[Any]:
    return st.one_of(st.builds(Ref, st.just("task"), st.integers(0, 6)), odd_ids())


def parent_refs() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), task_refs())


def plan_refs() -> st.SearchStrategy[Any]:
    return st.one_of(st.just(Ref("plan")), st.just(Ref("plan")), odd_ids())


def positions() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.integers(min_value=-5, max_value=50),
                     st.sampled_from([-(2**63), 2**63, 2**100, 1.5, "1", True, math.nan]))


def dependency_lists() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.lists(task_refs(), max_size=4),
                     st.sampled_from(["1,2", b"12", 5, {"a": 1}, [[1]], (Ref("task", 0),)]))


# --- calls ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """A method name and arguments (with `Ref`s inside), resolved and run by `Harness`."""

    method: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # hypothesis prints this for a falsifying example
        def short(v: Any) -> str:
            r = repr(v)
            return r if len(r) <= 120 else r[:117] + "..."
        parts = [short(a) for a in self.args] + [f"{k}={short(v)}" for k, v in self.kwargs.items()]
        return f"{self.method}({', '.join(parts)})"


def _call(method: str, *args: Any, **kwargs: Any) -> st.SearchStrategy[Call]:
    return st.builds(lambda a, k: Call(method, tuple(a), k),
                     st.tuples(*args), st.fixed_dictionaries(kwargs))


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(None), strategy)


NODE_FIELDS = ("position", "status", "instruction", "metadata", "execution_result",
               "context_combined", "context_sections", "context_meta", "context_updated_at",
               "created_at", "dependencies")


def tree_specs() -> st.SearchStrategy[Any]:
    """Trees for upsert_plan_tree: (node id, parent id, name, deps, odd fields) rows, often
    malformed; odd fields overwrite a node's attributes with hostile values."""
    node_id = st.one_of(st.integers(1, 8), odd_ids())
    odd_fields = st.dictionaries(st.sampled_from(NODE_FIELDS), st.one_of(
        odd_ids(), names(), metadata()), max_size=2)
    row = st.tuples(node_id, st.one_of(st.none(), node_id), names(),
                    st.lists(node_id, max_size=2), st.one_of(st.just({}), odd_fields))
    return st.tuples(st.one_of(st.just(Ref("plan")), odd_ids()), names(),
                     st.lists(row, max_size=7), metadata())


def calls() -> st.SearchStrategy[Call]:
    plan, task, parent = plan_refs(), task_refs(), parent_refs()
    strategies = [
        _call("create_plan", names(), owner=_opt(names()), description=_opt(names()),
              metadata=metadata()),
        _call("get_plan_tree", plan),
        _call("get_plan_summary", plan),
        _call("delete_plan", odd_ids()),
        _call("update_plan", plan, title=_opt(names()), description=_opt(names()),
              metadata=metadata()),
        _call("list_plans", owner=_opt(names()), limit=_opt(odd_ids()),
              offset=st.one_of(st.just(0), odd_ids())),
        _call("create_task", plan, name=names(), status=st.one_of(st.just("pending"), names()),
              instruction=_opt(names()), parent_id=parent, metadata=metadata(),
              dependencies=dependency_lists(), position=positions()),
        _call("create_task", plan, name=names(), anchor_task_id=task,
              anchor_position=st.one_of(st.sampled_from(["before", "after"]), names())),
        _call("create_tasks", plan, st.lists(st.one_of(
            st.fixed_dictionaries({"name": names()}, optional={
                "parent_id": parent, "parent_index": odd_ids(), "dependency_indexes": st.one_of(
                    st.lists(st.integers(-3, 5), max_size=3), odd_ids()),
                "position": positions(), "metadata": metadata(), "bogus": st.just(1)}),
            odd_ids()), max_size=4)),
        _call("get_node", plan, task),
        _call("update_task", plan, task, name=_opt(names()), status=_opt(names()),
              instruction=_opt(names()), metadata=metadata(), dependencies=dependency_lists(),
              context_combined=_opt(names()), context_sections=_opt(st.one_of(
                  st.lists(JSON_VALUES, max_size=3), names(), metadata())),
              context_meta=metadata(), execution_result=_opt(names())),
        _call("delete_task", plan, task),
        _call("move_task", plan, task, new_parent_id=parent, new_position=positions()),
        _call("create_snapshot", plan, note=_opt(names())),
        _call("list_snapshots", plan),
        _call("restore_snapshot", plan, st.one_of(st.builds(Ref, st.just("snapshot"),
                                                            st.integers(0, 3)), odd_ids())),
        st.builds(lambda spec: Call("upsert_plan_tree", (spec,)), tree_specs()),
        st.builds(lambda pid: Call("session", (pid,)), plan),
    ]
    return st.one_of(*strategies, *records_strategies())


def record_ids(what: str) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(Ref(what)), st.just(Ref(what)), names(), odd_ids())


def stamps() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.sampled_from(
        ["2026-01-01T00:00:00Z", "2026-13-45", "yesterday", "", 1e20, -1, math.nan, "0"]),
        odd_ids())


FTS_QUERIES = ["a OR", '"', "NEAR(", "*", "a AND NOT b", "col:x", "^a", "(((", "a\x00",
               "{a b}", "-", "+", "'", "%", "NOT"]


def records_strategies() -> list[st.SearchStrategy[Call]]:
    """Calls on jobs, action logs, chat, memories and caches (issue 5's API)."""
    plan_or_none = st.one_of(st.none(), plan_refs())
    job, session = record_ids("job"), record_ids("session")
    flag = st.one_of(st.booleans(), odd_ids())
    return [
        _call("append_action_log", plan_id=plan_or_none, job_id=job, action_kind=names(),
              action_name=names(), status=names(), session_id=_opt(session),
              job_type=_opt(names()), user_message=_opt(names()), success=_opt(flag),
              message=_opt(names()), parameters=metadata(), details=metadata(),
              created_at=stamps()),
        _call("list_action_logs", plan_or_none, job_id=_opt(job),
              limit=st.one_of(st.just(10), odd_ids()),
              cursor=st.one_of(st.none(), names(), odd_ids()), reverse=flag,
              since=stamps(), until=stamps()),
        _call("record_decomposition_job", plan_or_none, job_id=job, job_type=names(),
              mode=_opt(names()), target_task_id=_opt(task_refs()), status=names(),
              params=metadata(), metadata=metadata()),
        _call("append_decomposition_job_log", plan_or_none, job_id=job, message=names(),
              level=st.one_of(st.just("info"), names()), timestamp=stamps(),
              metadata=metadata()),
        _call("create_chat_session", _opt(session), name=_opt(names()),
              plan_id=_opt(plan_refs()), metadata=metadata(), is_active=flag),
        _call("append_chat_message", session, role=st.one_of(
            st.sampled_from(["user", "assistant", "tool"]), names()), content=names(),
              metadata=metadata()),
        _call("list_chat_messages", session, limit=st.one_of(st.just(10), odd_ids())),
        _call("add_memory", st.one_of(st.none(), session), content=names(),
              memory_type=st.one_of(st.just("conversation"), names()),
              keywords=st.one_of(st.none(), st.lists(names(), max_size=3), names()),
              metadata=metadata(), related_task_id=_opt(task_refs()),
              embedding=st.one_of(st.none(), st.lists(st.floats(), max_size=4), odd_ids())),
        _call("search_memories", st.one_of(st.none(), session),
              st.one_of(st.sampled_from(FTS_QUERIES), names()),
              raw=flag, match=st.one_of(st.just("all"), names())),
        _call("cache_put", st.one_of(st.sampled_from(["llm", "embedding"]), names()), names(),
              st.one_of(names(), metadata()), st.one_of(names(), metadata(), odd_ids()),
              st.one_of(st.none(), odd_ids())),
        _call("cache_get", st.one_of(st.sampled_from(["llm", "embedding"]), names()), names(),
              st.one_of(names(), metadata())),
    ]


# --- the harness -------------------------------------------------------------------------------


@dataclass(slots=True)
class Finding:
    call: str
    what: str


class Harness:
    """One root, one base plan; `attempt(call)` runs a call and checks the rules."""

    BASE_SHAPE = (("root", None), ("child", "root"), ("grandchild", "child"), ("other", None),
                  ("leaf", "other"))

    def __init__(self, root: Path, *, strict: bool = True):
        self.root = Path(root)
        # A huge sync interval: registry bookkeeping happens only at our explicit flush().
        self.repo = PlanRepository(self.root, registry_sync_interval=1e9)
        self.strict = strict
        self.tried = 0
        self.succeeded = 0
        self.refused = 0
        self.findings: list[Finding] = []
        self.base_id = 0
        self._state: dict[str, Any] | None = None
        self.task_ids: list[int] = []
        self.snapshot_ids: list[int] = []
        self.reset_base()

    def close(self) -> None:
        self.repo.close()

    # -- the base plan --

    def reset_base(self) -> None:
        """(Re)build the base plan: a small tree, a dependency edge, two snapshots."""
        plans = self.repo.list_plans()
        for p in plans:
            if p.id != self.base_id:
                self.repo.delete_plan(p.id)
        if self.base_id not in {p.id for p in plans}:
            self.base_id = self.repo.create_plan("base").id
        tree = PlanTree(id=self.base_id, title="base")
        ids = {}
        for i, (name, parent) in enumerate(self.BASE_SHAPE, 1):
            ids[name] = i
            tree.nodes[i] = PlanNode(id=i, plan_id=self.base_id, name=name, position=i,
                                     parent_id=ids[parent] if parent else None)
        tree.nodes[ids["grandchild"]].dependencies = [ids["leaf"]]
        tree.relink()
        self.repo.upsert_plan_tree(tree, note="base")
        self.repo.create_snapshot(self.base_id, note="second")
        if features.has_action_logs(self.repo):
            # Files of the fixed layout exist from the start (opening one creates it); files
            # named by an id (sessions) must not appear because a call with that id failed.
            self.repo.list_action_logs(None)
            for name in ("llm", "embedding"):
                self.repo.cache(name).stats()
            features.create_job(self.repo, self.base_id, "base-job")
            try:
                self.repo.get_chat_session("base-session")
            except PlanDBError:
                self.repo.create_chat_session("base-session", name="base")
        self.refresh()

    def refresh(self) -> None:
        try:
            tree = self.repo.get_plan_tree(self.base_id)
            self.task_ids = [n.id for n in tree.ordered_nodes()]
            self.snapshot_ids = [s.id for s in self.repo.list_snapshots(self.base_id)]
        except PlanDBError:
            self.task_ids, self.snapshot_ids = [], []

    def healthy(self) -> bool:
        return (len(self.task_ids) >= 4 and len(self.snapshot_ids) >= 1
                and len(self.repo.list_plans()) <= 4)

    # -- resolving references --

    def resolve(self, value: Any) -> Any:
        if isinstance(value, Odd):
            return value.build()
        if isinstance(value, Ref):
            if value.what == "plan":
                return self.base_id
            if value.what in ("job", "session"):
                return f"base-{value.what}"
            pool = self.task_ids if value.what == "task" else self.snapshot_ids
            return pool[value.index % len(pool)] if pool else 10**9
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.resolve(v) for v in value)
        if isinstance(value, dict) and not any(isinstance(k, Ref) for k in value):
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    def build_tree(self, spec: tuple) -> Any:
        plan_ref, title, rows, meta = spec
        pid = self.resolve(plan_ref)
        tree = PlanTree(id=pid, title=title, metadata=self.resolve(meta))
        for i, (nid, parent, name, deps, odd) in enumerate(rows):
            try:
                hash(nid)
            except TypeError:
                continue  # a caller cannot make a dict key of it either
            node = tree.nodes[nid] = PlanNode(id=nid, plan_id=pid, name=name, parent_id=parent,
                                              position=i, dependencies=list(deps))
            for attr, value in odd.items():
                setattr(node, attr, self.resolve(value))
        try:
            tree.relink()
        except Exception:  # noqa: BLE001 - unsortable odd ids: hand over the raw dicts
            pass
        return tree

    def bind(self, call: Call) -> Callable[[], Any]:
        repo = self.repo
        if call.method == "upsert_plan_tree":
            tree = self.build_tree(call.args[0])
            return lambda: repo.upsert_plan_tree(tree, note="hostile")
        args = self.resolve(call.args)
        kwargs = self.resolve(call.kwargs)
        if call.method == "session":
            return lambda: PlanSession(repo, *args).refresh()
        if call.method == "cache_put":
            name, model, key, value, ttl = args
            return lambda: repo.cache(name).put(model, key, value, ttl=ttl)
        if call.method == "cache_get":
            name, model, key = args
            return lambda: repo.cache(name).get(model, key)
        return lambda: getattr(repo, call.method)(*args, **kwargs)

    # -- the check --

    def finding(self, call: Any, what: str) -> None:
        self.findings.append(Finding(repr(call), what))
        if self.strict:
            raise AssertionError(f"{call!r}: {what}")

    def attempt(self, call: Call | str, fn: Callable[[], Any] | None = None) -> Any:
        """Run one call; returns its result or the PlanDBError it raised."""
        self.tried += 1
        if fn is None:
            fn = self.bind(call)
        self.repo.flush()
        # The state after the previous failed call is still the state (nothing ran since).
        before = self._state if self._state is not None else dump_root(self.root)
        self._state = None
        stats = file_stats(self.root)
        t0 = time.monotonic()
        try:
            result = fn()
        except PlanDBError as exc:
            self.refused += 1
            message = str(exc)
            if not message.strip():
                self.finding(call, f"{type(exc).__name__} with an empty message")
            elif len(message) > MAX_MESSAGE:
                self.finding(call, f"{type(exc).__name__} message is {len(message)} characters "
                                   f"(echoes the input?): {message[:200]}...")
            if not isinstance(getattr(exc, "code", None), str):
                self.finding(call, f"{type(exc).__name__} has no string `code`")
            self.repo.flush()
            # Nothing committed leaves every file and -wal as it was: no need to read them.
            after = before if file_stats(self.root) == stats else dump_root(self.root)
            if after != before:
                self.finding(call, f"failed with {type(exc).__name__} ({message[:200]}) but "
                                   f"changed {_changed(before, after)}")
            self._state = after
            return exc
        except Exception as exc:  # noqa: BLE001 - any other type reaching a caller is a bug
            tb = traceback.format_exc(limit=-6)
            self.finding(call, f"raised {type(exc).__module__}.{type(exc).__name__}: "
                               f"{str(exc)[:300]}\n{tb[-2500:]}")
            return exc
        finally:
            self.elapsed = time.monotonic() - t0
        self.succeeded += 1
        self.refresh()
        if not self.healthy():
            self.reset_base()
        return result


def file_stats(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """(size, mtime) of every database file and its -wal: any commit changes one of them."""
    out = {}
    for f in database_files(root):
        parts = []
        for p in (f.path, Path(f"{f.path}-wal")):
            try:
                st = p.stat()
                parts += [st.st_size, st.st_mtime_ns]
            except FileNotFoundError:
                parts += [-1, -1]
        out[f.rel] = tuple(parts)
    return out


def _changed(before: dict[str, Any], after: dict[str, Any]) -> str:
    out = []
    for rel in sorted(set(before) | set(after)):
        if rel not in before:
            out.append(f"{rel} created")
        elif rel not in after:
            out.append(f"{rel} removed")
        elif before[rel] != after[rel]:
            tables = [t[0] for t, u in zip(before[rel], after[rel], strict=False) if t != u]
            out.append(f"{rel} tables {tables}")
    return "; ".join(out) or "nothing?"


def runner(harness: Harness, max_examples: int, seed: int | None = None) -> Callable[[], None]:
    """A hypothesis-driven function that tries `max_examples` drawn calls on `harness`."""

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(call=calls())
    def run(call: Call) -> None:
        harness.attempt(call)

    if seed is not None:
        from hypothesis import seed as hseed

        run = hseed(seed)(run)
    return run


# --- the explicit huge cases --------------------------------------------------------------------

HUGE = 50 * 1024 * 1024


def huge_cases(harness: Harness) -> list[tuple[str, Callable[[], Any]]]:
    """50 MB strings in every kind of slot, made once (not generated)."""
    big = "x" * HUGE
    repo, pid = harness.repo, harness.base_id
    tid = harness.task_ids[0]
    return [
        ("create_task(name=50MB)", lambda: repo.create_task(pid, name=big)),
        ("create_task(instruction=50MB)", lambda: repo.create_task(pid, name="i", instruction=big)),
        ("create_task(metadata={'blob': 50MB})",
         lambda: repo.create_task(pid, name="m", metadata={"blob": big})),
        ("update_task(context_combined=50MB)",
         lambda: repo.update_task(pid, tid, context_combined=big)),
        ("create_plan(title=50MB)", lambda: repo.create_plan(big)),
        ("create_plan(description=50MB)", lambda: repo.create_plan("d", description=big)),
        ("get_plan_tree('50MB')", lambda: repo.get_plan_tree(big)),
        ("list_plans(owner=50MB)", lambda: repo.list_plans(owner=big)),
        ("create_snapshot(note=50MB)", lambda: repo.create_snapshot(pid, note=big)),
    ]


def records_calls(harness: Harness) -> list[tuple[str, Callable[[], Any]]]:
    """Hostile ids for the records APIs (sessions, jobs, caches), when they exist."""
    repo = harness.repo
    out: list[tuple[str, Callable[[], Any]]] = []
    if not features.has_action_logs(repo):
        return out
    for bad in ["../x", "a\x00b", "\ud800", "x" * 10_000, 5, None, "", " "]:
        out.append((f"append_action_log(job_id={bad!r:.40})", lambda bad=bad: features.append_log(
            repo, harness.base_id, bad, "m")))
        out.append((f"list_action_logs(job_id={bad!r:.40})", lambda bad=bad: features.page_logs(
            repo, harness.base_id, bad)))
    return out
