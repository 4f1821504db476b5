"""One symbol's (or one pair's) feature frame, with the problems found in its bars.

Bad input gives defined results, never an exception: bars whose prices are missing or not
positive are skipped by the indicators and get NaN features; too little history leaves the
lookback NaN; a benchmark or fundamentals gap leaves its columns NaN. What was wrong is
returned as problem lines, which the universe run reports per symbol. Only a frame that is
not bars at all (missing columns, duplicated or unsorted timestamps), or fundamentals that
are not that table (a missing column, a row without ``known_at``), raises ``DataError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import pandas as pd
from numba import njit

from lab.errors import DataError
from lab.features._indicators import BASE_COLUMNS, PAIR_COLUMNS, PAIR_WINDOW, base_indicators, pair_indicators
from lab.features._sets import FeatureSet, get_feature_set

__all__ = ["compute_features", "pair_bars", "output_columns", "compute_with_problems", "compute_block",
           "prepare", "Prepared", "Benchmark", "features_into", "frame_of", "benchmark_returns", "gap_problem",
           "SECTORS"]

PRICE_COLUMNS = ("open", "high", "low", "close")
FUNDAMENTAL_COLUMNS = ("pe_ratio", "pb_ratio", "log_market_cap", "sector_code")
_FUNDAMENTAL_INPUTS = ("known_at", "pe_ratio", "pb_ratio", "market_cap", "sector")
LONGEST_LOOKBACK = 200
#: more trading days than this (NYSE sessions for a stock, days for a coin) missing between two bars is a gap
GAP_DAYS = 2
#: how a gap's missing trading days are named, per asset class: (in full, the unit)
_TRADING_DAYS = {"stocks": ("NYSE sessions", "sessions"), "crypto": ("days", "days")}
#: GICS sectors; ``sector_code`` is the position here (NaN for an unknown sector)
SECTORS = (
    "Communication Services", "Consumer Discretionary", "Consumer Staples", "Energy", "Financials",
    "Health Care", "Industrials", "Information Technology", "Materials", "Real Estate", "Utilities",
)
_SECTOR_CODE = {name.lower(): float(i) for i, name in enumerate(SECTORS)}

#: one series' input as plain arrays, which is all that travels to a Ray task: its rows as one
#: (rows, bars) float block (open, high, low, close, volume; a pair's close_a, close_b), its
#: timestamps (int64 ns) and its fundamentals (or None)
Prepared = tuple[np.ndarray, np.ndarray, pd.DataFrame | None]


def output_columns(feature_set: FeatureSet) -> tuple[str, ...]:
    """Every column of a computed frame of this set (model inputs and plotted indicators)."""
    if feature_set.kind == "pair":
        return PAIR_COLUMNS
    if feature_set.kind == "fundamental":
        return BASE_COLUMNS + FUNDAMENTAL_COLUMNS
    return BASE_COLUMNS


def compute_features(bars: pd.DataFrame, feature_set: str, *, benchmark: pd.DataFrame | None = None,
                     fundamentals: pd.DataFrame | None = None) -> pd.DataFrame:
    """Features of one symbol's OHLCV bars (indexed by tz-aware ts), one row per bar.

    ``benchmark`` is the asset class's benchmark bars (for ``rel_strength_20``);
    ``fundamentals`` this symbol's rows of the ``fundamentals`` table (value sets); a pair
    set takes the frame built by ``pair_bars``.
    """
    bench = benchmark_returns(benchmark) if benchmark is not None else None
    return compute_with_problems(bars, get_feature_set(feature_set), bench, fundamentals)[0]


def benchmark_returns(benchmark: pd.DataFrame) -> pd.Series:
    """The benchmark's 20-bar return on its own valid bars, to align by timestamp."""
    _check_frame(benchmark, ("close",), "benchmark")
    close = benchmark["close"].to_numpy(dtype=float)
    ok = np.isfinite(close) & (close > 0)
    close = close[ok]
    ret = np.full(len(close), np.nan)
    if len(close) > 20:
        ret[20:] = close[20:] / close[:-20] - 1.0
    return pd.Series(ret, index=benchmark.index[ok].as_unit("ns"))


