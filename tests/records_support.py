"""Helpers for the records tests: start writer processes, read a root's raw bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

WORKER = Path(__file__).with_name("append_worker.py")


def start_workers(root: Path, mode: str, target: str, count: int, n: int, *,
                  hold: bool = False) -> list:
    """Start `n` append_worker processes (waiting for ROOT/go); with `hold`, each keeps its
    repository open after writing until `stop(root)`."""
    env = dict(os.environ)
    if hold:
        env["APPEND_WORKER_HOLD"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                         env.get("PYTHONPATH", "")])
    return [subprocess.Popen([sys.executable, str(WORKER), str(root), mode, target,
                              str(count), f"w{i}"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
            for i in range(n)]


def go(root: Path) -> None:
    (root / "go").touch()


def all_done(root: Path, n: int) -> bool:
    """Have all `n` held workers finished writing?"""
    return all((root / f"done-w{i}").exists() for i in range(n))


def stop(root: Path) -> None:
    (root / "stop").touch()


def results(procs: list, timeout: float = 120) -> list:
    """Each worker's acknowledged records (asserting it exited cleanly)."""
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        assert p.returncode == 0, stderr.decode()
        out.append(orjson.loads(stdout.decode().strip().splitlines()[-1]))
    return out


def raw_bytes(root: Path) -> bytes:
    """Every byte of every file under `root` (databases, -wal, -shm, backups...)."""
    chunks = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            chunks.append(Path(dirpath, name).read_bytes())
    return b"\n".join(chunks)
