"""Test hook for crash tests: ``PLANDB_CRASH_AT=<step>`` makes the process SIGKILL itself at
that step of a multi-file operation, so tests hit every window between two steps
deterministically. Read once at import; unset (always, in production) `crash_point` does
nothing but compare two strings.

Steps: ``create:row``, ``create:built``, ``create:renamed``, ``update_plan:file``,
``delete:marked``, ``delete:unlinked<suffix>`` (plandb.repository) and ``job:file``
(plandb.records_jobs).
"""

from __future__ import annotations

import os
import signal

_CRASH_AT = os.environ.get("PLANDB_CRASH_AT")


def crash_point(step: str) -> None:
    if _CRASH_AT == step:
        os.kill(os.getpid(), signal.SIGKILL)
