"""Out-of-sample scores of a fold: model quality and the return of trading the predictions.

Trading rule used for scoring (long-only, like every strategy's ``side="buy"``): hold a
position over the label horizon when P(up) > 0.5 (classification) or the predicted return
exceeds the round-trip cost (regression). Each trade earns its realised forward return
minus fees and slippage on entry and exit. To keep Sharpe statistics honest the trades are
grouped into holding periods that overlap for no symbol (``holding_periods``), so one
observation is one period's equal-weighted portfolio return.

The deflated Sharpe ratio (Bailey & Lopez de Prado, 2014) is the probability that the true
Sharpe exceeds the best Sharpe one would expect from ``n_trials`` unskilled trials.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["classification_scores", "regression_scores", "holding_periods", "period_returns", "sharpe_ratio",
           "deflated_sharpe_ratio", "expected_max_sharpe", "label_payoff"]

_EULER_GAMMA = 0.5772156649015329


def label_payoff(y: np.ndarray, forward_return: np.ndarray) -> dict[str, float]:
    """The payoff of a classifier's two outcomes on the rows it was fitted on: ``win``, the
    mean forward return (the price's, over the label horizon) of the class-1 rows, and
    ``loss``, that of the class-0 rows.

    The signal engine prices a trade's expected value and Kelly odds at these: a model's
    probability is of its label's event (for a direction label "the close is higher after h
    bars", not "the take-profit is hit before the stop"), so only the returns that event
    came with on its own training rows say what a win and a loss are worth."""
    y, forward_return = np.asarray(y, dtype=float), np.asarray(forward_return, dtype=float)
    if y.shape != forward_return.shape:
        raise ValueError(f"label and forward return differ in length: {y.shape} vs {forward_return.shape}")
    if not np.isfinite(forward_return).all():
        raise ValueError("forward returns must be finite to measure the payoff")
    wins, losses = y == 1, y == 0
    if not (wins | losses).all() or not wins.any() or not losses.any():
        raise ValueError("the payoff needs 0/1 labels with rows of both classes")
    return {"win": float(forward_return[wins].mean()), "loss": float(forward_return[losses].mean())}


def classification_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC (Mann-Whitney), log loss and accuracy at 0.5."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives and negatives:
        ranks = stats.rankdata(p)
        auc = (ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    else:
        auc = float("nan")  # undefined on a one-class test window
    logloss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return {"auc": float(auc), "logloss": float(logloss), "accuracy": float(np.mean((p > 0.5) == (y == 1)))}


def regression_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    rmse = math.sqrt(float(np.mean((y - pred) ** 2)))
    ic = float(stats.spearmanr(pred, y).statistic) if np.ptp(pred) > 0 and np.ptp(y) > 0 else 0.0
    return {"rmse": rmse, "ic": ic}


def holding_periods(symbol: np.ndarray, timestamp: np.ndarray, label_end: np.ndarray) -> np.ndarray:
    """The holding period each row opens (0, 1, ...), or -1 for a row inside one.

    A period starts at a bar: every symbol opens it at its first row at or after that bar
    and holds to the end of that row's label; the next period starts at the first bar at or
    after the last of those ends. Following each row's own label end (not a count of bars of
    the combined calendar) keeps a symbol's holdings apart whatever its calendar: a stock's
    ten bars beside crypto's ten days, or ten bars across a gap in its data.
    """
    period = np.full(len(timestamp), -1)
    bars, bar = np.unique(timestamp, return_inverse=True)
    codes, names = pd.factorize(np.asarray(symbol))
    key = codes * len(bars) + bar  # sorts by symbol, then time
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.arange(len(names)) * len(bars)  # the key of each symbol's bar 0
    start, number = 0, 0
    while start < len(bars):
        first = np.searchsorted(key, starts + start)  # each symbol's first row at or after ``start``
        present = first < len(key)
        present[present] &= key[first[present]] // len(bars) == np.flatnonzero(present)
        if not present.any():
            break
        opening = order[first[present]]
        period[opening] = number
        start = max(int(np.searchsorted(bars, label_end[opening].max())), start + 1)
        number += 1
    return period


def period_returns(period: np.ndarray, take: np.ndarray, forward_return: np.ndarray, cost: float) -> np.ndarray:
    """Equal-weighted after-cost return of each holding period.

    ``period`` is the period each row opens (-1: none, see ``holding_periods``), ``take``
    whether the row is traded, ``cost`` the round-trip cost as a fraction. A period with no
    trade earns 0 (cash).
    """
    opens = period >= 0
    n = int(period.max()) + 1 if opens.any() else 0
    net = np.where(take[opens], forward_return[opens] - cost, 0.0)
    gross = np.bincount(period[opens], weights=net, minlength=n)
    count = np.bincount(period[opens], weights=take[opens].astype(float), minlength=n)
    return np.divide(gross, count, out=np.zeros(n), where=count > 0)


def sharpe_ratio(returns: np.ndarray) -> float:
    """Per-period Sharpe (mean / std, no annualisation); 0 when there is no variation."""
    returns = np.asarray(returns, dtype=float)
    if returns.size < 2:
        return 0.0
    std = returns.std(ddof=1)
    return float(returns.mean() / std) if std > 1e-12 else 0.0


def expected_max_sharpe(trial_sharpes: np.ndarray, n_trials: int) -> float:
    """E[max SR] of ``n_trials`` skill-less trials whose Sharpes vary like ``trial_sharpes``."""
    if n_trials < 2:
        return 0.0
    sharpes = np.asarray(trial_sharpes, dtype=float)
    sharpes = sharpes[np.isfinite(sharpes)]
    spread = float(sharpes.std(ddof=1)) if sharpes.size > 1 else 0.0
    z = stats.norm.ppf
    return spread * ((1 - _EULER_GAMMA) * z(1 - 1 / n_trials) + _EULER_GAMMA * z(1 - 1 / (n_trials * math.e)))


def deflated_sharpe_ratio(returns: np.ndarray, trial_sharpes: np.ndarray, n_trials: int) -> float:
    """P(true SR > E[max SR under the null]), adjusting for skew, kurtosis and track length."""
    returns = np.asarray(returns, dtype=float)
    t = returns.size
    if t < 3:
        return 0.0
    sr = sharpe_ratio(returns)
    skew = float(stats.skew(returns)) if returns.std() > 1e-12 else 0.0
    kurt = float(stats.kurtosis(returns, fisher=False)) if returns.std() > 1e-12 else 3.0
    denominator = 1 - skew * sr + (kurt - 1) / 4 * sr**2
    if denominator <= 0:
        return 0.0
    sr0 = expected_max_sharpe(trial_sharpes, n_trials)
    return float(stats.norm.cdf((sr - sr0) * math.sqrt(t - 1) / math.sqrt(denominator)))
