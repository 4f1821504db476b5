"""Database access: one engine per URL, sessions, and the automatic upgrade on first use."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from lab.errors import ConfigError, DatabaseUnavailable

__all__ = ["get_engine", "session_scope", "redact_url", "connect"]

_engines: dict[str, Engine] = {}


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn) -> None:
    """``write_lock=True`` starts with BEGIN IMMEDIATE: read-then-write transactions
    (activation, cycles) take the write lock up front instead of failing to upgrade."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write_lock") else "BEGIN")


def _json_dumps(value: Any) -> str:
    """JSON columns hold NaN and infinities as null, on every backend: PostgreSQL's JSON has
    no such tokens (a profit factor without a losing trade is +inf, an undefined figure NaN),
    and SQLite's text would hold what PostgreSQL refuses."""
    return json.dumps(_finite(value), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


_SUPPORTED_URLS = ("SQLite (sqlite:///PATH) and PostgreSQL via psycopg "
                  "(postgresql+psycopg://USER:PASSWORD@HOST[:PORT]/DATABASE)")


def get_engine(url: str) -> Engine:
    """A shared engine for ``url``; SQLite gets WAL and a busy timeout for concurrent writers.

    A URL SQLAlchemy cannot use (malformed, an unknown dialect, a driver not installed) is a
    ConfigError naming LAB_DATABASE_URL, where every URL but the embedded default comes from."""
    engine = _engines.get(url)
    if engine is None:
        try:
            engine = _create_engine(url)
        except NoSuchModuleError:
            raise _unusable_url(f"{redact_url(url)}: no SQLAlchemy dialect {make_url(url).drivername!r}") from None
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise _unusable_url("is not a database URL") from None  # unparsed, it could not hide a password
        except ImportError as exc:
            raise _unusable_url(f"{redact_url(url)}: its driver {exc.name} is not installed") from None
        _engines[url] = engine
    return engine


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, json_serializer=_json_dumps)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10}, json_serializer=_json_dumps)


def _unusable_url(problem: str) -> ConfigError:
    return ConfigError([f"LAB_DATABASE_URL {problem}; supported: {_SUPPORTED_URLS}"])


def connect(url: str, *, upgrade: bool = True) -> Engine:
    """Engine for ``url`` after checking it answers; upgrades the schema to head on first use."""
    engine = get_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot reach database {redact_url(url)}: {reason}") from None
    if upgrade:
        from lab.db.migrate import upgrade_to_head

        upgrade_to_head(engine)
    return engine


@contextmanager
def session_scope(engine: Engine, *, write_lock: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    ``write_lock`` serializes read-then-write transactions on SQLite (PostgreSQL uses
    row locks, ``SELECT ... FOR UPDATE``, for the same purpose).
    """
    bind = engine.execution_options(write_lock=True) if write_lock else engine
    session = sessionmaker(bind, expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
