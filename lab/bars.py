"""Reading stored bars: the one way every downstream part gets prices out of ``price_history``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, func, select

from lab.db.models import PriceBar

__all__ = ["BAR_COLUMNS", "load_bars", "bars_by_symbol", "stored_spans"]

BAR_COLUMNS = ["open", "high", "low", "close", "volume"]


def load_bars(
    engine: Engine,
    symbols: Iterable[str] | None = None,
    *,
    asset_type: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    interval: str = "1d",
) -> pd.DataFrame:
    """Long frame (symbol, ts, asset_type, source, open, high, low, close, volume), sorted.

    ``ts`` is tz-aware UTC; ``start``/``end`` are inclusive.
    """
    query = select(
        PriceBar.symbol, PriceBar.ts, PriceBar.asset_type, PriceBar.source, PriceBar.synthetic,
        PriceBar.open, PriceBar.high, PriceBar.low, PriceBar.close, PriceBar.volume,
    ).where(PriceBar.interval == interval)
    if symbols is not None:
        query = query.where(PriceBar.symbol.in_(list(symbols)))
    if asset_type is not None:
        query = query.where(PriceBar.asset_type == asset_type)
    if start is not None:
        query = query.where(PriceBar.ts >= start)
    if end is not None:
        query = query.where(PriceBar.ts <= end)
    query = query.order_by(PriceBar.symbol, PriceBar.ts)
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).all(), columns=[
            "symbol", "ts", "asset_type", "source", "synthetic", *BAR_COLUMNS])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def bars_by_symbol(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split a long frame into one OHLCV frame per symbol, indexed by ts."""
    return {
        symbol: group.set_index("ts")[BAR_COLUMNS].astype(float)
        for symbol, group in frame.groupby("symbol", sort=True)
    }


def stored_spans(engine: Engine, symbols: Iterable[str], *,
                 interval: str = "1d") -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """The first and last stored bar of each of ``symbols`` that has any (whatever period a
    caller loaded: what it lacks may be stored outside it)."""
    query = (select(PriceBar.symbol, func.min(PriceBar.ts), func.max(PriceBar.ts))
             .where(PriceBar.interval == interval, PriceBar.symbol.in_(list(symbols))).group_by(PriceBar.symbol))
    with engine.connect() as conn:
        return {symbol: (pd.Timestamp(first), pd.Timestamp(last)) for symbol, first, last in conn.execute(query)}
