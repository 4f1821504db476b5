"""Fold scores and the (deflated) Sharpe ratio."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lab.models import deflated_sharpe_ratio, sharpe_ratio
from lab.models.scoring import classification_scores, expected_max_sharpe, period_returns


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


def test_period_returns_use_non_overlapping_holds_and_pay_costs():
    bar = np.array([0, 0, 1, 2, 2, 3, 4, 4])
    take = np.array([True, True, True, True, False, True, False, False])
    forward = np.array([0.02, 0.04, 9.0, -0.01, 5.0, 9.0, 0.5, 0.5])
    # horizon 2: periods start at bars 0, 2, 4; bar 4 has no trade (cash)
    np.testing.assert_allclose(period_returns(bar, take, forward, 2, 0.001), [0.029, -0.011, 0.0])


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
