"""A separate process that writes records through its own PlanRepository, for the
multi-process tests of tests/test_action_logs.py, test_chat.py, test_memory.py, test_cache.py.

    python tests/append_worker.py ROOT MODE TARGET COUNT TAG

Waits until ROOT/go exists (so every worker starts writing at the same moment), writes COUNT
records, and prints one JSON line: what it was acknowledged (ids, sequences, keys). With
APPEND_WORKER_HOLD=1 it then touches ROOT/done-TAG and keeps its repository open until
ROOT/stop exists.

MODE    TARGET                      writes
action  plan id, or "none"          action log entries, alternating jobs job-a / job-b
message chat session id             chat messages
memory  session id, or "none"       memories (with an embedding)
cache   cache name                  cache entries keyed TAG-i
hold    session id                  opens the session's memory file, prints "ready", then
                                    keeps it open until stdin closes
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import orjson

from plandb import PlanRepository


def main() -> None:
    root, mode, target, count, tag = sys.argv[1:6]
    count_n = int(count)
    repo = PlanRepository(root)
    try:
        if mode == "hold":
            repo.add_memory(target, content=f"held by {tag}")
            print("ready", flush=True)
            sys.stdin.read()
            return
        go = Path(root) / "go"
        deadline = time.monotonic() + 60
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        out: list = []
        for i in range(count_n):
            if mode == "action":
                plan_id = None if target == "none" else int(target)
                e = repo.append_action_log(
                    plan_id=plan_id, job_id=("job-a", "job-b")[i % 2], action_kind="tool",
                    action_name=f"act{i % 3}", status="done", success=i % 4 != 0,
                    message=f"{tag} {i}", parameters={"i": i, "tag": tag})
                out.append([e.id, e.job_id, e.sequence])
            elif mode == "message":
                m = repo.append_chat_message(target, role="user", content=f"{tag} {i}")
                out.append(m.id)
            elif mode == "memory":
                sid = None if target == "none" else target
                m = repo.add_memory(sid, content=f"{tag} note number {i}",
                                    keywords=[tag], embedding=[float(i), 1.0, 0.5],
                                    embedding_model="test-model")
                out.append(m.id)
            elif mode == "cache":
                repo.cache(target).put("m", f"{tag}-{i}", {"n": i})
                out.append(f"{tag}-{i}")
            else:
                raise SystemExit(f"unknown mode {mode}")
        print(orjson.dumps(out).decode(), flush=True)
        if os.environ.get("APPEND_WORKER_HOLD"):
            # Keep the repository (and its connections) open until the test says stop.
            (Path(root) / f"done-{tag}").touch()
            while not (Path(root) / "stop").exists() and time.monotonic() < deadline + 60:
                time.sleep(0.01)
    finally:
        repo.close()


if __name__ == "__main__":
    main()
