"""Indicator math on plain float64 arrays (one symbol's valid bars, oldest first).

Recursive indicators (RSI, MACD, ATR) and long SMAs come from TA-Lib. Rolling moments
(Bollinger, volatility, correlation, hedge ratio) are computed two-pass per window on a
strided view: running-sum implementations (pandas ``rolling().std()``) lose all precision
once a series has moved through orders of magnitude, a coin going from 0.0001 to 100.
Every output at index t reads inputs at indices <= t only.
"""

from __future__ import annotations

import numpy as np
import talib
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "BASE_COLUMNS", "PAIR_COLUMNS", "PCTILE_WINDOW", "PAIR_WINDOW",
    "base_indicators", "pair_indicators", "rolling_mean", "rolling_std", "ratio_change",
]

PCTILE_WINDOW = 126  # half a year of bars for the Bollinger-width percentile
PAIR_WINDOW = 60
SQUEEZE_PCTILE = 0.2

BASE_COLUMNS = (
    "sma_20", "sma_50", "sma_200", "rsi_14", "macd", "macd_signal", "macd_hist",
    "bb_upper", "bb_middle", "bb_lower", "bb_width", "bb_pctb", "atr_14", "volume_sma_20",
    "ret_1", "ret_5", "ret_20", "ret_60", "log_ret_1", "vol_chg_1", "vol_chg_5", "vol_chg_20",
    "volatility_20", "rel_strength_20",
    "close_to_sma_20", "close_to_sma_50", "close_to_sma_200",
    "macd_pct", "macd_signal_pct", "macd_hist_pct", "macd_cross_up",
    "volume_ratio_20", "atr_pct", "bb_width_pctile", "squeeze",
)
PAIR_COLUMNS = ("pair_corr", "hedge_ratio", "spread", "spread_z", "ratio_ret_5", "ratio_ret_20")


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 or NaN (an undefined ratio, not an infinity)."""
    return np.divide(num, den, out=_nan(len(num)), where=np.isfinite(den) & (den != 0))


def _window_sums(x: np.ndarray, n: int) -> np.ndarray:
    """Sum of each full window, summed directly per window (no running sum), NaN if any NaN."""
    return np.convolve(x, np.ones(n), "valid")


def rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    out = _nan(len(x))
    if len(x) >= n:
        out[n - 1:] = _window_sums(x, n) / n
    return out


def rolling_std(x: np.ndarray, n: int, ddof: int = 0) -> np.ndarray:
    """Standard deviation of each window, two-pass (exact to a few ulps at any scale)."""
    out = _nan(len(x))
    if len(x) >= n:
        win = sliding_window_view(x, n)
        dev = win - (_window_sums(x, n) / n)[:, None]
        out[n - 1:] = np.sqrt(np.einsum("ij,ij->i", dev, dev) / (n - ddof))
    return out


def _rolling_pctile(x: np.ndarray, n: int) -> np.ndarray:
    """Share of the last ``n`` values (the current one included) that are <= the current one."""
    out = _nan(len(x))
    if len(x) >= n:
        win = sliding_window_view(x, n)
        share = np.count_nonzero(win <= win[:, -1:], axis=1) / n
        share[_window_sums(np.isnan(x).astype(float), n) > 0] = np.nan
        out[n - 1:] = share
    return out


def ratio_change(x: np.ndarray, k: int) -> np.ndarray:
    """x[t] / x[t-k] - 1, NaN where the earlier value is 0, NaN or missing."""
    out = _nan(len(x))
    if len(x) > k:
        out[k:] = _div(x[k:], x[:-k]) - 1.0
    return out


def base_indicators(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray,
                    bench_ret_20: np.ndarray) -> np.ndarray:
    """All BASE_COLUMNS as one (len, n_columns) array; ``bench_ret_20`` is already aligned."""
    n = len(close)
    out = np.empty((n, len(BASE_COLUMNS)))
    if n == 0:
        return out
    col = {name: out[:, i] for i, name in enumerate(BASE_COLUMNS)}
    for k in (20, 50, 200):
        col[f"sma_{k}"][:] = talib.SMA(close, k)
    rsi = talib.RSI(close, 14)
    moved = np.concatenate(([0.0], np.cumsum(np.abs(np.diff(close))))) > 0
    rsi[~moved] = np.nan  # no gain and no loss yet: RSI is 0/0, undefined
    col["rsi_14"][:] = rsi
    macd, signal, hist = talib.MACD(close, 12, 26, 9)
    col["macd"][:], col["macd_signal"][:], col["macd_hist"][:] = macd, signal, hist
    middle, sd = rolling_mean(close, 20), rolling_std(close, 20)
    upper, lower = middle + 2.0 * sd, middle - 2.0 * sd
    col["bb_upper"][:], col["bb_middle"][:], col["bb_lower"][:] = upper, middle, lower
    col["bb_width"][:] = _div(upper - lower, middle)
    col["bb_pctb"][:] = _div(close - lower, upper - lower)
    col["atr_14"][:] = talib.ATR(high, low, close, 14)
    col["volume_sma_20"][:] = rolling_mean(volume, 20)
    for k in (1, 5, 20, 60):
        col[f"ret_{k}"][:] = ratio_change(close, k)
    log_ret = np.concatenate(([np.nan], np.diff(np.log(close))))
    col["log_ret_1"][:] = log_ret
    for k in (1, 5, 20):
        col[f"vol_chg_{k}"][:] = ratio_change(volume, k)
    col["volatility_20"][:] = rolling_std(log_ret, 20, ddof=1)
    col["rel_strength_20"][:] = col["ret_20"] - bench_ret_20
    for k in (20, 50, 200):
        col[f"close_to_sma_{k}"][:] = _div(close, col[f"sma_{k}"]) - 1.0
    for name in ("macd", "macd_signal", "macd_hist"):
        col[f"{name}_pct"][:] = col[name] / close
    above = macd > signal
    defined = ~(np.isnan(macd) | np.isnan(signal))
    cross = _nan(n)
    if n > 1:
        both = defined[1:] & defined[:-1]
        cross[1:][both] = (above[1:] & ~above[:-1])[both]
    col["macd_cross_up"][:] = cross
    col["volume_ratio_20"][:] = _div(volume, col["volume_sma_20"])
    col["atr_pct"][:] = col["atr_14"] / close
    pctile = _rolling_pctile(col["bb_width"], PCTILE_WINDOW)
    col["bb_width_pctile"][:] = pctile
    col["squeeze"][:] = np.where(np.isnan(pctile), np.nan, (pctile <= SQUEEZE_PCTILE).astype(float))
    return out


def pair_indicators(close_a: np.ndarray, close_b: np.ndarray) -> np.ndarray:
    """PAIR_COLUMNS for two aligned close series.

    Per window of PAIR_WINDOW bars: the correlation of log returns, the OLS hedge ratio of
    log(a) on log(b), and the z-score of the last residual of that fit (the spread).
    """
    n, w = len(close_a), PAIR_WINDOW
    out = np.full((n, len(PAIR_COLUMNS)), np.nan)
    col = {name: out[:, i] for i, name in enumerate(PAIR_COLUMNS)}
    la, lb = np.log(close_a), np.log(close_b)
    ratio = close_a / close_b
    col["ratio_ret_5"][:], col["ratio_ret_20"][:] = ratio_change(ratio, 5), ratio_change(ratio, 20)
    if n < w:
        return out
    wa, wb = sliding_window_view(la, w), sliding_window_view(lb, w)
    da = wa - wa.mean(axis=1, keepdims=True)
    db = wb - wb.mean(axis=1, keepdims=True)
    sbb = np.einsum("ij,ij->i", db, db)
    beta = _div(np.einsum("ij,ij->i", da, db), sbb)
    resid = da - beta[:, None] * db
    resid_sd = np.sqrt(np.einsum("ij,ij->i", resid, resid) / (w - 2))
    col["hedge_ratio"][w - 1:] = beta
    col["spread"][w - 1:] = la[w - 1:] - beta * lb[w - 1:]
    col["spread_z"][w - 1:] = _div(resid[:, -1], resid_sd)
    if n > w:
        ra, rb = np.diff(la), np.diff(lb)
        xa, xb = sliding_window_view(ra, w), sliding_window_view(rb, w)
        xa = xa - xa.mean(axis=1, keepdims=True)
        xb = xb - xb.mean(axis=1, keepdims=True)
        den = np.sqrt(np.einsum("ij,ij->i", xa, xa) * np.einsum("ij,ij->i", xb, xb))
        col["pair_corr"][w:] = _div(np.einsum("ij,ij->i", xa, xb), den)
    return out
