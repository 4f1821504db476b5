"""Named locks between processes that share a database, held for a block of work or for
one transaction.

``try_exclusive`` -- PostgreSQL: a session advisory lock on a connection kept for the block.
SQLite: a lock file beside the database file (every process using it runs on this machine);
an in-memory database is private to its process, so a lock in the process does. Each kind
ends with the process that holds it, so a killed holder leaves nothing to clean up.

``lock_for_transaction`` -- PostgreSQL: a transaction-level advisory lock, waited for and
released by the commit or rollback. SQLite needs none: a writing transaction (``BEGIN
IMMEDIATE``) already holds the whole database.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import Connection, Engine, text

__all__ = ["try_exclusive", "lock_for_transaction"]

_in_process: dict[tuple[str, str], threading.Lock] = {}
_registry = threading.Lock()


@contextmanager
def try_exclusive(engine: Engine, name: str) -> Iterator[bool]:
    """Take the lock ``name`` on ``engine``'s database if no one holds it, without waiting;
    yields whether it was taken (and holds it to the end of the block)."""
    digest = _digest(name)
    if engine.dialect.name == "postgresql":
        with _advisory(engine, int.from_bytes(digest, "big", signed=True)) as taken:
            yield taken
        return
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        with _local(str(engine.url), name) as taken:
            yield taken
        return
    path = Path(database)
    lock = FileLock(path.with_name(f"{path.name}.{digest.hex()}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def lock_for_transaction(conn: Connection, name: str) -> None:
    """Wait for the lock ``name`` and hold it until ``conn``'s transaction ends (see the module doc)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("select pg_advisory_xact_lock(:key)"),
                     {"key": int.from_bytes(_digest(name), "big", signed=True)})


def _digest(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=8).digest()


@contextmanager
def _advisory(engine: Engine, key: int) -> Iterator[bool]:
    with engine.connect() as conn:
        taken = conn.execute(text("select pg_try_advisory_lock(:key)"), {"key": key}).scalar_one()
        conn.commit()  # the lock belongs to the session: no transaction stays open while it is held
        try:
            yield bool(taken)
        finally:
            if taken:
                conn.execute(text("select pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()


@contextmanager
def _local(url: str, name: str) -> Iterator[bool]:
    with _registry:
        lock = _in_process.setdefault((url, name), threading.Lock())
    taken = lock.acquire(blocking=False)
    try:
        yield taken
    finally:
        if taken:
            lock.release()
