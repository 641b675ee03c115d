"""`make demo`: build a real DB_ROOT end to end, then look at it with the `plandb` command.

Creates the root (a fresh temp dir, or $DB_ROOT if set), two plans with task trees, a
decomposition job with its log, action logs in a plan and in the system jobs file (one payload
carries a fake API key, so you can see it stored redacted), then runs `plandb inspect`,
`plandb plans show`, `plandb logs` and `plandb doctor` on it as separate processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from plandb import PlanRepository

FAKE_SECRET = "sk-proj-" + "Xy7Qm2Lp9Rt4Vb8Nc3Hd" * 2  # 40 characters after the prefix


def build(root: Path) -> dict[str, Any]:
    with PlanRepository(root) as repo:
        launch = repo.create_plan("Launch the v2 website", owner="ana",
                                  description="Everything between design freeze and go-live",
                                  metadata={"team": "web"})
        design = repo.create_task(launch.id, name="Design", status="done")
        repo.create_task(launch.id, name="Wireframes", parent_id=design.id, status="done")
        repo.create_task(launch.id, name="Visual design", parent_id=design.id, status="done")
        build_ = repo.create_task(launch.id, name="Build", status="running")
        api = repo.create_task(launch.id, name="API endpoints", parent_id=build_.id,
                               status="running", instruction="REST, versioned under /v2")
        repo.create_task(launch.id, name="Front end", parent_id=build_.id,
                         dependencies=[api.id])
        repo.create_task(launch.id, name="Go live", dependencies=[build_.id])

        research = repo.create_plan("Research vector stores", owner="bo")
        survey = repo.create_task(research.id, name="Survey candidates", status="done")
        for name in ("sqlite-vec", "pgvector", "FAISS"):
            repo.create_task(research.id, name=f"Benchmark {name}", parent_id=survey.id)

        job = f"decompose-build-{launch.id}"  # job ids are unique across the root
        repo.record_decomposition_job(launch.id, job_id=job, mode="full",
                                      target_task_id=build_.id, status="running",
                                      params={"max_depth": 3})
        repo.append_decomposition_job_log(launch.id, job_id=job,
                                          timestamp="2026-11-22T10:01:24.123456Z",
                                          level="info", message="expanding 'Build'")
        repo.append_action_log(plan_id=launch.id, job_id=job,
                               action_kind="llm", action_name="call_model", status="done",
                               success=True, message="asked the model for subtasks",
                               parameters={"model": "gpt-x", "api_key": FAKE_SECRET})
        repo.append_action_log(plan_id=launch.id, job_id=job,
                               action_kind="tool", action_name="create_task", status="done",
                               success=True, message="created 'API endpoints'",
                               details={"header": f"Authorization: Bearer {FAKE_SECRET}"})
        repo.append_action_log(plan_id=None, job_id="nightly-cleanup", action_kind="system",
                               action_name="cleanup", status="done", success=True,
                               message="nothing to clean")
        return {"launch": launch.id, "research": research.id, "job": job}


def plandb(root: Path, *args: str) -> int:
    """Run the real command in its own process and show what it prints."""
    print(f"\n$ plandb {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "plandb", "--db-root", str(root), *args],
                          check=False)
    return proc.returncode


def main() -> int:
    env_root = os.environ.get("DB_ROOT")
    root = Path(env_root) if env_root else Path(tempfile.mkdtemp(prefix="plandb-demo-")) / "db"
    print(f"Building a DB_ROOT at {root}")
    ids = build(root)
    print(f"Made plan {ids['launch']} 'Launch the v2 website' (7 tasks, a decomposition job, "
          f"2 action logs) and plan {ids['research']} 'Research vector stores' (4 tasks); "
          "one system action log.")
    codes = [
        plandb(root, "inspect"),
        plandb(root, "plans", "show", str(ids["launch"])),
        plandb(root, "logs", "--plan", str(ids["launch"]), "--job", ids["job"]),
        plandb(root, "doctor"),
    ]
    leaked = any(FAKE_SECRET.encode() in p.read_bytes() for p in root.rglob("*") if p.is_file())
    print(f"\nThe fake API key {FAKE_SECRET[:12]}... is "
          + ("STILL IN THE FILES (redaction failed)" if leaked else "in no file under the root: "
             "it was redacted before it was written."))
    print(f"\nDB_ROOT: {root}\nTry: .venv/bin/plandb --db-root {root} --help")
    return 1 if leaked or any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
