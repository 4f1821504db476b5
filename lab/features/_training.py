"""Training frames across symbols: features at t next to the label of t+1..t+h.

Bars are cut at ``end`` before anything is computed, so neither a feature nor a label of a
training row can see a bar after the training window; rows whose label would need one are
dropped, never filled.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, select

from lab.bars import bars_by_symbol, load_bars
from lab.db.models import Fundamental
from lab.errors import ConfigError, DataError
from lab.features._compute import pair_bars
from lab.features._labels import make_label
from lab.features._sets import get_feature_set
from lab.features._universe import compute_universe_features
from lab.strategy import Label

__all__ = ["create_training_data", "load_fundamentals"]


def create_training_data(
    symbols: Iterable[str], feature_set: str, label: Label, start: datetime | str, end: datetime | str, *,
    engine: Engine | None = None, bars: dict[str, pd.DataFrame] | pd.DataFrame | None = None,
    benchmark: pd.DataFrame | None = None, fundamentals: pd.DataFrame | None = None,
    cache_dir: Path | None = None, use_ray: bool = False,
) -> pd.DataFrame:
    """Columns ``symbol, timestamp, <feature set columns>, label`` for start <= timestamp <= end.

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
    cut = {s: bars[s].loc[:end_ts] for s in symbols}
    features = compute_universe_features(cut, fs.key, benchmark=benchmark, fundamentals=fundamentals,
                                         cache_dir=cache_dir, use_ray=use_ray)
    parts = []
    for name, frame in features.items():
        legs = name.split("/") if fs.kind == "pair" else None
        priced = pair_bars(cut[legs[0]], cut[legs[1]]) if legs else cut[name]
        target = make_label(priced, label).to_numpy()
        keep = (frame.index >= start_ts) & (frame.index <= end_ts) & ~pd.isna(target)
        part = frame.loc[keep, list(fs.columns)]
        part.insert(0, "timestamp", part.index)
        part.insert(0, "symbol", name)
        part["label"] = target[keep]
        parts.append(part.reset_index(drop=True))
    columns = ["symbol", "timestamp", *fs.columns, "label"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


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
