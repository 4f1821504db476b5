"""Fold scores and the (deflated) Sharpe ratio."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from benchmarks.backtest import load
from lab.features import labelled_rows
from lab.models import deflated_sharpe_ratio, sharpe_ratio
from lab.models.scoring import (
    classification_scores,
    expected_max_sharpe,
    holding_periods,
    label_payoff,
    period_returns,
)
from lab.strategy import get_strategy


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0.01, 0.99)), min_size=2, max_size=40))
def test_auc_is_the_share_of_correctly_ordered_pairs(pairs):
    y = np.array([float(label) for label, _ in pairs])
    p = np.array([prob for _, prob in pairs])
    pos, neg = p[y == 1], p[y == 0]
    if not pos.size or not neg.size:
        assert math.isnan(classification_scores(y, p)["auc"])
        return
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    assert abs(classification_scores(y, p)["auc"] - brute) < 1e-12


def test_period_returns_average_each_periods_trades_and_pay_costs():
    period = np.array([0, 0, -1, 1, 1, -1, 2, 2])
    take = np.array([True, True, True, True, False, True, False, False])
    forward = np.array([0.02, 0.04, 9.0, -0.01, 5.0, 9.0, 0.5, 0.5])
    # rows inside a holding (-1) open nothing; period 2 has no trade (cash)
    np.testing.assert_allclose(period_returns(period, take, forward, 0.001), [0.029, -0.011, 0.0])


def test_a_holding_period_lasts_until_every_symbols_label_has_ended():
    day = pd.date_range("2024-01-01", periods=12, freq="D", tz="UTC")
    a = [(day[i], day[i + 2]) for i in range(6)]  # every day, labels two bars ahead
    b = [(day[0], day[4]), (day[3], day[8]), (day[4], day[9]), (day[8], day[10])]  # gaps: two bars reach further
    stamps, ends = (pd.DatetimeIndex([row[k] for row in a + b]).asi8 for k in (0, 1))
    period = holding_periods(np.array(["A"] * 6 + ["B"] * 4), stamps, ends)
    # period 0 opens at day 0 and runs to B's label end, day 4; period 1 runs past the data
    np.testing.assert_array_equal(period, [0, -1, -1, -1, 1, -1] + [0, -1, 1, -1])


def test_no_symbols_holdings_overlap_when_a_stock_is_scored_beside_crypto(shared_data):
    """Ten bars of a stock are two weeks, ten of the combined calendar ten days."""
    raw = pd.read_csv(shared_data / "crypto" / "BTC-USD.csv", parse_dates=["datetime"]).set_index("datetime")
    bars = {"AAPL": load("AAPL", shared_data / "stocks").loc["2015":"2021"],
            "BTC": raw.set_axis(raw.index.tz_localize("UTC")).loc["2015":"2021"]}
    momentum = get_strategy("momentum")
    rows = labelled_rows(bars, momentum.feature_set, momentum.label).dropna(subset=["label"])
    stamps, ends = (pd.DatetimeIndex(rows[c]).asi8 for c in ("timestamp", "label_end"))
    opened = rows[holding_periods(rows["symbol"].to_numpy(), stamps, ends) >= 0]
    for _, holdings in opened.groupby("symbol"):
        assert (holdings["timestamp"].iloc[1:].to_numpy() >= holdings["label_end"].iloc[:-1].to_numpy()).all()
    assert len(opened[opened.symbol == "AAPL"]) > 0.9 * len(rows[rows.symbol == "AAPL"]) / 10  # none needlessly skipped


def test_deflated_sharpe_with_one_trial_is_the_probabilistic_sharpe_ratio():
    returns = np.random.default_rng(1).normal(0.01, 0.02, 200)
    sr, t = sharpe_ratio(returns), returns.size
    skew, kurt = stats.skew(returns), stats.kurtosis(returns, fisher=False)
    psr = stats.norm.cdf(sr * math.sqrt(t - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2))
    assert abs(deflated_sharpe_ratio(returns, [sr], 1) - psr) < 1e-12


def test_more_trials_deflate_the_same_track_record():
    rng = np.random.default_rng(2)
    returns = rng.normal(0.004, 0.02, 150)
    trial_sharpes = rng.normal(0.0, 0.1, 100)
    values = [deflated_sharpe_ratio(returns, trial_sharpes, n) for n in (1, 10, 100, 1000)]
    assert values == sorted(values, reverse=True) and values[0] > values[-1]


def test_expected_max_sharpe_matches_the_paper_formula():
    # Bailey & Lopez de Prado (2014), eq. for E[max SR]: sqrt(V) * ((1-g) Z(1-1/N) + g Z(1-1/(N e)))
    sharpes = np.array([0.1, -0.2, 0.3, 0.0, 0.05])
    gamma, n = 0.5772156649015329, 50
    expected = sharpes.std(ddof=1) * ((1 - gamma) * stats.norm.ppf(1 - 1 / n)
                                      + gamma * stats.norm.ppf(1 - 1 / (n * math.e)))
    assert abs(expected_max_sharpe(sharpes, n) - expected) < 1e-12


def test_the_payoff_is_the_mean_forward_return_of_each_class():
    y = np.array([1, 0, 1, 0, 1])
    forward = np.array([0.04, -0.02, 0.06, 0.00, 0.02])
    assert label_payoff(y, forward) == {"win": pytest.approx(0.04), "loss": pytest.approx(-0.01)}


@pytest.mark.parametrize("y", [[1, 1, 1], [0.5, 0, 1]])
def test_the_payoff_needs_both_classes_of_a_binary_label(y):
    with pytest.raises(ValueError, match="both classes"):
        label_payoff(np.array(y), np.zeros(3))
