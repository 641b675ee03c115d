"""Routing for everything a planner records besides the task tree (jobs, action logs, chat,
session memory, caches). Filled in by the jobs/logs/chat/memory/cache work."""

from __future__ import annotations


class RecordsMixin:
    """Mixed into PlanRepository."""

    def _init_records(self) -> None:
        pass
