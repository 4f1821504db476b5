"""Shared fixtures: real SQLite and PostgreSQL, one Ray instance per session, a lab home.

PostgreSQL comes from ``LAB_TEST_PG_URL`` (``make test`` starts a server and sets it). Each
test that asks for ``pg_url`` gets a fresh database on that server. Without a server the
PostgreSQL variants skip with the reason, except under ``LAB_REQUIRE_SERVICES=1`` (CI),
where they fail.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REQUIRE_SERVICES = os.environ.get("LAB_REQUIRE_SERVICES") == "1"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def missing_service(reason: str) -> None:
    """Skip (a developer's machine) or fail (CI) when a real service is not available."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def lab_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own LAB_HOME and no inherited database or Ray address."""
    home = tmp_path / "lab-home"
    monkeypatch.setenv("LAB_HOME", str(home))
    monkeypatch.delenv("LAB_DATABASE_URL", raising=False)
    monkeypatch.setenv("LAB_CONFIG", str(Path(__file__).resolve().parents[1] / "config" / "trading.json"))
    return home


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lab.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (dropped afterwards)."""
    base = os.environ.get("LAB_TEST_PG_URL")
    if not base:
        missing_service("PostgreSQL not available (LAB_TEST_PG_URL is unset; run `make test`)")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"lab_t_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any connection problem means the service is unavailable
        admin.dispose()
        missing_service(f"PostgreSQL at LAB_TEST_PG_URL not reachable: {exc}")
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    yield url
    from lab.db import _engines

    engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Both real databases: the test runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def engine(db_url: str):
    """A migrated engine on each database."""
    from lab.db import connect

    return connect(db_url)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole session (it takes seconds to start here)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, object_store_memory=300 * 1024**2,
                 include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        missing_service("the prometheus binary is not installed (Debian package `prometheus`)")
    return path  # type: ignore[return-value]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real OHLCV); tests that need it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real temporary Prefect server for the session; yields its API URL."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()
