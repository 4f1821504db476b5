"""What a decision at ``as_of`` may see: stored bars up to ``as_of``, the latest prices, and
the latest feature row per symbol computed by ``lab.features`` from those bars only."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from lab.bars import bars_by_symbol, load_bars
from lab.config import TradingConfig
from lab.features import compute_features, get_feature_set, held_spread_z, load_fundamentals, pair_bars
from universe.calendars import last_bar_at

__all__ = ["FeatureFrames", "MarketSnapshot", "load_market"]

#: enough calendar days for the longest indicator lookback (200 bars) on stock sessions
HISTORY_DAYS = 420


class FeatureFrames:
    """A ``FeatureSource`` over feature frames computed once per (feature set, symbol) from the
    bars it holds, each symbol with its asset class's benchmark, its fundamentals (as known
    then) or, for a pair "AAA/BBB", both legs. ``latest`` takes the row at or before
    ``as_of``: as every feature at t reads bars up to t only (``tests/test_features_lookahead``),
    that row is what bars cut at ``as_of`` would give. The live cycle holds bars up to its
    ``as_of``; a backtest holds the whole history and asks bar after bar."""

    def __init__(self, bars: Mapping[str, pd.DataFrame], *, benchmarks: Mapping[str, str],
                 fundamentals: pd.DataFrame | None = None):
        self.bars = dict(bars)
        self._benchmarks = dict(benchmarks)  # symbol -> its asset class's benchmark symbol
        self._fundamentals = fundamentals
        self._tables: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, pd.Index] | None] = {}

    def latest(self, feature_set: str, symbols: Sequence[str], as_of: datetime) -> pd.DataFrame:
        key, names, rows, stamp = get_feature_set(feature_set).key, [], [], pd.Timestamp(as_of).value
        columns = None
        for symbol in dict.fromkeys(symbols):  # a row per symbol, asked twice or not
            table = self._table(key, symbol)
            if table is None:
                continue
            stamps, values, columns = table
            at = int(np.searchsorted(stamps, stamp, side="right")) - 1
            if at >= 0:
                names.append(symbol)
                rows.append(values[at])
        return pd.DataFrame(np.vstack(rows), index=names, columns=columns) if rows else pd.DataFrame()

    def held_spread_z(self, pair: str, hedge_ratio: float, as_of: datetime) -> float:
        """The z-score at ``as_of`` of the spread a position in ``pair`` ("AAA/BBB") holds,
        log AAA - ``hedge_ratio`` log BBB, over the pair window of bars up to then
        (``lab.features.held_spread_z``); NaN when a leg's bars are missing or too few."""
        a, b = (self.bars.get(leg) for leg in pair.split("/"))
        if a is None or b is None:
            return float("nan")
        cut = pd.Timestamp(as_of)
        legs = pair_bars(a.loc[:cut], b.loc[:cut])
        return held_spread_z(legs["close_a"].to_numpy(), legs["close_b"].to_numpy(), hedge_ratio)

    def _table(self, key: str, symbol: str) -> tuple[np.ndarray, np.ndarray, pd.Index] | None:
        """The symbol's feature frame as arrays (UTC nanoseconds, rows, columns): a backtest asks
        for one row of every symbol at every bar, and a row of a frame costs a Series each."""
        if (key, symbol) not in self._tables:
            frame = self._compute(key, symbol)
            self._tables[key, symbol] = None if frame is None else (
                pd.DatetimeIndex(frame.index).as_unit("ns").asi8, frame.to_numpy(dtype=float), frame.columns)
        return self._tables[key, symbol]

    def _compute(self, key: str, symbol: str) -> pd.DataFrame | None:
        fs = get_feature_set(key)
        if fs.kind == "pair":
            a, b = (self.bars.get(leg) for leg in symbol.split("/"))
            return None if a is None or b is None else compute_features(pair_bars(a, b), key)
        bars = self.bars.get(symbol)
        if bars is None or bars.empty:
            return None
        fundamentals = None
        if fs.kind == "fundamental" and self._fundamentals is not None:
            fundamentals = self._fundamentals[self._fundamentals["symbol"] == symbol]
        return compute_features(bars, key, benchmark=self.bars.get(self._benchmarks.get(symbol, "")),
                                fundamentals=fundamentals)


class MarketSnapshot(FeatureFrames):
    """Bars per symbol up to ``as_of`` (nothing later is ever loaded), the latest prices, and
    the features of those bars."""

    def prices(self) -> dict[str, float]:
        """The last close per symbol."""
        return {s: float(frame["close"].iloc[-1]) for s, frame in self.bars.items() if len(frame)}

    def behind(self, symbols: Iterable[str], asset_type: str, as_of: datetime) -> dict[str, pd.Timestamp | None]:
        """The symbols whose latest bar is older than the one a decision at ``as_of`` reads
        (``last_bar_at``), with that bar's time (``None``: no bars at all)."""
        due = last_bar_at(asset_type, as_of)
        out = {}
        for symbol in symbols:
            frame = self.bars.get(symbol)
            last = frame.index[-1] if frame is not None and len(frame) else None
            if last is None or last < due:
                out[symbol] = last
        return out

    def bars_after(self, symbol: str, ts: datetime) -> pd.DataFrame:
        frame = self.bars.get(symbol)
        return frame[frame.index > ts] if frame is not None else pd.DataFrame()


def load_market(engine: Engine, config: TradingConfig, as_of: datetime, *,
                extra_symbols: Iterable[str] = (), since: datetime | None = None,
                fundamentals: bool = False) -> MarketSnapshot:
    """Bars of the universe (and ``extra_symbols``) from the earlier of ``since`` and the
    feature lookback, up to the last bar each asset class has at ``as_of`` (``last_bar_at``:
    a past intraday time does not read its session's bar, stored since), and the fundamentals
    known at ``as_of`` when an enabled strategy reads them or the caller asks (``fundamentals``:
    Serve answers every strategy of the registry, enabled in the config or not)."""
    benchmarks = {}
    for universe in config.universe.asset_classes().values():
        for symbol in (*universe.symbols, universe.benchmark):
            benchmarks[symbol] = universe.benchmark
    symbols = sorted(set(benchmarks) | set(extra_symbols))
    start = as_of - timedelta(days=HISTORY_DAYS)
    if since is not None:
        start = min(start, since)
    frame = load_bars(engine, symbols, start=start, end=as_of)
    for asset_type in frame["asset_type"].unique():
        frame = frame[(frame["asset_type"] != asset_type) | (frame["ts"] <= last_bar_at(asset_type, as_of))]
    known = None
    if fundamentals or any(s.enabled and get_feature_set(_feature_set(n)).kind == "fundamental"
                           for n, s in config.strategies.items()):
        known = load_fundamentals(engine, symbols)
        known = known[pd.to_datetime(known["known_at"], utc=True) <= as_of]
    return MarketSnapshot(bars_by_symbol(frame), benchmarks=benchmarks, fundamentals=known)


def _feature_set(strategy: str) -> str:
    from lab.strategy import get_strategy

    return get_strategy(strategy).feature_set
