"""Universe runs: Ray equals serial exactly, the Parquet cache, per-symbol problem reports,
training frames and the indicators table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from benchmarks.backtest import load
from lab.db.models import Indicator
from lab.errors import DataError
from lab.features import (
    compute_features,
    compute_universe_features,
    create_training_data,
    get_feature_set,
    make_label,
    store_indicators,
)
from lab.strategy import Label
from tests.test_features_support import random_bars, universe


@pytest.mark.parametrize("name", ["technical@1", "value@1", "pairs@1"])
def test_ray_results_equal_the_serial_computation_exactly(ray_session: None, name: str) -> None:
    bars = universe(20 if name != "pairs@1" else 6, 260)
    bench = random_bars(260, seed=99)
    facts = pd.DataFrame({"symbol": ["S000", "S001"], "known_at": pd.to_datetime(["2015-03-01"] * 2, utc=True),
                          "pe_ratio": [10.0, 20.0], "pb_ratio": [1.0, 2.0], "market_cap": [1e9, 2e9],
                          "sector": ["Energy", "Utilities"]})
    on_ray = compute_universe_features(bars, name, benchmark=bench, fundamentals=facts, use_ray=True)
    serial = compute_universe_features(bars, name, benchmark=bench, fundamentals=facts, use_ray=False)
    assert list(on_ray) == list(serial) and len(on_ray) == (15 if name == "pairs@1" else 20)
    for key in serial:
        pd.testing.assert_frame_equal(on_ray[key], serial[key], check_exact=True)
    first = next(iter(bars))
    if name != "pairs@1":
        pd.testing.assert_frame_equal(serial[first], compute_features(bars[first], name, benchmark=bench,
                                                                      fundamentals=facts[facts.symbol == first]))


@pytest.mark.parametrize("store_bytes", [0.0, 1e12], ids=["copied-out", "in-the-object-store"])
def test_many_batches_a_worker_equal_the_serial_computation_and_every_frame_is_read_only(
        ray_session: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store_bytes: float) -> None:
    """More batches than workers, so a worker computes its next batch (into the block it keeps)
    while the driver still holds the previous result; whether the frames stay in the object
    store or are copied out, they equal the serial ones. No path hands out a writable frame."""
    from lab.features import _universe

    monkeypatch.setattr(_universe, "MAX_BATCH_BYTES", 1)
    monkeypatch.setattr(_universe, "MIN_BATCH", 4)
    monkeypatch.setattr(_universe, "_local_store_bytes", lambda: store_bytes)
    bars = universe(40, 260)
    on_ray = compute_universe_features(bars, "technical@1", use_ray=True)
    serial = compute_universe_features(bars, "technical@1", use_ray=False, cache_dir=tmp_path)
    cached = compute_universe_features(bars, "technical@1", use_ray=False, cache_dir=tmp_path)
    assert len(cached.report.cached) == 40
    for result in (on_ray, serial, cached):
        assert list(result) == list(bars)
        for key, frame in result.items():
            pd.testing.assert_frame_equal(frame, serial[key], check_exact=True)
            with pytest.raises(ValueError, match="read-only"):
                frame.iloc[0, 0] = 1.0


def test_unchanged_symbols_come_from_the_cache_and_a_changed_bar_recomputes_only_its_symbol(tmp_path: Path) -> None:
    bars = universe(5, 260)
    first = compute_universe_features(bars, "momentum@1", cache_dir=tmp_path, use_ray=False)
    assert sorted(first.report.computed) == sorted(bars) and first.report.cached == []
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")}
    assert len(files) == 5

    warm = compute_universe_features(bars, "momentum@1", cache_dir=tmp_path, use_ray=False)
    assert warm.report.computed == [] and sorted(warm.report.cached) == sorted(bars)
    for symbol in bars:
        pd.testing.assert_frame_equal(warm[symbol], first[symbol], check_exact=True, check_freq=False)

    bars["S002"] = bars["S002"].copy()
    bars["S002"].iloc[-1, 3] *= 1.01
    changed = compute_universe_features(bars, "momentum@1", cache_dir=tmp_path, use_ray=False)
    assert changed.report.computed == ["S002"]
    assert changed["S002"]["ret_1"].iloc[-1] != first["S002"]["ret_1"].iloc[-1]
    now = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")}
    assert len(now) == 5 and {p: t for p, t in now.items() if "S002" not in str(p)} == \
        {p: t for p, t in files.items() if "S002" not in str(p)}


def test_a_damaged_cache_file_is_computed_again_and_replaced(tmp_path: Path) -> None:
    bars = universe(3, 260)
    first = compute_universe_features(bars, "momentum@1", cache_dir=tmp_path, use_ray=False)
    damaged = next(p for p in tmp_path.rglob("*.parquet") if "S001" in str(p))
    damaged.write_bytes(damaged.read_bytes()[:100])
    again = compute_universe_features(bars, "momentum@1", cache_dir=tmp_path, use_ray=False)
    assert again.report.computed == ["S001"] and sorted(again.report.cached) == ["S000", "S002"]
    pd.testing.assert_frame_equal(again["S001"], first["S001"], check_exact=True, check_freq=False)
    assert compute_universe_features(bars, "momentum@1", cache_dir=tmp_path, use_ray=False).report.computed == []


def test_the_cache_is_keyed_by_the_feature_set_and_the_benchmark(tmp_path: Path) -> None:
    bars = universe(2, 100)
    compute_universe_features(bars, "momentum@1", cache_dir=tmp_path, use_ray=False)
    other_set = compute_universe_features(bars, "breakout@1", cache_dir=tmp_path, use_ray=False)
    with_bench = compute_universe_features(bars, "momentum@1", benchmark=random_bars(100, seed=5),
                                           cache_dir=tmp_path, use_ray=False)
    assert len(other_set.report.computed) == 2 and len(with_bench.report.computed) == 2


def test_bad_symbols_are_reported_and_never_stop_the_universe(ray_session: None, tmp_path: Path) -> None:
    good = random_bars(260, seed=1)
    gappy = pd.concat([good.iloc[:100], good.iloc[130:]])
    nan_volume = good.assign(volume=np.where(np.arange(260) % 50 == 0, np.nan, good["volume"]))
    bars = {
        "GOOD": good, "SHORT": random_bars(30, seed=2), "FLAT": good.assign(open=5.0, high=5.0, low=5.0, close=5.0),
        "GAPS": gappy, "NANVOL": nan_volume, "BROKEN": good.drop(columns="volume"),
    }
    bench = random_bars(260, seed=3).iloc[:200]
    result = compute_universe_features(bars, "momentum@1", benchmark=bench, cache_dir=tmp_path)
    report = result.report
    assert set(result) == {"GOOD", "SHORT", "FLAT", "GAPS", "NANVOL"}
    assert report.failed.keys() == {"BROKEN"} and "missing column(s) volume" in report.failed["BROKEN"]
    assert any("too little history" in p for p in report.problems["SHORT"])
    assert any("constant price" in p for p in report.problems["FLAT"])
    assert any("1 gap of more than 2 missing NYSE sessions" in p for p in report.problems["GAPS"])
    assert any("missing volume" in p for p in report.problems["NANVOL"])
    assert any("benchmark missing for" in p for p in report.problems["GOOD"])
    assert set(report.affected) == set(bars)
    warm = compute_universe_features(bars, "momentum@1", benchmark=bench, cache_dir=tmp_path)
    assert warm.report.problems == report.problems


def test_a_stock_gap_is_missing_nyse_sessions_not_calendar_days(shared_data: Path) -> None:
    """The NYSE closed for four sessions after 2001-09-11 (seven days without a bar, no
    missing session); a week of a stock's own sessions missing is a gap."""
    ko = load("KO", shared_data / "stocks").loc["2001-01-01":"2002-12-31"]
    holey = ko.drop(ko.loc["2002-03-04":"2002-03-08"].index)
    report = compute_universe_features({"KO": ko, "HOLEY": holey}, "technical@1", use_ray=False).report
    assert not [p for p in report.problems.get("KO", []) if "gap" in p]
    assert any("1 gap of more than 2 missing NYSE sessions (largest: 5 sessions)" in p for p in report.problems["HOLEY"])



