"""Idempotent bulk storage on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
from sqlalchemy import func, select

from lab.bars import load_bars
from lab.db import session_scope
from lab.db.models import PriceBar, PriceCorrection
from lab.errors import DataError
from universe.store import UpsertResult, upsert_bars
from universe.synthetic import synthetic_market


def market(n_symbols=3, n_days=40, seed=3):
    return synthetic_market(n_symbols, n_days, seed, start="2020-01-02")


def test_upsert_stores_every_bar_once_and_a_rerun_changes_nothing(engine):
    frame = market()
    first = upsert_bars(engine, frame)
    before = load_bars(engine)
    second = upsert_bars(engine, frame)
    assert (first.inserted, second.inserted, second.updated, second.unchanged) == (120, 0, 0, 120)
    pd.testing.assert_frame_equal(before, load_bars(engine))


def test_stored_bars_read_back_exactly(engine):
    frame = market(1, 10)
    upsert_bars(engine, frame)
    stored = load_bars(engine)
    assert list(stored["ts"]) == list(frame["ts"])
    assert stored["close"].tolist() == frame["close"].tolist()
    assert stored["synthetic"].all() and set(stored["source"]) == {"synthetic"}


def test_a_corrected_bar_replaces_the_old_one_and_is_logged(engine):
    frame = market(1, 10)
    upsert_bars(engine, frame)
    corrected = frame.iloc[[4]].assign(close=frame["close"].iloc[4] * 1.001)
    corrected["high"] = corrected[["high", "close"]].max(axis=1)
    result = upsert_bars(engine, corrected)
    assert (result.inserted, result.updated) == (0, 1)
    with session_scope(engine) as session:
        log = session.scalars(select(PriceCorrection)).all()
        stored = session.scalar(select(PriceBar.close).where(PriceBar.ts == corrected["ts"].iloc[0]))
    assert len(log) == 1 and log[0].old["close"] == frame["close"].iloc[4]
    assert stored == corrected["close"].iloc[0]


def test_upsert_mixes_new_and_existing_rows(engine):
    frame = market(1, 20)
    upsert_bars(engine, frame.head(15))
    result = upsert_bars(engine, frame.tail(10))
    assert (result.inserted, result.unchanged) == (5, 5)


def test_duplicate_keys_in_one_frame_are_rejected(engine):
    frame = market(1, 5)
    with pytest.raises(DataError, match="duplicate"):
        upsert_bars(engine, pd.concat([frame, frame.tail(1)]))


def test_naive_timestamps_and_missing_columns_are_rejected(engine):
    frame = market(1, 5)
    with pytest.raises(DataError, match="naive"):
        upsert_bars(engine, frame.assign(ts=frame["ts"].dt.tz_localize(None)))
    with pytest.raises(DataError, match="lacks column"):
        upsert_bars(engine, frame.drop(columns=["source"]))


def test_synthetic_market_is_seeded_and_labelled():
    a, b = synthetic_market(4, 50, 11), synthetic_market(4, 50, 11)
    pd.testing.assert_frame_equal(a, b)
    assert a["synthetic"].all() and set(a["source"]) == {"synthetic"}
    assert not a.equals(synthetic_market(4, 50, 12))
    returns = a.pivot(index="ts", columns="symbol", values="close").pct_change().dropna()
    assert returns.corr().to_numpy()[0, 1:].mean() > 0.1  # assets move together


def test_two_upserts_in_one_transaction_both_store(engine):
    frame = market(2, 5)
    with engine.begin() as conn:
        first = upsert_bars(conn, frame[frame["symbol"] == "SYN000"])
        second = upsert_bars(conn, frame[frame["symbol"] == "SYN001"])
    assert (first.inserted, second.inserted) == (5, 5)
    assert len(load_bars(engine)) == 10


def test_a_symbol_longer_than_the_column_is_refused_by_name_on_both_databases(engine):
    frame = market(1, 5).assign(symbol="X" * 33)
    with pytest.raises(DataError, match=f"{'X' * 33}: 33 characters"):
        upsert_bars(engine, frame)
    assert load_bars(engine).empty


def test_two_ingests_correcting_one_symbol_at_once_log_each_correction_once(engine):
    frame = market(1, 5)
    upsert_bars(engine, frame)
    revised = frame.assign(close=frame["close"] * 1.001, high=frame["high"] * 1.001, source="yahoo")
    writer = engine.execution_options(write_lock=True)  # as ingest writes
    second: dict[str, UpsertResult] = {}

    def ingest_again():
        with writer.begin() as conn:
            second["result"] = upsert_bars(conn, revised)

    with writer.connect() as conn, conn.begin():
        first = upsert_bars(conn, revised)
        thread = threading.Thread(target=ingest_again)
        thread.start()
        thread.join(timeout=1.0)  # it reaches the bars while the first is uncommitted
    thread.join()
    assert first == UpsertResult(updated=5) and second["result"] == UpsertResult(unchanged=5)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(PriceCorrection)).scalar_one() == 5
