"""Labels: explicit forward offsets t+1..t+h, NaN where the horizon reaches past the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab.config import load_config
from lab.errors import ConfigError
from lab.features import (
    LABEL_KINDS,
    barrier_outcome,
    compute_features,
    labelled_rows,
    make_label,
    pair_bars,
    pair_forward_return,
)
from lab.strategy import Label, available_strategies
from lab.trading.portfolio import strategy_levels
from tests.test_features_support import random_bars


def _table(close: list[float], high: list[float] | None = None, low: list[float] | None = None) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=len(close), freq="D", tz="UTC")
    return pd.DataFrame({"open": close, "high": high or close, "low": low or close, "close": close,
                         "volume": 1.0}, index=index)


def test_direction_and_magnitude_compare_close_t_with_close_t_plus_h() -> None:
    bars = _table([10, 11, 9, 12, 12])
    direction = make_label(bars, Label(kind="direction", horizon=2))
    magnitude = make_label(bars, Label(kind="magnitude", horizon=2))
    np.testing.assert_array_equal(direction.to_numpy(), [0.0, 1.0, 1.0, np.nan, np.nan])
    np.testing.assert_allclose(magnitude.to_numpy(), [-0.1, 12 / 11 - 1, 12 / 9 - 1, np.nan, np.nan])
    assert direction.name == "label_direction_2"


def test_volatility_marks_a_move_beyond_the_threshold_either_way_within_the_horizon() -> None:
    bars = _table([100, 100, 100, 100, 100, 100], high=[100, 101, 100, 100, 100, 100],
                  low=[100, 100, 100, 94, 100, 100])
    label = make_label(bars, Label(kind="volatility", horizon=2, threshold=0.05))
    np.testing.assert_array_equal(label.to_numpy(), [0.0, 1.0, 1.0, 0.0, np.nan, np.nan])


@pytest.mark.parametrize(("high", "low", "outcome"), [
    ([100, 101, 111, 100], [100, 99, 99, 100], 1.0),    # take-profit on bar 2
    ([100, 101, 111, 100], [100, 94, 99, 100], -1.0),   # stop on bar 1 comes first
    ([100, 111, 100, 100], [100, 94, 100, 100], -1.0),  # both on one bar: the stop
    ([100, 102, 103, 100], [100, 98, 97, 100], 0.0),    # neither: the time limit
])
def test_triple_barrier_reports_the_exit_hit_first(high: list[float], low: list[float], outcome: float) -> None:
    bars = _table([100, 100, 100, 100], high=high, low=low)
    label = Label(kind="triple_barrier", horizon=3, threshold=0.10, stop=0.05)
    assert barrier_outcome(bars, label).iloc[0] == outcome
    assert make_label(bars, label).iloc[0] == float(outcome == 1.0)
    assert make_label(bars, label).iloc[1:].isna().all()


@pytest.mark.parametrize("kind", ["direction", "magnitude", "volatility", "triple_barrier"])
def test_label_is_nan_exactly_where_the_horizon_reaches_past_the_data(kind: str) -> None:
    label = make_label(random_bars(50, seed=2), Label(kind=kind, horizon=7))
    assert label.iloc[:-7].notna().all() and label.iloc[-7:].isna().all()


def test_a_missing_price_inside_the_horizon_gives_nan_not_a_guess() -> None:
    bars = random_bars(30, seed=4)
    bars.iloc[10, bars.columns.get_loc("close")] = np.nan
    label = make_label(bars, Label(kind="magnitude", horizon=3))
    assert label.iloc[7:11].isna().all() and label.iloc[[6, 11]].notna().all()


@pytest.mark.parametrize("kind", LABEL_KINDS)
@pytest.mark.parametrize(("column", "price"), [("high", 0.0), ("low", 0.0), ("low", -1.0), ("low", np.nan)])
def test_a_non_positive_or_missing_high_or_low_inside_the_horizon_gives_nan(kind: str, column: str,
                                                                            price: float) -> None:
    """The bar the features call invalid is no barrier hit either (a low of 0 is no stop-loss)."""
    bars = random_bars(30, seed=4)
    bars.iloc[10, bars.columns.get_loc(column)] = price
    label = Label(kind=kind, horizon=3, threshold=0.10, stop=0.06)
    assert make_label(bars, label).iloc[7:11].isna().all() and make_label(bars, label).iloc[[6, 11]].notna().all()
    assert barrier_outcome(bars, label).iloc[7:11].isna().all()


def test_label_depends_only_on_bars_t_to_t_plus_h() -> None:
    bars = random_bars(60, seed=5)
    changed = bars.copy()
    changed.iloc[40:, :4] *= 2
    for kind in ("direction", "magnitude", "volatility", "triple_barrier"):
        label = Label(kind=kind, horizon=5)
        before, after = make_label(bars, label), make_label(changed, label)
        pd.testing.assert_series_equal(before.iloc[:35], after.iloc[:35])


def _legs(beta: float, n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two closes whose logs move together in ``beta`` (log A = beta log B + noise): a pair
    whose hedge ratio is far from 1, where the price ratio and the hedged spread part ways."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC")
    log_b = np.log(50.0) + np.cumsum(rng.normal(0, 0.02, n))
    log_a = beta * log_b + rng.normal(0, 0.01, n)
    return pd.DataFrame({"close": np.exp(log_a)}, index=index), pd.DataFrame({"close": np.exp(log_b)}, index=index)


def test_a_pairs_label_is_the_direction_of_its_hedged_spread_not_of_the_price_ratio() -> None:
    """The position holds A against beta x A's value in B, so what it earns is the change of
    log A - beta log B; the label of row t is that spread's direction over the horizon, with
    the hedge ratio the features give at t held fixed (known at t), NaN where there is none."""
    bars = pair_bars(*_legs(beta=2.0))
    h = 5
    label = make_label(bars, Label(kind="direction", horizon=h)).to_numpy()
    beta = compute_features(bars, "pairs@1")["hedge_ratio"].to_numpy()[:-h]
    la, lb = np.log(bars["close_a"].to_numpy()), np.log(bars["close_b"].to_numpy())
    hedged_up = (la[h:] - la[:-h]) - beta * (lb[h:] - lb[:-h]) > 0
    ratio_up = la[h:] - lb[h:] > la[:-h] - lb[:-h]
    known = np.isfinite(beta)
    np.testing.assert_array_equal(label[:-h][known], hedged_up[known].astype(float))
    assert np.isnan(label[:-h][~known]).all() and np.isnan(label[-h:]).all()
    assert (hedged_up != ratio_up)[known].mean() > 0.2  # the two readings differ here: the test tells them apart


def test_a_pairs_training_rows_carry_the_return_of_its_hedged_spread() -> None:
    """What a pair model's payoff is measured from: the row's forward return is what the
    position earns (``pair_forward_return``), where its label is known."""
    a, b = _legs(beta=2.0)
    rows = labelled_rows({"AAA": a, "BBB": b}, "pairs@1", Label(kind="direction", horizon=5))
    earned = pair_forward_return(pair_bars(a, b), 5).to_numpy()
    labelled = rows["label"].notna().to_numpy()
    assert labelled.sum() > 100
    np.testing.assert_allclose(rows["forward_return"].to_numpy()[labelled], earned[labelled])
    assert rows["forward_return"][~labelled].isna().all()


@pytest.mark.parametrize("kind", ["magnitude", "volatility", "triple_barrier"])
def test_a_pairs_label_other_than_direction_is_a_clear_error(kind: str) -> None:
    with pytest.raises(ConfigError, match=f"pair.*'{kind}'.*direction"):
        make_label(pair_bars(*_legs(beta=0.5)), Label(kind=kind, horizon=5))


def test_a_bad_label_declaration_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown label kind 'sideways'"):
        make_label(random_bars(20), Label(kind="sideways"))
    with pytest.raises(ConfigError, match="horizon must be >= 1"):
        make_label(random_bars(20), Label(kind="direction", horizon=0))


@pytest.mark.parametrize("name", sorted(n for n, s in available_strategies().items() if s.label.kind == "triple_barrier"))
def test_a_triple_barrier_strategy_learns_the_exits_it_trades(name: str) -> None:
    """Its model's odds are of the take-profit before the stop-loss within the horizon: the
    signal engine prices them at the levels the trade uses (the shipped config included),
    so the two must be the same, or the expected value is of another trade."""
    label = available_strategies()[name].label
    config = load_config(Path(__file__).resolve().parents[1] / "config" / "trading.json")
    assert strategy_levels(config, name) == (label.stop, label.threshold, label.horizon)
