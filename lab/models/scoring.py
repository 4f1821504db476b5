"""Out-of-sample scores of a fold: model quality and the return of trading the predictions.

Trading rule used for scoring (long-only, like every strategy's ``side="buy"``): hold a
position over the label horizon when P(up) > 0.5 (classification) or the predicted return
exceeds the round-trip cost (regression). Each trade earns its realised forward return
minus fees and slippage on entry and exit. To keep Sharpe statistics honest the trades are
grouped into non-overlapping holding periods (every ``horizon``-th bar), so one observation
is one period's equal-weighted portfolio return.

The deflated Sharpe ratio (Bailey & Lopez de Prado, 2014) is the probability that the true
Sharpe exceeds the best Sharpe one would expect from ``n_trials`` unskilled trials.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["classification_scores", "regression_scores", "period_returns", "sharpe_ratio",
           "deflated_sharpe_ratio", "expected_max_sharpe"]

_EULER_GAMMA = 0.5772156649015329


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


def period_returns(bar: np.ndarray, take: np.ndarray, forward_return: np.ndarray, horizon: int,
                   cost: float) -> np.ndarray:
    """Equal-weighted after-cost return of each non-overlapping holding period.

    ``bar`` is each row's bar number, ``take`` whether the row is traded, ``cost`` the
    round-trip cost as a fraction. A period with no trade earns 0 (cash).
    """
    step = max(horizon, 1)
    first = int(bar.min()) if bar.size else 0
    starts = (bar - first) % step == 0
    period = (bar - first)[starts] // step
    net = np.where(take[starts], forward_return[starts] - cost, 0.0)
    traded = take[starts].astype(float)
    n = int(period.max()) + 1 if period.size else 0
    gross = np.bincount(period, weights=net, minlength=n)
    count = np.bincount(period, weights=traded, minlength=n)
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
