"""Named locks between the processes sharing a database: one holder at a time, on SQLite,
PostgreSQL and an in-memory SQLite; a killed holder leaves none behind (``test_cycle``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine

from lab.db.locks import try_exclusive

HOLD = """
import sys, time
from pathlib import Path
from lab.db import get_engine
from lab.db.locks import try_exclusive

with try_exclusive(get_engine(sys.argv[1]), "books:paper") as taken:
    Path(sys.argv[2]).write_text(str(taken))
    time.sleep(600)
"""


def test_a_lock_another_process_holds_is_not_taken_until_it_ends(engine, tmp_path):
    marker = tmp_path / "holding"
    url = engine.url.render_as_string(hide_password=False)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url, str(marker)], env={**os.environ})
    try:
        while not marker.exists():
            assert holder.poll() is None, "the holder ended before taking the lock"
            time.sleep(0.05)
        assert marker.read_text() == "True"
        with try_exclusive(engine, "books:paper") as taken:
            assert not taken
        with try_exclusive(engine, "books:other") as taken:
            assert taken
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with try_exclusive(engine, "books:paper") as taken:
        assert taken


def test_a_lock_is_released_at_the_end_of_its_block(engine):
    with try_exclusive(engine, "books:paper") as first:
        with try_exclusive(engine, "books:paper") as second:
            assert (first, second) == (True, False)
    with try_exclusive(engine, "books:paper") as again:
        assert again


def test_an_in_memory_database_locks_within_its_process():
    engine = create_engine("sqlite://")
    with try_exclusive(engine, "books:paper") as first, try_exclusive(engine, "books:paper") as second:
        assert (first, second) == (True, False)
    with try_exclusive(engine, "books:paper") as again:
        assert again


@pytest.mark.parametrize("name", ["", "books:a/b c", "x" * 500])
def test_any_name_makes_a_lock(engine, name):
    with try_exclusive(engine, name) as taken:
        assert taken
