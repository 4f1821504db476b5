"""Walk-forward folds: time order, purging by each row's own label end, embargo, never
training on a label that reads the test window, and a final holdout no tuning row reads."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.backtest import load
from lab.errors import DataError
from lab.features import get_feature_set, labelled_rows
from lab.models import walk_forward_folds, walk_forward_holdout
from lab.models.tuning import prepare_problem
from lab.strategy import get_strategy
from universe.calendars import expected_days


def _rows(calendars: dict[str, pd.DatetimeIndex], horizon: int) -> pd.DataFrame:
    """One row per symbol and bar, its label ending ``horizon`` of the symbol's own bars later."""
    return pd.concat([pd.DataFrame({"symbol": symbol, "timestamp": bars[:-horizon or None], "label_end": bars[horizon:]})
                      for symbol, bars in calendars.items()], ignore_index=True)


def _stamps(days: int, symbols: int, horizon: int = 0) -> pd.DataFrame:
    dates = pd.bdate_range("2020-01-01", periods=days + horizon, tz="UTC")
    return _rows({f"S{s}": dates for s in range(symbols)}, horizon)


@settings(max_examples=60, deadline=None)
@given(days=st.integers(80, 300), symbols=st.integers(1, 4), n_folds=st.integers(1, 6),
       horizon=st.integers(0, 10), embargo=st.integers(0, 10), gaps=st.floats(0.0, 0.3), seed=st.integers(0, 2**16))
def test_no_training_row_label_reads_a_bar_of_its_test_window(days, symbols, n_folds, horizon, embargo, gaps, seed):
    """Whatever each symbol's calendar: a weekday or every-day market, with missing bars."""
    rng = np.random.default_rng(seed)
    calendars = {f"S{s}": pd.date_range("2020-01-01", periods=days, tz="UTC", freq="B" if s % 2 else "D")
                 for s in range(symbols)}
    calendars = {s: bars[rng.uniform(size=bars.size) >= gaps] for s, bars in calendars.items()}
    rows = _rows(calendars, horizon).sample(frac=1.0, random_state=seed)  # any row order
    try:
        folds = walk_forward_folds(rows["symbol"], rows["timestamp"], rows["label_end"], n_folds, embargo)
    except DataError as exc:
        assert "too few" in str(exc) or "no training rows" in str(exc)
        return
    assert len(folds) == n_folds
    for fold in folds:
        assert (rows["label_end"].iloc[fold.train] < fold.test_start).all()
        tested = rows["timestamp"].iloc[fold.test]
        assert (tested >= fold.test_start).all() and (tested <= fold.test_end).all()
        assert np.intersect1d(fold.train, fold.test).size == 0


@settings(max_examples=60, deadline=None)
@given(days=st.integers(80, 300), symbols=st.integers(1, 4), n_folds=st.integers(1, 5),
       horizon=st.integers(0, 10), embargo=st.integers(0, 10), gaps=st.floats(0.0, 0.3), seed=st.integers(0, 2**16))
def test_no_tuning_row_trained_or_scored_reads_a_bar_of_the_holdout(days, symbols, n_folds, horizon, embargo, gaps,
                                                                    seed):
    """What tuning selects on never saw the holdout, so the holdout score of its choice is
    not biased by how many trials it compared."""
    rng = np.random.default_rng(seed)
    calendars = {f"S{s}": pd.date_range("2020-01-01", periods=days, tz="UTC", freq="B" if s % 2 else "D")
                 for s in range(symbols)}
    calendars = {s: bars[rng.uniform(size=bars.size) >= gaps] for s, bars in calendars.items()}
    rows = _rows(calendars, horizon).sample(frac=1.0, random_state=seed)
    try:
        folds, holdout = walk_forward_holdout(rows["symbol"], rows["timestamp"], rows["label_end"], n_folds, embargo)
    except DataError as exc:
        assert "too few" in str(exc) or "no training rows" in str(exc)
        return
    assert len(folds) == n_folds and holdout.test_end == rows["timestamp"].max()
    assert (rows["label_end"].iloc[holdout.train] < holdout.test_start).all()
    for fold in folds:
        assert fold.test_end < holdout.test_start and fold.test.size > 0
        for used in (fold.train, fold.test):
            assert (rows["label_end"].iloc[used] < holdout.test_start).all()
            assert np.intersect1d(used, holdout.test).size == 0


def test_too_little_history_for_the_folds_and_the_holdout_names_the_bars_it_needs():
    rows = _stamps(40, 2, horizon=10)  # 5 windows of 8 bars; a label reads 10 bars ahead
    with pytest.raises(DataError, match=r"40 distinct timestamps are too few for 3 walk-forward folds and a holdout"
                                        r".* more bars than a label reads ahead \(10\), 55 bars in all"):
        walk_forward_holdout(rows["symbol"], rows["timestamp"], rows["label_end"], 3, embargo=10)


