"""Indicator math on plain float64 arrays (one symbol's valid bars, oldest first).

Recursive indicators (RSI, MACD, ATR) and the 50- and 200-bar SMAs come from TA-Lib.
Rolling moments (Bollinger and the 20-bar SMA, volatility, correlation, hedge ratio) are
computed two-pass per window (each window's own sum, then its squared deviations from its
mean): running-sum implementations (pandas ``rolling().std()``, TA-Lib's SMA) lose precision
once a series has moved through orders of magnitude, a coin going from 0.0001 to 100.
Every output at index t reads inputs at indices <= t only.
"""

from __future__ import annotations

import numpy as np
import talib
from numba import njit
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "BASE_COLUMNS", "PAIR_COLUMNS", "PCTILE_WINDOW", "PAIR_WINDOW",
    "base_indicators", "pair_indicators", "held_spread_z", "ratio_change",
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


def ratio_change(x: np.ndarray, k: int) -> np.ndarray:
    """x[t] / x[t-k] - 1, NaN where the earlier value is 0, NaN or missing."""
    out = _nan(len(x))
    if len(x) > k:
        out[k:] = _div(x[k:], x[:-k]) - 1.0
    return out


# The kernels below are compiled (numba): one pass per column over a symbol's bars, written
# straight into the caller's output rows, instead of ~60 numpy calls and temporaries a symbol.
# Window loops run lag-outer, time-inner: every window is still summed in its own fixed order
# (so a value never depends on the bars after it, nor on what else is in the batch), and the
# inner loop vectorizes. A loop that reads an earlier bar (x[t - k]) runs over shifted slices
# instead: a possibly negative index makes numba check it for wraparound, which keeps the loop
# scalar (ten times slower).


@njit(cache=True, error_model="numpy")
def _nz_div(num: float, den: float) -> float:
    q = num / den  # computed unconditionally, then selected: the loops stay branch-free (vectorized)
    return q if (den != 0.0) & (abs(den) < np.inf) else np.nan


@njit(cache=True, error_model="numpy")
def _rolling_mean_into(x: np.ndarray, n: int, out: np.ndarray) -> None:
    """out[t] = the mean of x[t-n+1..t], each window summed directly (NaN if any NaN in it).

    A flat window's mean is its value exactly: twenty 0.1s summed and divided by 20 are not
    0.1, and that ulp would give a flat window a standard deviation of 1e-17 instead of 0
    (a Bollinger band of no width, whose %b is undefined, would get a made-up value)."""
    size = len(x)
    out[:min(n - 1, size)] = np.nan
    if size < n:
        return
    m = size - n + 1
    acc = np.zeros(m)
    moved = np.zeros(m, dtype=np.bool_)  # a value differs from the window's first (NaN always does)
    for j in range(n):
        for t in range(m):
            acc[t] += x[t + j]
            moved[t] |= x[t + j] != x[t]
    for t in range(m):
        out[t + n - 1] = acc[t] / n if moved[t] else x[t]


@njit(cache=True, error_model="numpy")
def _rolling_std_into(x: np.ndarray, mean: np.ndarray, n: int, ddof: int, out: np.ndarray) -> None:
    """Two-pass standard deviation of each window around its exact mean (``mean`` from
    _rolling_mean_into): exact to a few ulps at any scale, unlike running sums."""
    size = len(x)
    out[:min(n - 1, size)] = np.nan
    if size < n:
        return
    m = size - n + 1
    acc = np.zeros(m)
    for j in range(n):
        for t in range(m):
            d = x[t + j] - mean[t + n - 1]
            acc[t] += d * d
    for t in range(m):
        out[t + n - 1] = np.sqrt(acc[t] / (n - ddof))