def test_each_symbol_s_gaps_are_counted_on_its_own_asset_class_calendar(tmp_path: Path) -> None:
    """Crypto trades every day: a coin missing Saturday to Monday has a gap, though one NYSE
    session lies among those days; a stock's weekends are none, three of its sessions are."""
    coin, stock = random_bars(300, seed=1, start="2021-01-01"), random_bars(300, seed=2, start="2021-01-01", freq="B")
    bars = {"BTC": coin, "ETH": coin.drop(pd.date_range("2021-03-06", "2021-03-08", tz="UTC")),
            "AAPL": stock, "IBM": stock.drop(pd.date_range("2021-03-08", "2021-03-10", tz="UTC"))}
    classes = {"BTC": "crypto", "ETH": "crypto", "AAPL": "stocks", "IBM": "stocks"}
    for run in ("cold", "warm"):
        report = compute_universe_features(bars, "technical@1", asset_classes=classes, cache_dir=tmp_path,
                                           use_ray=False).report
        gaps = {s: [p for p in report.problems.get(s, []) if "gap" in p] for s in bars}
        assert gaps == {"BTC": [], "ETH": ["1 gap of more than 2 missing days (largest: 3 days)"], "AAPL": [],
                        "IBM": ["1 gap of more than 2 missing NYSE sessions (largest: 3 sessions)"]}, run


