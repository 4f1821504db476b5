"""Training frames across symbols: features at t next to the label of t+1..t+h.

Bars are cut at ``end`` before anything is computed, so neither a feature nor a label of a
training row can see a bar after the training window; rows whose label would need one are
dropped, never filled. Each row keeps ``label_end``, the time of the last bar its label
reads: on the symbol's own calendar, so a walk-forward can purge by it whatever calendars
the symbols trade on and whatever gaps their data has.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from lab.bars import bars_by_symbol, load_bars
from lab.db.models import Fundamental
from lab.errors import ConfigError, DataError
from lab.features._compute import pair_bars
from lab.features._labels import make_label, pair_forward_return
from lab.features._sets import FeatureSet, get_feature_set
from lab.features._universe import compute_universe_features
from lab.strategy import Label

__all__ = ["create_training_data", "labelled_rows", "load_fundamentals"]


def create_training_data(
    symbols: Iterable[str], feature_set: str, label: Label, start: datetime | str, end: datetime | str, *,
    engine: Engine | None = None, bars: dict[str, pd.DataFrame] | pd.DataFrame | None = None,
    benchmark: pd.DataFrame | None = None, fundamentals: pd.DataFrame | None = None,
    cache_dir: Path | None = None, use_ray: bool = False,
) -> pd.DataFrame:
    """Columns ``symbol, timestamp, <feature set columns>, label, label_end, forward_return``
    (``labelled_rows``) for start <= timestamp <= end, rows with a label only.

    ``bars`` ({symbol: OHLCV frame} or the long frame of ``load_bars``) or else ``engine``
    supplies the prices. For a pair set, ``symbol`` names the pair ("AAA/BBB").
    """
    fs = get_feature_set(feature_set)
    symbols = sorted(set(symbols))
    start_ts, end_ts = _utc(start), _utc(end)
    if bars is None:
        if engine is None:
            raise ConfigError(["create_training_data needs engine= or bars="])
        bars = load_bars(engine, symbols, end=end_ts.to_pydatetime())
        if fs.kind == "fundamental" and fundamentals is None:
            fundamentals = load_fundamentals(engine, symbols)
    if isinstance(bars, pd.DataFrame):
        bars = bars_by_symbol(bars)
    missing = [s for s in symbols if s not in bars]
    if missing:
        raise DataError(f"no bars for {', '.join(missing)}")
    rows = labelled_rows({s: bars[s].loc[:end_ts] for s in symbols}, feature_set, label, benchmark=benchmark,
                         fundamentals=fundamentals, cache_dir=cache_dir, use_ray=use_ray)
    return rows.loc[(rows["timestamp"] >= start_ts).to_numpy() & rows["label"].notna().to_numpy(),
                    [*_columns(fs), "forward_return"]].reset_index(drop=True)


def labelled_rows(
    bars: dict[str, pd.DataFrame], feature_set: str, label: Label, *, benchmark: pd.DataFrame | None = None,
    fundamentals: pd.DataFrame | None = None, cache_dir: Path | None = None, use_ray: bool = False,
) -> pd.DataFrame:
    """Every bar's features and label over all of ``bars``, with ``label_end``: the time of
    the last bar its label reads, and ``forward_return``: the close's return from the bar to
    that one (a pair's: its hedged spread's change per gross notional, ``pair_forward_return``),
    NaN where the label is (what a model's payoff is measured from). The rows a training window ending at ``cutoff`` may use
    are those with ``label_end <= cutoff`` (features read no later bar): a walk-forward
    computes this once and takes each window's rows from it, not all bars again per window."""
    fs = get_feature_set(feature_set)
    bars = {s: bars[s] for s in sorted(bars)}  # rows in symbol order, whatever the order given
    features = compute_universe_features(bars, fs.key, benchmark=benchmark, fundamentals=fundamentals,
                                         cache_dir=cache_dir, use_ray=use_ray)
    parts = []
    for name, frame in features.items():
        legs = name.split("/") if fs.kind == "pair" else None
        priced = pair_bars(bars[legs[0]], bars[legs[1]]) if legs else bars[name]
        target = make_label(priced, label).to_numpy()
        part = frame.loc[:, list(fs.columns)]
        part.insert(0, "timestamp", part.index)
        part.insert(0, "symbol", name)
        part["label"] = target
        part["label_end"] = priced.index[label.horizon:].append(
            pd.DatetimeIndex([pd.NaT] * min(label.horizon, len(priced)), tz=priced.index.tz))
        forward = (pair_forward_return(priced, label.horizon).to_numpy() if legs
                   else (priced["close"].shift(-label.horizon) / priced["close"] - 1).to_numpy())
        part["forward_return"] = np.where(np.isnan(target), np.nan, forward)
        parts.append(part.reset_index(drop=True))
    if not parts:
        return pd.DataFrame(columns=[*_columns(fs), "forward_return"])
    return pd.concat(parts, ignore_index=True)


def _columns(fs: FeatureSet) -> list[str]:
    return ["symbol", "timestamp", *fs.columns, "label", "label_end"]


def load_fundamentals(engine: Engine, symbols: Iterable[str] | None = None) -> pd.DataFrame:
    """The ``fundamentals`` table (symbol, known_at, pe_ratio, pb_ratio, market_cap, sector)."""
    query = select(Fundamental.symbol, Fundamental.known_at, Fundamental.pe_ratio, Fundamental.pb_ratio,
                   Fundamental.market_cap, Fundamental.sector).order_by(Fundamental.symbol, Fundamental.known_at)
    if symbols is not None:
        query = query.where(Fundamental.symbol.in_(list(symbols)))
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).all(),
                             columns=["symbol", "known_at", "pe_ratio", "pb_ratio", "market_cap", "sector"])
    frame["known_at"] = pd.to_datetime(frame["known_at"], utc=True)
    return frame


def _utc(value: datetime | str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