def pair_bars(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """The bars of pair a/b: both closes (close_a, close_b) on their common timestamps where
    both are positive. A pair has no single price: its features, label and forward return
    are all of the hedged spread of the two (``pair_indicators``, ``make_label``)."""
    _check_frame(a, ("close",), "pair leg a")
    _check_frame(b, ("close",), "pair leg b")
    if a.index.equals(b.index):  # the usual case: no join to make (a backtest builds every pair per window)
        index, close_a, close_b = a.index, a["close"].to_numpy(dtype=float), b["close"].to_numpy(dtype=float)
    else:
        index = a.index.intersection(b.index)
        close_a = a["close"].reindex(index).to_numpy(dtype=float)
        close_b = b["close"].reindex(index).to_numpy(dtype=float)
    ok = (close_a > 0) & (close_b > 0) & np.isfinite(close_a) & np.isfinite(close_b)
    return pd.DataFrame({"close_a": close_a[ok], "close_b": close_b[ok]}, index=index[ok])


def compute_with_problems(bars: pd.DataFrame, feature_set: FeatureSet, bench_ret: pd.Series | None,
                          fundamentals: pd.DataFrame | None) -> tuple[pd.DataFrame, list[str]]:
    """The feature frame and the problem lines found in the inputs."""
    values, stamps = prepare(bars, feature_set.kind)
    out = np.empty((len(output_columns(feature_set)), len(stamps)))
    problems = features_into(values, stamps, feature_set, Benchmark(bench_ret), fundamentals, out)
    return frame_of(out, bars.index, feature_set.kind), problems


def frame_of(values: np.ndarray, index: pd.Index, kind: str) -> pd.DataFrame:
    """The frame over ``values`` (one row per column, as computed), without a copy."""
    return pd.DataFrame(values.T, index=index, columns=_column_index(kind), copy=False)


def prepare(bars: pd.DataFrame, kind: str, stamps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check a frame of bars (``pair_bars`` for a pair set) and take its rows and timestamps
    as plain arrays, views of the frame's own block in the usual case (``stamps``: its
    index's, when the caller has them already); raises ``DataError`` for a frame that is
    not bars."""
    columns = ("close_a", "close_b") if kind == "pair" else (*PRICE_COLUMNS, "volume")
    names = _check_frame(bars, columns, "pair bars (see pair_bars)" if kind == "pair" else "bars")
    return _rows(bars, columns, names), _stamps(bars.index) if stamps is None else stamps


def compute_block(items: Sequence[Prepared], feature_set: FeatureSet, bench_ret: pd.Series | None,
                  room: np.ndarray | None = None) -> tuple[np.ndarray, list[int], list[list[str]], list[str | None]]:
    """Features of many prepared series in one flat block: series i's values are the next
    ``columns x lengths[i]`` numbers, laid out as ``features_into`` writes them.

    One allocation for the batch (a large one is backed by huge pages) instead of one per
    symbol, and one buffer to move between processes; the block is the start of ``room``
    when that is large enough. A series that raises gets its error (its slot holds no
    values), never stops the batch.
    """
    n_cols = len(output_columns(feature_set))
    lengths = [len(stamps) for _, stamps, _ in items]
    size = n_cols * sum(lengths)
    block = room[:size] if room is not None and room.size >= size else np.empty(size)
    problems: list[list[str]] = []
    errors: list[str | None] = []
    bench = Benchmark(bench_ret)
    start = 0
    for (values, stamps, facts), n in zip(items, lengths, strict=True):
        out = block[start:start + n_cols * n].reshape(n_cols, n)
        start += n_cols * n
        try:
            problems.append(features_into(values, stamps, feature_set, bench, facts, out))
            errors.append(None)
        except Exception as exc:
            problems.append([])
            errors.append(f"{type(exc).__name__}: {exc}")
    return block, lengths, problems, errors


def features_into(values: np.ndarray, all_stamps: np.ndarray, feature_set: FeatureSet, bench: Benchmark,
                  fundamentals: pd.DataFrame | None, out: np.ndarray) -> list[str]:
    """Write the features of ``prepare``'s arrays into ``out`` (columns x bars) and return the
    problems found."""
    if feature_set.kind == "pair":
        return _pair_features(values, out)
    valid = np.empty(len(all_stamps), dtype=np.bool_)
    n_valid, nan_volume, zero_volume, flat = _scan_bars(values, valid)
    all_valid = n_valid == len(valid)
    if not all_valid:
        values = values[:, valid]
    stamps = all_stamps if all_valid else all_stamps[valid]
    _, high, low, close, volume = values
    problems: list[str] = []
    aligned, missing = bench.at(stamps)
    if missing:
        problems.append(f"benchmark missing for {missing} of {len(close)} bars (rel_strength_20 is NaN there)")
    n_base = len(BASE_COLUMNS)
    if all_valid:
        base_indicators(high, low, close, volume, aligned, out=out[:n_base])
    else:
        out[:] = np.nan
        out[:n_base, valid] = base_indicators(high, low, close, volume, aligned)
    if feature_set.kind == "fundamental":
        out[n_base:, valid] = _fundamental_values(stamps, fundamentals, problems).T
    problems[:0] = _bar_problems(len(valid), n_valid, nan_volume, zero_volume, flat)
    return problems


def _rows(bars: pd.DataFrame, columns: tuple[str, ...], names: list[str]) -> np.ndarray:
    """The columns as one contiguous (columns, bars) float block: a view when the frame is
    exactly those columns (``names``: its columns) in one float block (the usual case)."""
    if names == list(columns):
        try:
            return np.ascontiguousarray(bars.to_numpy(dtype=float).T)
        except (TypeError, ValueError):
            pass  # a column that is not numbers: read per column, which names it
    return np.stack([bars[c].to_numpy(dtype=float) for c in columns])


def _stamps(index: pd.DatetimeIndex) -> np.ndarray:
    """int64 ns, contiguous (a view of the index in the usual case)."""
    return np.ascontiguousarray(index.asi8 if index.unit == "ns" else index.as_unit("ns").asi8)


@cache
def _column_index(kind: str) -> pd.Index:
    return pd.Index(output_columns(FeatureSet(name="-", version=0, columns=(), kind=kind)))


class Benchmark:
    """The benchmark's 20-bar return (``benchmark_returns``; None: no benchmark, NaN) aligned
    to a series' timestamps, and how many bars past the first 20 it is missing for.

    The last answer is kept: the series of a batch usually share one timestamps array, so
    the alignment is done once a batch. Callers only read the aligned array.
    """

    def __init__(self, ret: pd.Series | None):
        self.ret = ret
        self._last: tuple[np.ndarray, np.ndarray, int] | None = None

    def at(self, stamps: np.ndarray) -> tuple[np.ndarray, int]:
        if self._last is None or self._last[0] is not stamps:
            if self.ret is None:
                aligned, missing = np.full(len(stamps), np.nan), 0
            else:
                aligned = _align(self.ret, stamps)
                missing = int(np.isnan(aligned[20:]).sum()) if len(aligned) > 20 else 0
            self._last = (stamps, aligned, missing)
        return self._last[1], self._last[2]


def _align(bench_ret: pd.Series, stamps: np.ndarray) -> np.ndarray:
    """The benchmark's value at each of ``stamps`` (exact timestamp match), NaN where it has none."""
    bench_stamps = bench_ret.index.asi8
    if np.array_equal(bench_stamps, stamps):  # the usual case: the same calendar
        return bench_ret.to_numpy(dtype=float, copy=True)
    pos = np.minimum(np.searchsorted(bench_stamps, stamps), max(len(bench_stamps) - 1, 0))
    out = np.full(len(stamps), np.nan)
    if len(bench_stamps):
        hit = bench_stamps[pos] == stamps
        out[hit] = bench_ret.to_numpy()[pos[hit]]
    return out


def _pair_features(values: np.ndarray, out: np.ndarray) -> list[str]:
    out[:] = pair_indicators(values[0], values[1]).T
    problems = []
    if values.shape[1] <= PAIR_WINDOW:
        problems.append(f"too little history: {values.shape[1]} common bars, the pair window needs {PAIR_WINDOW + 1}")
    return problems


def _check_frame(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> list[str]:
    """The frame's column names, once it is known to be a frame of ``columns`` on sorted unique timestamps."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{what}: expected a DataFrame, got {type(frame).__name__}")
    names = frame.columns.tolist()  # a list: membership on the Index costs a lookup each
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{what}: missing column(s) {', '.join(missing)}")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError(f"{what}: must be indexed by timestamp, got {type(frame.index).__name__}")
    if frame.index.tz is None:
        raise DataError(f"{what}: timestamps must be tz-aware (UTC)")
    if not frame.index.is_monotonic_increasing:
        raise DataError(f"{what}: timestamps are not in ascending order")
    if frame.index.has_duplicates:
        raise DataError(f"{what}: duplicated timestamps, e.g. {frame.index[frame.index.duplicated()][0]}")
    return names


@njit(cache=True)
def _scan_bars(values: np.ndarray, valid: np.ndarray) -> tuple[int, int, int, bool]:
    """One pass over the bars: ``valid`` (every price finite and > 0), and the counts the
    problem lines need (valid bars; their missing and zero volumes; whether the valid closes
    are all equal)."""
    n_valid = nan_volume = zero_volume = 0
    low, high = np.inf, -np.inf
    for i in range(values.shape[1]):
        o, h, lo, c, v = values[0, i], values[1, i], values[2, i], values[3, i], values[4, i]
        ok = 0 < o < np.inf and 0 < h < np.inf and 0 < lo < np.inf and 0 < c < np.inf
        valid[i] = ok
        if ok:
            n_valid += 1
            nan_volume += v != v
            zero_volume += v == 0
            low, high = min(low, c), max(high, c)
    return n_valid, nan_volume, zero_volume, n_valid > 1 and low == high


def gap_problem(stamps: np.ndarray, asset_class: str) -> str | None:
    """The problem line of a series (``stamps``: its bars' int64 ns labels, ascending) whose
    consecutive bars skip more than ``GAP_DAYS`` of the days its asset class trades on, or
    None. Judged on the class's own calendar (``universe.calendars.skipped_days``): a coin
    missing a weekend lacks two days it trades on, a stock none."""
    from universe.calendars import skipped_days

    if len(stamps) < 2:
        return None
    skipped = skipped_days(asset_class, stamps)
    if not (gaps := int((skipped > GAP_DAYS).sum())):
        return None
    named, unit = _TRADING_DAYS[asset_class]
    return (f"{gaps} gap{'s' if gaps > 1 else ''} of more than {GAP_DAYS} missing {named} "
            f"(largest: {int(skipped.max())} {unit})")


def _bar_problems(n_bars: int, n_valid: int, nan_volume: int, zero_volume: int, flat: bool) -> list[str]:
    problems = []
    if n_valid < LONGEST_LOOKBACK:
        problems.append(f"too little history: {n_valid} valid bars, sma_200 needs {LONGEST_LOOKBACK}")
    if n_bars - n_valid:
        problems.append(f"{n_bars - n_valid} bars with missing or non-positive prices (their features are NaN)")
    if nan_volume:
        problems.append(f"{nan_volume} bars with missing volume")
    if zero_volume:
        problems.append(f"{zero_volume} bars with zero volume")
    if flat:
        problems.append("constant price: RSI and Bollinger %b are undefined (NaN)")
    return problems


def _fundamental_values(stamps: np.ndarray, fundamentals: pd.DataFrame | None,
                        problems: list[str]) -> np.ndarray:
    """Point-in-time P/E, P/B, log market cap, sector code: each row sees the last value known at its ts."""
    out = np.full((len(stamps), len(FUNDAMENTAL_COLUMNS)), np.nan)
    if fundamentals is None or fundamentals.empty:
        problems.append("no fundamentals known (pe_ratio, pb_ratio, log_market_cap, sector_code are NaN)")
        return out
    if "symbol" in fundamentals.columns and fundamentals["symbol"].nunique() > 1:
        raise DataError("fundamentals: pass one symbol's rows to compute_features")
    absent = [c for c in _FUNDAMENTAL_INPUTS if c not in fundamentals.columns]
    if absent:
        raise DataError(f"fundamentals: missing column(s) {', '.join(absent)}")
    if unknown := int(fundamentals["known_at"].isna().sum()):
        raise DataError(f"fundamentals: {unknown} row(s) without known_at (when each value became known)")
    facts = fundamentals.assign(known_at=pd.to_datetime(fundamentals["known_at"], utc=True)).sort_values("known_at")
    left = pd.DataFrame({"ts": pd.to_datetime(stamps, utc=True)})
    right = facts.assign(known_at=facts["known_at"].dt.as_unit("ns"))
    merged = pd.merge_asof(left, right, left_on="ts", right_on="known_at", direction="backward")
    market_cap = merged["market_cap"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_cap = np.where(market_cap > 0, np.log(market_cap), np.nan)
    sector = merged["sector"].map(lambda s: _SECTOR_CODE.get(str(s).lower(), np.nan) if isinstance(s, str) else np.nan)
    out[:, 0] = merged["pe_ratio"].to_numpy(dtype=float)
    out[:, 1] = merged["pb_ratio"].to_numpy(dtype=float)
    out[:, 2] = log_cap
    out[:, 3] = sector.to_numpy(dtype=float)
    return out