def test_an_unknown_asset_class_is_named() -> None:
    with pytest.raises(DataError, match="BTC: unknown asset class 'coins'.*stocks, crypto"):
        compute_universe_features({"BTC": random_bars(50)}, "technical@1", asset_classes={"BTC": "coins"},
                                  use_ray=False)

def test_progress_is_reported_up_to_the_total(ray_session: None) -> None:
    calls: list[tuple[int, int]] = []
    compute_universe_features(universe(30, 60), "technical@1", progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (30, 30) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_training_data_joins_features_and_labels_and_drops_rows_past_the_data() -> None:
    bars = universe(3, 300)
    label = Label(kind="direction", horizon=5)
    end = bars["S000"].index[249]
    data = create_training_data(list(bars), "technical@1", label, bars["S000"].index[100], end, bars=bars)
    fs = get_feature_set("technical@1")
    assert list(data.columns) == ["symbol", "timestamp", *fs.columns, "label", "label_end", "forward_return"]
    assert len(data) == 3 * (250 - 100 - 5)  # the last 5 bars before ``end`` have no label inside the data
    assert data["label"].notna().all() and data["timestamp"].max() == bars["S000"].index[244]
    one = data[data.symbol == "S001"].set_index("timestamp")
    cut = bars["S001"].loc[:end]
    pd.testing.assert_series_equal(one["label"], make_label(cut, label).loc[one.index], check_names=False)
    assert (one["label_end"].to_numpy() == cut.index[cut.index.get_indexer(one.index) + 5]).all()  # its own bars
    # what the row's position earns over the horizon: the close's return to the label's last bar
    np.testing.assert_allclose(one["forward_return"], (cut["close"].shift(-5) / cut["close"] - 1).loc[one.index])
    pd.testing.assert_frame_equal(one[list(fs.columns)], compute_features(cut, "technical@1").loc[one.index, list(fs.columns)],
                                  check_freq=False, check_names=False)


def test_training_data_for_pairs_names_the_pair() -> None:
    data = create_training_data(["B", "A"], "pairs@1", Label(kind="direction", horizon=10),
                                "2015-01-01", "2016-01-01", bars={"A": random_bars(300, seed=1), "B": random_bars(300, seed=2)})
    assert set(data["symbol"]) == {"A/B"} and data["label"].notna().all()


def test_training_data_names_symbols_without_bars() -> None:
    with pytest.raises(DataError, match="no bars for ZZZ"):
        create_training_data(["ZZZ"], "technical@1", Label(kind="direction"), "2015-01-01", "2016-01-01",
                             bars=universe(1, 50))


def test_store_indicators_writes_the_board_series_idempotently(engine) -> None:
    frame = compute_features(random_bars(80, seed=1), "technical@1")
    written = store_indicators(engine, "AAA", frame)
    assert written == store_indicators(engine, "AAA", frame)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(Indicator)).scalar_one()
        rsi = conn.execute(select(Indicator.value).where(Indicator.name == "rsi_14").order_by(Indicator.ts)).scalars().all()
    assert count == written == int(frame[["sma_20", "sma_50", "bb_upper", "bb_lower", "rsi_14", "macd", "macd_signal"]]
                                   .notna().sum().sum())
    np.testing.assert_allclose(rsi, frame["rsi_14"].dropna().to_numpy())
