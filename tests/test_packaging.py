"""An installed plandb finds its schemas without the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_ships_schemas_and_uses_them(tmp_path):
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    wheel = next(out.glob("plandb-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    for sql in (REPO / "schemas").rglob("*.sql"):
        assert f"plandb/schemas/{sql.relative_to(REPO / 'schemas').as_posix()}" in names
    # Run from an unrelated folder with only the unpacked wheel on the path.
    probe = (
        "import plandb, plandb.schema as s, tempfile;"
        "print(s.schemas_dir());"
        "r = plandb.PlanRepository(tempfile.mkdtemp()); p = r.create_plan('x');"
        "r.create_task(p.id, name='t'); print(len(r.get_plan_tree(p.id))); r.close()"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr
    where, count = res.stdout.split()
    assert Path(where) == tmp_path / "site" / "plandb" / "schemas"
    assert count == "1"
