"""Smoke test of scripts/bench.py (what `make bench` runs): it must run end to end and write
its JSON results with every workload. Tiny counts; no timing is asserted (speed is the
benchmark's job, not the test suite's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench.py"
WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"]
TINY = ["--quick", "--reps", "2", "--tasks", "30", "--tree-tasks", "60", "--plans", "6",
        "--plan-tasks", "4", "--create-plans", "3", "--logs", "30", "--page-size", "7",
        "--redact-mb", "0.02", "--files", "12", "--max-open", "4", "--baseline-calls", "10"]


def test_quick_bench_writes_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(BENCH), *TINY, "--out", str(out), "--root", str(work)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert sorted(doc["workloads"]) == WORKLOADS
    for key in WORKLOADS:
        assert doc["workloads"][key]["metrics"], f"{key} measured nothing"
    metrics = {k: v for w in doc["workloads"].values() for k, v in w["metrics"].items()}
    # Side by side: the per-call workloads ran on all three implementations, with >= 2 reps.
    for key in ("create_task_tree", "create_task_flat", "update_task", "create_plan"):
        for impl in ("plandb", "floor", "baseline"):
            assert len(metrics[key][impl]["reps"]) == 2, (key, impl)
    w7 = doc["workloads"]["W7"]["info"]
    assert w7["secrets_leaked"] == 0
    assert w7["clean_payloads_unchanged"] == w7["clean_payloads"] > 0
    w8 = doc["workloads"]["W8"]["info"]
    assert w8["plan_files"] == 12
    assert w8["fds_peak_extra"] <= w8["fds_bound"]
    assert w8["inspect_files"] >= 12
    # The table printed to stdout names every workload, and the work folder was kept.
    for key in WORKLOADS:
        assert key in proc.stdout
    assert (work / "w8" / "plans").is_dir()


def test_bench_refuses_unknown_workload(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--only", "W9"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "W9" in proc.stderr
