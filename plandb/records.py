"""Routing for everything a planner records besides the task tree, mixed into
`PlanRepository`. Each concern lives in its own mixin module:

=============================  ==================================================  ==========
mixin                          file(s)                                             module
=============================  ==================================================  ==========
jobs, job logs, action logs    plan_id None -> jobs/system_jobs.sqlite, else the   records_jobs
                               plan's file; job index in main/plan_registry.db
chat sessions, messages, runs  main/plan_registry.db                               records_chat
memories                       sessions/session_<id>.sqlite (None: the registry)   records_memory
caches                         cache/<name>_cache.db via ``repo.cache(name)``      records_cache
=============================  ==================================================  ==========

The SQL lives in `plandb.stores` (jobs, actions, chat, memory, cache); these mixins check
arguments, redact payloads through ``repo.payloads``, pick the file and run one transaction.
"""

from __future__ import annotations

import logging

from .records_cache import CacheMixin
from .records_chat import ChatMixin
from .records_jobs import JobsMixin
from .records_memory import MemoryMixin
from .stores import chat as _chat
from .stores import jobs as _jobs
from .timestamps import now

log = logging.getLogger("plandb.records")


class RecordsMixin(JobsMixin, ChatMixin, MemoryMixin, CacheMixin):
    """Mixed into PlanRepository."""

    def _init_records(self) -> None:
        self._init_jobs()
        self._init_cache()

    def _flush_records(self) -> None:
        """Write batched bookkeeping (cache stats, pending job index entries); never raises.
        Called by `close()` before the connections go."""
        try:
            self._flush_caches()
            self._flush_job_index()
        except Exception as exc:  # close() must still close every connection
            log.warning("records bookkeeping not flushed: %s", exc)

    def _forget_plan_records(self, conn, plan_id: int) -> None:
        """Inside the registry transaction that deletes a plan's row: drop its job index
        entries and unbind its chat sessions and action runs (its jobs and logs went with
        its file)."""
        _jobs.index_forget_plan(conn, plan_id)
        _chat.forget_plan(conn, plan_id, now())
