"""Indicator rows for the boards (SMA / Bollinger overlays, RSI, MACD) in the ``indicators`` table."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine, delete, insert

from lab.db import session_scope
from lab.db.models import Indicator

__all__ = ["BOARD_INDICATORS", "store_indicators"]

BOARD_INDICATORS = ("sma_20", "sma_50", "bb_upper", "bb_lower", "rsi_14", "macd", "macd_signal")


def store_indicators(engine: Engine, symbol: str, frame: pd.DataFrame, *, interval: str = "1d") -> int:
    """Replace the symbol's stored indicator rows over the frame's time range; returns rows written.

    Idempotent: storing the same frame twice leaves the same rows.
    """
    long = frame[list(BOARD_INDICATORS)].stack(future_stack=True).dropna()
    rows = [
        {"symbol": symbol, "interval": interval, "ts": ts.to_pydatetime(), "name": name, "value": float(value)}
        for (ts, name), value in long.items()
    ]
    with session_scope(engine, write_lock=True) as session:
        if len(frame):
            session.execute(delete(Indicator).where(
                Indicator.symbol == symbol, Indicator.interval == interval,
                Indicator.name.in_(BOARD_INDICATORS),
                Indicator.ts >= frame.index[0].to_pydatetime(), Indicator.ts <= frame.index[-1].to_pydatetime(),
            ))
        if rows:
            session.execute(insert(Indicator), rows)
    return len(rows)
