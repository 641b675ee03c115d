"""Load: several processes x threads write and read one DB_ROOT at once; nothing is lost.

The quick form (4 processes x 2 threads x 5 s) runs in `make test`; `scripts/stress.py` runs
the same driver (`reliability.load.run_load`) for minutes and prints ops/s and p99 latency.
Set PLANDB_STRESS=1 for a 60 s run here.
"""

from __future__ import annotations

import json
import os

from reliability.acklog import AckLog, read_records
from reliability.load import LoadSettings, run_load, verify

STRESS = os.environ.get("PLANDB_STRESS") == "1"


def test_concurrent_writers_and_readers_lose_nothing_and_leak_no_errors(tmp_path):
    settings = LoadSettings(processes=4, threads=2, duration=60.0 if STRESS else 5.0, seed=1)
    res = run_load(tmp_path / "db", tmp_path / "out", settings)
    assert res.failures() == [], "\n".join(res.failures()[:20])
    # The run really exercised every kind of operation, including the error paths.
    for kind in ("task.create", "task.update", "task.move", "task.delete", "task.create_bulk",
                 "plan.create", "plan.delete", "tree.upsert", "log.append", "cache.put",
                 "cache.get", "read.tree", "read.list_plans", "read.node", "read.logs"):
        assert res.ops.get(kind, 0) > 0, f"no {kind} ran: {res.ops}"
    assert res.expected_errors > 0  # bad input got its typed errors, counted apart
    assert res.acked_writes > 100


def test_verification_catches_an_acknowledged_write_that_is_missing(tmp_path):
    """The checker is not a rubber stamp: forge an ack for a task that was never written."""
    settings = LoadSettings(processes=1, threads=1, duration=0.5, seed=2)
    res = run_load(tmp_path / "db", tmp_path / "out", settings)
    assert res.failures() == []
    setup = json.loads((tmp_path / "out" / "setup.json").read_text())
    ack = next((tmp_path / "out").glob("ack-*.jsonl"))
    root_task = next(r for r in read_records(ack) if r.get("parent") is None)
    with AckLog(ack) as log:
        log.write({"t": "ack", "n": 10**6, "op": "task.create", "plan": root_task["plan"],
                   "id": 10**9, "parent": root_task["id"]})
    again = type(res)(settings)
    verify(tmp_path / "db", tmp_path / "out", setup, again)
    assert any("10000000" in x and "missing" in x for x in again.lost), again.lost