@settings(max_examples=40, deadline=None)
@given(days=st.integers(120, 400), n_folds=st.integers(2, 5), horizon=st.integers(0, 5), embargo=st.integers(1, 8))
def test_each_symbol_is_embargoed_for_its_own_bars_after_an_earlier_test_window(days, n_folds, horizon, embargo):
    """A stock tuned beside crypto: ``embargo`` of the stock's NYSE sessions span more days
    than ``embargo`` bars of the combined calendar, on which crypto trades every day."""
    coin = pd.date_range("2021-01-04", periods=days, tz="UTC")
    rows = _rows({"AAPL": expected_days("stocks", coin[0], coin[-1]), "BTC": coin}, horizon)
    folds = walk_forward_folds(rows["symbol"], rows["timestamp"], rows["label_end"], n_folds, embargo)
    for later in folds[1:]:
        embargoed = {i for earlier in folds[: later.index] for _, own in rows.groupby("symbol")
                     for i in own.index[own["timestamp"] > earlier.test_end][:embargo]}
        purged = set(np.flatnonzero(rows["label_end"] >= later.test_start))
        assert set(later.train) == set(range(len(rows))) - purged - embargoed


def test_test_windows_are_consecutive_disjoint_and_cover_the_end_of_history():
    rows = _stamps(100, 3, horizon=5)
    folds = walk_forward_folds(rows["symbol"], rows["timestamp"], rows["label_end"], 4, embargo=2)
    starts = [f.test_start for f in folds]
    assert starts == sorted(starts)
    assert all(a.test_end < b.test_start for a, b in zip(folds, folds[1:], strict=False))
    assert folds[-1].test_end == rows["timestamp"].max()
    assert sum(f.test.size for f in folds) == 4 * (100 // 5) * 3


def test_rows_of_one_day_never_split_across_train_and_test():
    rows = _stamps(50, 5)
    stamps = pd.DatetimeIndex(rows["timestamp"])
    for fold in walk_forward_folds(rows["symbol"], stamps, rows["label_end"], 3, embargo=0):
        assert not set(stamps[fold.train]) & set(stamps[fold.test])


def test_too_little_history_for_the_folds_is_a_clear_error():
    rows = _stamps(12, 2, horizon=5)
    with pytest.raises(DataError, match="too few for 4 walk-forward folds"):
        walk_forward_folds(rows["symbol"], rows["timestamp"], rows["label_end"], 4, embargo=0)


def test_a_label_ending_before_its_own_bar_is_refused():
    rows = _stamps(50, 1, horizon=2)
    with pytest.raises(DataError, match="1 label end.* before their row's timestamp"):
        walk_forward_folds(rows["symbol"], rows["timestamp"], rows["label_end"].where(rows.index != 7, rows["timestamp"][0]), 3)



def test_a_row_without_a_symbol_is_refused():
    rows = _stamps(50, 2, horizon=2)
    with pytest.raises(DataError, match="1 row.* without a symbol"):
        walk_forward_folds(rows["symbol"].where(rows.index != 7), rows["timestamp"], rows["label_end"], 3, embargo=2)

def _coin(shared_data: Path, symbol: str) -> pd.DataFrame:
    raw = pd.read_csv(shared_data / "crypto" / f"{symbol}-USD.csv", parse_dates=["datetime"]).set_index("datetime")
    return raw.set_axis(raw.index.tz_localize("UTC"))


def _purged_train_label_ends(bars: dict[str, pd.DataFrame]) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """(latest label end among a fold's training rows, the fold's test start), fold by fold,
    as tuning cuts them for momentum (a stock and crypto strategy)."""
    momentum = get_strategy("momentum")
    rows = labelled_rows(bars, momentum.feature_set, momentum.label)
    data = rows[rows["label"].notna()].assign(forward_return=0.0).sort_values(["timestamp", "symbol"], ignore_index=True)
    problem = prepare_problem(momentum, data, folds=4, seed=0,
                              features=list(get_feature_set(momentum.feature_set).columns))
    return [(data["label_end"].iloc[fold.train].max(), fold.test_start) for fold in problem.folds]


def test_a_stock_trained_beside_crypto_reads_no_test_bar(shared_data):
    """Ten of a stock's bars are two weeks; ten of the combined calendar (crypto trades
    every day) are ten days: the purge must follow the stock's own calendar."""
    bars = {"AAPL": load("AAPL", shared_data / "stocks").loc["2015":],
            "BTC": _coin(shared_data, "BTC").loc["2015":"2021-04-21"]}
    for last_label_end, test_start in _purged_train_label_ends(bars):
        assert last_label_end < test_start


def test_a_symbol_with_a_gap_in_its_bars_reads_no_test_bar(shared_data):
    """Ten of MSFT's bars across a 40-day hole in its data reach far past ten market days."""
    aapl, msft = (load(s, shared_data / "stocks").loc["2015":] for s in ("AAPL", "MSFT"))
    test_size = len(aapl) // 5
    third_test_start = aapl.index[len(aapl) - 2 * test_size]
    hole = msft.index[(msft.index > third_test_start - pd.Timedelta(days=40)) & (msft.index < third_test_start)]
    for last_label_end, test_start in _purged_train_label_ends({"AAPL": aapl, "MSFT": msft.drop(hole)}):
        assert last_label_end < test_start
