"""Dataclasses for everything a planner records besides the task tree: jobs and their logs,
action logs, chat sessions/messages/action runs, memories, caches. Plain data, like
`plandb.models`: no connections, no lazy loading; `to_dict()` gives JSON-ready dicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class _ToDict:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


# --- decomposition jobs --------------------------------------------------------------------


@dataclass(slots=True)
class JobLog(_ToDict):
    """One log line of a decomposition job, in append order (`id`)."""

    id: int
    job_id: str
    timestamp: str
    level: str
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Job(_ToDict):
    """A decomposition job. `plan_id` None: it lives in jobs/system_jobs.sqlite.

    `logs` is filled by `load_decomposition_job` / `find_job` and empty in listings.
    """

    job_id: str
    plan_id: int | None
    job_type: str
    mode: str | None
    target_task_id: int | None
    status: str
    params: Any = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    stats: Any = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    created_at: str = ""
    updated_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    logs: list[JobLog] = field(default_factory=list)


@dataclass(slots=True)
class JobIndexEntry(_ToDict):
    """The registry's note of where a job lives (plan_id None: the system jobs file)."""

    job_id: str
    plan_id: int | None
    job_type: str
    created_at: str


@dataclass(slots=True)
class JobIndexReport(_ToDict):
    """What `reindex_jobs` found comparing the registry's job index with the job files.

    `missing`: jobs in a file but not in the index; `wrong`: indexed with another plan or type;
    `stale`: indexed, but no file holds them; `duplicates`: job ids held by several files
    (job_id -> plan ids, None for the system file; the index keeps the first it already had).
    `repaired` is True when the differences were written back.
    """

    files_scanned: int = 0
    jobs_seen: int = 0
    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    duplicates: dict[str, list[int | None]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def clean(self) -> bool:
        return not (self.missing or self.wrong or self.stale or self.duplicates)


# --- action logs ---------------------------------------------------------------------------


@dataclass(slots=True)
class ActionLogEntry(_ToDict):
    """One action log entry. `id` orders all entries of a file; `sequence` numbers the entries
    of one job 1, 2, 3... without gaps or repeats (cleanup removes old ones, never renumbers)."""

    id: int
    plan_id: int | None
    job_id: str
    job_type: str | None
    sequence: int
    session_id: str | None
    user_message: str | None
    action_kind: str | None
    action_name: str | None
    status: str | None
    success: bool | None
    message: str | None
    parameters: Any = field(default_factory=dict)
    details: Any = field(default_factory=dict)
    created_at: str = ""


@dataclass(slots=True)
class ActionCounts(_ToDict):
    total: int = 0
    successes: int = 0
    failures: int = 0


@dataclass(slots=True)
class ActionStats(_ToDict):
    """Totals over a file's action logs (optionally one job's).

    `success_rate` = successes / (successes + failures), None when neither occurred; entries
    with `success` None count in `unknown` only.
    """

    plan_id: int | None
    job_id: str | None
    total: int = 0
    successes: int = 0
    failures: int = 0
    unknown: int = 0
    success_rate: float | None = None
    by_action: dict[str, ActionCounts] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    first_at: str | None = None
    last_at: str | None = None


# --- chat ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ChatSession(_ToDict):
    """A chat session in the registry. `plan_title` is the bound plan's current title (or the
    title it had when bound, if the plan has gone). `updated_at` moves on every change and
    message: it is the recency order of `list_chat_sessions`."""

    id: str
    name: str | None = None
    name_source: str | None = None
    is_user_named: bool = False
    plan_id: int | None = None
    plan_title: str | None = None
    current_task_id: int | None = None
    current_task_name: str | None = None
    last_message_at: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    is_active: bool = True
    created_at: str = ""
    updated_at: str = ""


@dataclass(slots=True)
class ChatMessage(_ToDict):
    id: int
    session_id: str
    role: str
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""


@dataclass(slots=True)
class ChatActionRun(_ToDict):
    """An asynchronous structured action started from chat, with its outcome."""

    id: str
    session_id: str | None
    plan_id: int | None
    user_message: str
    mode: str | None
    status: str
    context: Any = None
    history: Any = None
    structured: Any = None
    result: Any = None
    errors: Any = None
    created_at: str = ""
    updated_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None


# --- memory --------------------------------------------------------------------------------


@dataclass(slots=True)
class Memory(_ToDict):
    """One memory. `session_id` None: it lives in the registry (no session)."""

    id: str
    session_id: str | None
    memory_type: str
    content: str
    importance: str = "medium"
    keywords: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    context: str | None = None
    related_task_id: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""


@dataclass(slots=True)
class MemoryHit(_ToDict):
    """A search result: the memory and its score (higher is better: cosine similarity for
    embedding search, the negated bm25 rank for full-text search)."""

    memory: Memory
    score: float


@dataclass(slots=True)
class MemoryEmbedding(_ToDict):
    memory_id: str
    model: str
    dimension: int
    vector: list[float]
    created_at: str = ""
    updated_at: str = ""


@dataclass(slots=True)
class SessionCleanupReport(_ToDict):
    """What `cleanup_idle_sessions` did (or, with dry_run, would do). Names are file names
    under sessions/. `in_use`: idle by file times but open or written meanwhile, so kept."""

    removed: list[str] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    dry_run: bool = False


# --- caches --------------------------------------------------------------------------------


@dataclass(slots=True)
class CacheStats(_ToDict):
    """Counters of one cache file (persisted; shared by every process using it).

    `rejected`: puts not stored because redaction had to cut the value (it would come back
    different) or it alone exceeds `max_bytes`.
    """

    name: str
    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    puts: int = 0
    evictions: int = 0
    expirations: int = 0
    rejected: int = 0
    hit_rate: float | None = None
    max_entries: int | None = None
    max_bytes: int | None = None
    default_ttl: float | None = None