@njit(cache=True, error_model="numpy")
def _rolling_pctile_into(x: np.ndarray, n: int, out: np.ndarray) -> None:
    """Share of the last ``n`` values (the current one included) that are <= the current one.

    Eight windows at a time, each count in its own register (the comparisons vectorize and
    nothing goes through memory); a window with a NaN is NaN.
    """
    size = len(x)
    out[:min(n - 1, size)] = np.nan
    if size < n:
        return
    m = size - n + 1
    t = 0
    while t + 8 <= m:
        c0, c1, c2, c3 = x[t + n - 1], x[t + n], x[t + n + 1], x[t + n + 2]
        c4, c5, c6, c7 = x[t + n + 3], x[t + n + 4], x[t + n + 5], x[t + n + 6]
        b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = 0
        for j in range(n):
            k = t + j
            b0 += x[k] <= c0
            b1 += x[k + 1] <= c1
            b2 += x[k + 2] <= c2
            b3 += x[k + 3] <= c3
            b4 += x[k + 4] <= c4
            b5 += x[k + 5] <= c5
            b6 += x[k + 6] <= c6
            b7 += x[k + 7] <= c7
        o = t + n - 1
        out[o], out[o + 1], out[o + 2], out[o + 3] = b0 / n, b1 / n, b2 / n, b3 / n
        out[o + 4], out[o + 5], out[o + 6], out[o + 7] = b4 / n, b5 / n, b6 / n, b7 / n
        t += 8
    while t < m:  # the last few windows, one at a time
        below = 0
        for j in range(n):
            below += x[t + j] <= x[t + n - 1]
        out[t + n - 1] = below / n
        t += 1
    nans = 0  # NaNs in the current window, counted exactly as it slides
    for t in range(size):
        nans += x[t] != x[t]
        if t >= n:
            nans -= x[t - n] != x[t - n]
        if t >= n - 1 and nans:
            out[t] = np.nan


@njit(cache=True, error_model="numpy")
def _ratio_change_into(x: np.ndarray, k: int, out: np.ndarray) -> None:
    size = len(x)
    out[:min(k, size)] = np.nan
    now, then, dest = x[k:], x[:max(size - k, 0)], out[k:]
    for t in range(len(dest)):
        dest[t] = _nz_div(now[t], then[t]) - 1.0


