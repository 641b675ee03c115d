"""The reliability suite's driving code, shared by the quick tests (``make test``) and the long
run (``scripts/stress.py``, ``make stress``): the same functions, different counts.

- `acklog`:   the append-only ack-log format workers write (one JSON line per record).
- `checks`:   integrity of every file, table dumps, registry <-> file consistency, reconcile.
- `legacy`:   legacy-shaped plan files (the old planner's format) for upgrade-under-kill runs.
- `load`:     concurrent load: processes x threads against one root, then verify every ack.
- `kills`:    a child runs a scripted mix and is SIGKILLed at random points, many times.
- `hostile`:  hostile-input strategies and the "succeeds or typed error, changes nothing" check.
- `worker.py`, `kill_child.py`: the entry points of the child processes.
"""
