"""Shared fixtures for every plandb test module.

- `db_root`: a fresh DB_ROOT folder under pytest's tmp_path (not created: plandb creates it).
- `config`: a `DatabaseConfig` on `db_root`.
- `repo`: a `PlanRepository` on `config`, closed after the test.
- autouse `no_leaked_connections`: fails a test that leaves an apsw connection open which it
  opened itself (connections opened by wider-scoped fixtures before the test are ignored).
  Mark a test ``@pytest.mark.allow_open_connections`` to opt out.
"""

from __future__ import annotations

import gc
from pathlib import Path

import apsw
import pytest

from plandb.config import DatabaseConfig
from plandb.repository import PlanRepository


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_open_connections: the test may leave apsw connections open")


@pytest.fixture
def db_root(tmp_path: Path) -> Path:
    """Path of a DB_ROOT that does not exist yet (plandb creates the layout)."""
    return tmp_path / "db"


@pytest.fixture
def config(db_root: Path) -> DatabaseConfig:
    return DatabaseConfig(db_root)


@pytest.fixture
def repo(config: DatabaseConfig):
    repository = PlanRepository(config)
    try:
        yield repository
    finally:
        repository.close()


@pytest.fixture(scope="session")
def legacy_template(tmp_path_factory):
    """Both legacy shapes (tests/legacy_fixtures.py: ``flat/`` and ``root/``), built once per
    run. Nothing holds them open; tests copy them and never write to the template itself."""
    import legacy_fixtures as lf

    base = tmp_path_factory.mktemp("legacy-template")
    lf.build_flat_dir(base / "flat")
    lf.build_old_root(base / "root")
    return base


def _open_connections() -> dict[int, apsw.Connection]:
    return {id(c): c for c in apsw.connections()}


@pytest.fixture(autouse=True)
def no_leaked_connections(request: pytest.FixtureRequest):
    """Fail the test if it leaves behind apsw connections it opened (and close them)."""
    before = set(_open_connections())
    yield
    if request.node.get_closest_marker("allow_open_connections"):
        return
    if not any(key not in before for key in _open_connections()):
        return  # the common case: no new connection object exists at all, skip gc
    # Connections only reachable from garbage are not leaks the caller can see; collect them
    # so that what remains is really held open by someone.
    gc.collect()
    leaked = [c for key, c in _open_connections().items() if key not in before]
    if not leaked:
        return
    names = sorted({c.filename or ":memory:" for c in leaked})
    for c in leaked:
        try:
            c.close()
        except apsw.Error:
            pass
    pytest.fail(f"test left {len(leaked)} apsw connection(s) open: {names}", pytrace=False)
