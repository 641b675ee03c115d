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
from .redaction import RedactingFilter, Redactor, redact
from .repository import PlanRepository, PlanSession

__version__ = "0.1.0"

__all__ = [
    "CorruptDatabase",
    "DatabaseBusy",
    "DatabaseConfig",
    "DependencyCycle",
    "InvalidId",
    "InvalidInput",
    "NotFound",
    "PlanDBError",
    "PlanNode",
    "PlanNotFound",
    "PlanRepository",
    "PlanSession",
    "PlanSummary",
    "PlanTree",
    "RecordNotFound",
    "RedactingFilter",
    "Redactor",
    "RepositoryClosed",
    "SchemaTooNew",
    "SnapshotInfo",
    "StorageError",
    "TaskNotFound",
    "TreeCycle",
    "TreeError",
    "WrongDatabaseKind",
    "redact",
    "__version__",
]
