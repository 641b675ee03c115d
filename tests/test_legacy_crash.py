"""A migration killed half-way (SIGKILL of a real child process) is finished by the next run,
with nothing lost and nothing doubled: the rerun's root holds exactly what an uninterrupted
migration of the same legacy files holds (compared with the stdlib sqlite3 module).

Kill points: after a given step completes (through the progress callback), right after a
session file is renamed, inside create_plan (the repository's PLANDB_CRASH_AT hook), between a
plan's creation and its tree write, and inside the one transaction that imports a chat session
with its messages.
PLANDB_STRESS=1 also kills after every single step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import legacy_fixtures as lf
import pytest

from plandb.maintenance.legacy import migrate_existing_databases

CHILD = textwrap.dedent("""
    import os, signal, sys
    from plandb.maintenance import legacy
    from plandb.repository import PlanRepository

    kind, _, arg = os.environ["KILL"].partition(":")

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def after_call(cls, name, n):
        original, calls = getattr(cls, name), [0]
        def patched(self, *a, **k):
            calls[0] += 1
            if calls[0] == n:
                die()
            return original(self, *a, **k)
        setattr(cls, name, patched)

    progress = None
    if kind == "step":
        action, _, n = arg.partition(":")
        seen = [0]
        def progress(done, total, step):
            if step.status == "done" and action in (step.action, "any"):
                seen[0] += 1
                if seen[0] == int(n):
                    die()
    elif kind == "upsert":
        after_call(PlanRepository, "upsert_plan_tree", int(arg))
    elif kind == "chat":
        after_call(PlanRepository, "append_chat_message", int(arg))
    elif kind == "renamed":  # right after a session file got its new name
        real_rename = os.rename
        def rename(src, dst, *a, **k):
            real_rename(src, dst, *a, **k)
            if "session_" in str(dst):
                die()
        os.rename = rename
    legacy.migrate_existing_databases(sys.argv[1], legacy_dir=sys.argv[2], progress=progress)
    sys.exit(3)  # not killed: the kill point was never reached
""")

KILLS = [
    ("step:adopt:2", {}),              # registry and plan_1 adopted, the rest not
    ("renamed:", {}),                  # a session file renamed, nothing after it done
    ("env", {"PLANDB_CRASH_AT": "create:row"}),      # import: registry row 'creating' only
    ("upsert:2", {}),                  # second import created, its tree not yet written
    ("chat:2", {}),                    # inside a chat session's import transaction
]
if os.environ.get("PLANDB_STRESS") == "1":
    KILLS += [
        ("step:rename_session:1", {}),                   # renamed, not yet adopted
        ("step:convert_cache:1", {}),                    # one old root cache rebuilt
        ("env", {"PLANDB_CRASH_AT": "create:renamed"}),  # import: file in place, row creating
        ("step:merge_cache:1", {}),                      # one flat cache merged
    ] + [(f"step:any:{n}", {}) for n in range(1, 60)]


@pytest.fixture(scope="module")
def reference(legacy_template, tmp_path_factory):
    """What an uninterrupted migration of the legacy template produces."""
    work = tmp_path_factory.mktemp("reference")
    shutil.copytree(legacy_template, work, dirs_exist_ok=True)
    report = migrate_existing_databases(work / "root", legacy_dir=work / "flat")
    assert report.ok
    return lf.dump_root(work / "root"), len(report.steps)


@pytest.mark.parametrize("kill,env", KILLS, ids=[k if k != "env" else e["PLANDB_CRASH_AT"]
                                                for k, e in KILLS])
def test_a_killed_migration_is_finished_by_the_next_run(legacy_template, reference, tmp_path,
                                                       kill, env):
    expected, total_steps = reference
    if kill.startswith("step:any:") and int(kill.rsplit(":", 1)[1]) >= total_steps:
        pytest.skip("past the last step")
    shutil.copytree(legacy_template, tmp_path, dirs_exist_ok=True)
    root, flat = tmp_path / "root", tmp_path / "flat"
    child_env = {**os.environ, "KILL": "none:" if kill == "env" else kill, **env}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), str(flat)], env=child_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, (proc.returncode, proc.stderr[-2000:])

    report = migrate_existing_databases(root, legacy_dir=flat)
    failed = [(s.action, s.target, s.error) for s in report.steps if s.status != "done"]
    assert failed == []
    assert lf.dump_root(root) == expected
    again = migrate_existing_databases(root, legacy_dir=flat)
    assert again.nothing_to_do, [(s.action, s.target) for s in again.steps]