@njit(cache=True, error_model="numpy")
def _derived_into(close: np.ndarray, log_close: np.ndarray, volume: np.ndarray, bench_ret_20: np.ndarray,
                  out: np.ndarray, squeeze_pctile: float, pctile_window: int) -> None:
    """Every column but the TA-Lib ones (already in ``out``), in BASE_COLUMNS order."""
    sma_20, sma_50, sma_200, rsi, macd = out[0], out[1], out[2], out[3], out[4]
    signal, hist, upper, middle, lower = out[5], out[6], out[7], out[8], out[9]
    bb_width, bb_pctb, atr, volume_sma, ret_1 = out[10], out[11], out[12], out[13], out[14]
    ret_5, ret_20, ret_60, log_ret, vol_chg_1 = out[15], out[16], out[17], out[18], out[19]
    vol_chg_5, vol_chg_20, volatility, rel_strength, c_sma_20 = out[20], out[21], out[22], out[23], out[24]
    c_sma_50, c_sma_200, macd_pct, signal_pct, hist_pct = out[25], out[26], out[27], out[28], out[29]
    cross_up, volume_ratio, atr_pct, width_pctile, squeeze = out[30], out[31], out[32], out[33], out[34]
    n = len(close)
    first_move = n
    for t in range(1, n):
        if close[t] != close[t - 1]:
            first_move = t
            break
    rsi[:first_move] = np.nan  # no gain and no loss yet: RSI is 0/0, undefined
    _rolling_mean_into(close, 20, middle)
    sma_20[:] = middle  # the same mean: computed once, exactly (TA-Lib's is a running sum)
    _rolling_std_into(close, middle, 20, 0, upper)  # the deviation, turned into the bands below
    for t in range(n):
        sd = upper[t]
        upper[t], lower[t] = middle[t] + 2.0 * sd, middle[t] - 2.0 * sd
    for t in range(n):
        bb_width[t] = _nz_div(upper[t] - lower[t], middle[t])
    for t in range(n):
        bb_pctb[t] = _nz_div(close[t] - lower[t], upper[t] - lower[t])
    _rolling_mean_into(volume, 20, volume_sma)
    _ratio_change_into(close, 1, ret_1)
    _ratio_change_into(close, 5, ret_5)
    _ratio_change_into(close, 20, ret_20)
    _ratio_change_into(close, 60, ret_60)
    _ratio_change_into(volume, 1, vol_chg_1)
    _ratio_change_into(volume, 5, vol_chg_5)
    _ratio_change_into(volume, 20, vol_chg_20)
    log_ret[:1] = np.nan
    now, before, dest = log_close[1:], log_close[:max(n - 1, 0)], log_ret[1:]
    for t in range(len(dest)):
        dest[t] = now[t] - before[t]
    _rolling_mean_into(log_ret, 20, volatility)
    _rolling_std_into(log_ret, volatility, 20, 1, volatility)
    for t in range(n):
        rel_strength[t] = ret_20[t] - bench_ret_20[t]
    for t in range(n):
        c_sma_20[t] = _nz_div(close[t], sma_20[t]) - 1.0
    for t in range(n):
        c_sma_50[t] = _nz_div(close[t], sma_50[t]) - 1.0
    for t in range(n):
        c_sma_200[t] = _nz_div(close[t], sma_200[t]) - 1.0
    for t in range(n):
        macd_pct[t] = macd[t] / close[t]
    for t in range(n):
        signal_pct[t] = signal[t] / close[t]
    for t in range(n):
        hist_pct[t] = hist[t] / close[t]
    for t in range(n):
        volume_ratio[t] = _nz_div(volume[t], volume_sma[t])
    for t in range(n):
        atr_pct[t] = atr[t] / close[t]
    cross_up[:1] = np.nan
    m1, s1, m0, s0, dest = macd[1:], signal[1:], macd[:max(n - 1, 0)], signal[:max(n - 1, 0)], cross_up[1:]
    for t in range(len(dest)):
        defined = not (np.isnan(m1[t]) | np.isnan(s1[t]) | np.isnan(m0[t]) | np.isnan(s0[t]))
        up = (m1[t] > s1[t]) & (m0[t] <= s0[t])
        dest[t] = (1.0 if up else 0.0) if defined else np.nan
    _rolling_pctile_into(bb_width, pctile_window, width_pctile)
    for t in range(n):
        p = width_pctile[t]
        squeeze[t] = np.nan if np.isnan(p) else (1.0 if p <= squeeze_pctile else 0.0)


def base_indicators(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray,
                    bench_ret_20: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """All BASE_COLUMNS as one (n_columns, len) array, written into ``out`` when given (rows
    may be views into a larger block); ``bench_ret_20`` is already aligned."""
    out = np.empty((len(BASE_COLUMNS), len(close))) if out is None else out
    if len(close) == 0:
        return out
    out[1], out[2] = talib.SMA(close, 50), talib.SMA(close, 200)
    out[3] = talib.RSI(close, 14)
    out[4], out[5], out[6] = talib.MACD(close, 12, 26, 9)
    out[12] = talib.ATR(high, low, close, 14)
    _derived_into(close, np.log(close), volume, bench_ret_20, out, SQUEEZE_PCTILE, PCTILE_WINDOW)
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


def held_spread_z(close_a: np.ndarray, close_b: np.ndarray, hedge_ratio: float) -> float:
    """The z-score of the last bar of log a - ``hedge_ratio`` log b against its last PAIR_WINDOW
    bars: ``spread_z`` of the spread a pair position holds, its hedge ratio fixed at entry,
    where ``spread_z`` re-fits the ratio (and so the spread) at every bar. Scaled as
    ``spread_z`` (residual sd over w - 2), so with the window's own OLS hedge ratio the two are
    the same number. NaN with fewer bars, a hedge ratio that is not finite, or a flat spread."""
    w = PAIR_WINDOW
    if len(close_a) < w or len(close_b) != len(close_a) or not np.isfinite(hedge_ratio):
        return float("nan")
    spread = np.log(close_a[-w:]) - hedge_ratio * np.log(close_b[-w:])
    dev = spread - spread.mean()
    sd = float(np.sqrt(dev @ dev / (w - 2)))
    return float(dev[-1] / sd) if sd > 0 else float("nan")
