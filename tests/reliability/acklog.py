"""The ack log: what a worker was told succeeded, written so that a SIGKILL loses nothing.

One file per worker (thread), opened ``O_APPEND``; every record is one JSON line written with a
single ``os.write`` (no user-space buffer), so once `write` returns the line is in the kernel's
page cache and survives the process being killed. A kill in the middle of `write` can leave at
most one torn last line, which `read_records` ignores.

Record shapes (``t`` is the record type, ``n`` numbers the operations of one worker):

- ``{"t": "begin", "n": 7, "op": "create_task", ...}``: about to call; carries what the call will
  change, so a checker can tell the two allowed outcomes of an operation cut by a kill.
- ``{"t": "ack", "n": 7, "op": "create_task", ...}``: the call returned; it must be durable.
- ``{"t": "fail", "n": 7, "op": ..., "error": "TreeCycle"}``: the call raised the typed error its
  input asked for; it must have changed nothing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class AckLog:
    """Append-only JSON-lines file, one ``os.write`` per record."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        data = line.encode()
        # One write() of a short line to an O_APPEND file is not split by a kill; loop only for
        # the (theoretical) short write.
        while data:
            done = os.write(self._fd, data)
            data = data[done:]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AckLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Every complete record of an ack log, in order (a torn last line is skipped)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return
    lines = raw.split(b"\n")
    for line in lines[:-1]:  # the part after the last newline is incomplete (or empty)
        if line:
            yield json.loads(line)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
