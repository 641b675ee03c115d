"""plandb: hierarchical, multi-file SQLite storage for LLM-agent planners.

The public names are listed in ``__all__``; everything else is internal.
"""

from .config import DatabaseConfig
from .errors import (
    CorruptDatabase,
    DatabaseBusy,
    DependencyCycle,
    InvalidId,
    InvalidInput,
    NotFound,
    PlanDBError,
    PlanNotFound,
    RecordConflict,
    RecordNotFound,
    RepositoryClosed,
    SchemaTooNew,
    StorageError,
    TaskNotFound,
    TreeCycle,
    TreeError,
    WrongDatabaseKind,
)
from .models import PlanNode, PlanSummary, PlanTree, SnapshotInfo
from .record_models import (
    ActionLogEntry,
    ActionStats,
    CacheStats,
    ChatActionRun,
    ChatMessage,
    ChatSession,
    Job,
    JobIndexEntry,
    JobIndexReport,
    JobLog,
    Memory,
    MemoryEmbedding,
    MemoryHit,
    SessionCleanupReport,
)
from .redaction import RedactingFilter, Redactor, redact
from .repository import PlanRepository, PlanSession

__version__ = "0.1.0"

__all__ = [
    "ActionLogEntry",
    "ActionStats",
    "CacheStats",
    "ChatActionRun",
    "ChatMessage",
    "ChatSession",
    "CorruptDatabase",
    "DatabaseBusy",
    "DatabaseConfig",
    "DependencyCycle",
    "InvalidId",
    "InvalidInput",
    "Job",
    "JobIndexEntry",
    "JobIndexReport",
    "JobLog",
    "Memory",
    "MemoryEmbedding",
    "MemoryHit",
    "NotFound",
    "PlanDBError",
    "PlanNode",
    "PlanNotFound",
    "PlanRepository",
    "PlanSession",
    "PlanSummary",
    "PlanTree",
    "RecordConflict",
    "RecordNotFound",
    "RedactingFilter",
    "Redactor",
    "RepositoryClosed",
    "SchemaTooNew",
    "SessionCleanupReport",
    "SnapshotInfo",
    "StorageError",
    "TaskNotFound",
    "TreeCycle",
    "TreeError",
    "WrongDatabaseKind",
    "redact",
    "__version__",
]
