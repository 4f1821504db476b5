"""Forward-looking labels: explicit offsets t+1..t+h, never features, NaN past the data.

Classification labels are 0/1 (what a binary model learns). The triple barrier marks 1 when
the take-profit is hit before the stop-loss and the time limit, the exits the strategies use;
``barrier_outcome`` keeps all three outcomes. A bar that touches both barriers counts as the
stop (the conservative reading of a daily bar). A horizon window holding a bar with a
missing or non-positive close, high or low gives NaN: the bar the features call invalid is no
barrier hit (a low of 0 is a bad tick, not a stop-loss).

A pair's bars (``pair_bars``: close_a, close_b) are labelled on the spread its position
holds: A against ``beta`` times A's value in B, beta being the pair's ``hedge_ratio`` feature
at t (known at t) held fixed over the horizon. Its label is the direction of
log A - beta log B from t to t+h, its forward return that change per unit of gross notional
(1 + |beta|), the unit its stop-loss and take-profit are in; the same spread the entry signal
``spread_z`` measures, not the price ratio A/B (a hedge ratio of 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from lab.errors import ConfigError
from lab.features._indicators import PAIR_COLUMNS, pair_indicators
from lab.strategy import Label

__all__ = ["LABEL_KINDS", "make_label", "barrier_outcome", "pair_forward_return"]

LABEL_KINDS = ("direction", "magnitude", "volatility", "triple_barrier")


def make_label(bars: pd.DataFrame, label: Label) -> pd.Series:
    """The label of each bar, named ``label_<kind>_<horizon>``; NaN where t+horizon is past the data.

    A pair's bars get the direction of its hedged spread (see the module's docstring).
    """
    _check(label)
    if _is_pair(bars):
        if label.kind != "direction":
            raise ConfigError([f"a pair is labelled on its hedged spread's direction; label kind {label.kind!r} "
                               "is not defined for a pair (declare kind='direction')"])
        change, _ = _spread_change(bars, label.horizon)
        return pd.Series(np.where(np.isnan(change), np.nan, change > 0), index=bars.index,
                         name=f"label_{label.kind}_{label.horizon}")
    close, high, low, ok = _prices(bars)
    h, n = label.horizon, len(close)
    out = np.full(n, np.nan)
    if n > h:
        base, future = close[:-h], close[h:]
        if label.kind == "magnitude":
            out[:-h] = future / base - 1.0
        elif label.kind == "direction":
            out[:-h] = (future > base).astype(float)
        elif label.kind == "volatility":
            up = _windows(high, h).max(axis=1) >= base * (1 + label.threshold)
            down = _windows(low, h).min(axis=1) <= base * (1 - label.threshold)
            out[:-h] = (up | down).astype(float)
        else:
            out[:-h] = (_outcome(close, high, low, label) == 1).astype(float)
        usable = ok[:-h] & _windows(ok.astype(float), h).all(axis=1)
        out[:-h][~usable] = np.nan
    return pd.Series(out, index=bars.index, name=f"label_{label.kind}_{h}")


def pair_forward_return(bars: pd.DataFrame, horizon: int) -> pd.Series:
    """What a pair's position opened at each bar earns over ``horizon`` bars: the change of
    log A - beta_t log B per unit of gross notional (1 + |beta_t|); NaN past the data or where
    the hedge ratio is not known yet."""
    if not _is_pair(bars):
        raise ConfigError(["pair_forward_return needs a pair's bars (close_a, close_b: see pair_bars)"])
    if horizon < 1:
        raise ConfigError([f"label horizon must be >= 1 bar, got {horizon}"])
    change, beta = _spread_change(bars, horizon)
    return pd.Series(change / (1 + np.abs(beta)), index=bars.index, name="forward_return")


def barrier_outcome(bars: pd.DataFrame, label: Label) -> pd.Series:
    """Which exit comes first: 1 take-profit, -1 stop-loss, 0 time limit (NaN past the data)."""
    _check(label)
    if _is_pair(bars):
        raise ConfigError(["a pair has no barrier outcome: it is labelled on its hedged spread's direction"])
    close, high, low, ok = _prices(bars)
    h = label.horizon
    out = np.full(len(close), np.nan)
    if len(close) > h:
        out[:-h] = _outcome(close, high, low, label)
        usable = ok[:-h] & _windows(ok.astype(float), h).all(axis=1)
        out[:-h][~usable] = np.nan
    return pd.Series(out, index=bars.index, name=f"barrier_{h}")


def _check(label: Label) -> None:
    problems = []
    if label.kind not in LABEL_KINDS:
        problems.append(f"unknown label kind {label.kind!r}; known: {', '.join(LABEL_KINDS)}")
    if label.horizon < 1:
        problems.append(f"label horizon must be >= 1 bar, got {label.horizon}")
    if label.threshold <= 0 or label.stop <= 0:
        problems.append("label threshold and stop must be > 0")
    if problems:
        raise ConfigError(problems)


def _is_pair(bars: pd.DataFrame) -> bool:
    return "close_a" in bars and "close_b" in bars


def _spread_change(bars: pd.DataFrame, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Per bar t: (log A_{t+h} - log A_t) - beta_t (log B_{t+h} - log B_t), and beta_t (the
    ``hedge_ratio`` feature at t). NaN past the data, where beta_t is not known, or where a
    close in t..t+h is missing or not positive."""
    close_a, close_b = bars["close_a"].to_numpy(dtype=float), bars["close_b"].to_numpy(dtype=float)
    beta = pair_indicators(close_a, close_b)[:, PAIR_COLUMNS.index("hedge_ratio")]
    ok = np.isfinite(close_a) & np.isfinite(close_b) & (close_a > 0) & (close_b > 0)
    la, lb = np.log(np.where(ok, close_a, np.nan)), np.log(np.where(ok, close_b, np.nan))
    change = np.full(len(la), np.nan)
    if len(la) > horizon:
        change[:-horizon] = (la[horizon:] - la[:-horizon]) - beta[:-horizon] * (lb[horizon:] - lb[:-horizon])
        usable = _windows(ok.astype(float), horizon).all(axis=1)
        change[:-horizon][~usable] = np.nan
    return change, beta


def _prices(bars: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    close = bars["close"].to_numpy(dtype=float)
    high = bars["high"].to_numpy(dtype=float) if "high" in bars else close
    low = bars["low"].to_numpy(dtype=float) if "low" in bars else close
    prices = np.vstack([close, high, low])
    ok = (np.isfinite(prices) & (prices > 0)).all(axis=0)
    return close, high, low, ok


def _windows(x: np.ndarray, h: int) -> np.ndarray:
    """Row t holds x[t+1..t+h], for t = 0..len-h-1."""
    return sliding_window_view(x[1:], h)


def _outcome(close: np.ndarray, high: np.ndarray, low: np.ndarray, label: Label) -> np.ndarray:
    h = label.horizon
    base = close[:-h, None]
    tp = _windows(high, h) >= base * (1 + label.threshold)
    sl = _windows(low, h) <= base * (1 - label.stop)
    first_tp = np.where(tp.any(axis=1), tp.argmax(axis=1), h)
    first_sl = np.where(sl.any(axis=1), sl.argmax(axis=1), h)
    return np.select([first_tp < first_sl, first_sl < h], [1.0, -1.0], 0.0)
