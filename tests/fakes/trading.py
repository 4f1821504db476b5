"""A small trading world for the trading-engine tests: seeded bars on the real NYSE calendar
(crypto every day), a config file, and a deterministic PredictionSource.

The prediction source implements the protocol the Serve client and the registry implement:
its confidence is a fixed function of a feature column, so tests can reason about it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import exchange_calendars as xcals
import numpy as np
import pandas as pd
from sqlalchemy import Engine, insert

from lab.db.models import PriceBar
from lab.trading.predictions import Payoff, Prediction

STOCKS = ["AAPL", "MSFT", "IBM", "GOOG"]
CRYPTO = ["BTC"]


def sessions(asset_type: str, start: str, end: str) -> pd.DatetimeIndex:
    """Daily bar labels (midnight UTC): NYSE sessions for stocks, every day for crypto."""
    if asset_type == "crypto":
        return pd.date_range(start, end, freq="D", tz="UTC")
    days = xcals.get_calendar("XNYS", start="1990-01-01").sessions_in_range(start, end)
    return pd.DatetimeIndex(days).tz_localize("UTC")


def make_bars(index: pd.DatetimeIndex, *, seed: int, start_price: float = 100.0, drift: float = 0.0005,
              vol: float = 0.02, volume: float = 1_000_000.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = start_price * np.exp(np.cumsum(rng.normal(drift, vol, len(index))))
    open_ = close * np.exp(rng.normal(0, vol / 3, len(index)))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, vol, len(index)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, vol, len(index)))
    vols = volume * rng.uniform(0.5, 1.5, len(index))
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": vols}, index=index)


def seed_bars(engine: Engine, start: str = "2022-01-01", end: str = "2023-12-29") -> dict[str, pd.DataFrame]:
    """Store bars for the world's symbols; returns them by symbol."""
    out = {}
    rows: list[dict[str, Any]] = []
    for i, symbol in enumerate(STOCKS + CRYPTO):
        asset_type = "crypto" if symbol in CRYPTO else "stocks"
        frame = make_bars(sessions(asset_type, start, end), seed=i, start_price=100.0 * (i + 1))
        out[symbol] = frame
        rows.extend({"asset_type": asset_type, "symbol": symbol, "interval": "1d", "ts": ts.to_pydatetime(),
                     "source": "test", "synthetic": True, **{k: float(v) for k, v in row.items()}}
                    for ts, row in frame.iterrows())
    with engine.begin() as conn:
        conn.execute(insert(PriceBar), rows)
    return out


def write_config(path: Path, **sections: Any) -> Path:
    """config/trading.json for the world; ``sections`` replace top-level sections."""
    config: dict[str, Any] = {
        "universe": {"stocks": {"symbols": STOCKS, "benchmark": "AAPL"},
                     "crypto": {"symbols": CRYPTO, "benchmark": "BTC"}},
        "strategies": {
            "momentum": {"asset_classes": ["stocks"], "min_confidence": 0.6, "max_positions": 3,
                         "stop_loss": 0.05, "take_profit": 0.10, "max_holding_days": 10,
                         "params": {"top_quantile": 0.5, "min_volume_ratio": 0.5}},
            "breakout": {"asset_classes": ["crypto"], "min_confidence": 0.65, "max_positions": 1,
                         "stop_loss": 0.05, "take_profit": 0.12, "max_holding_days": 5,
                         "params": {"max_width_pctile": 0.6, "min_volume_ratio": 0.5}},
        },
        "sizing": {"method": "percent", "percent_of_equity": 0.05},
        "risk": {"max_positions": 6, "max_position_pct": 0.05, "cash_reserve_pct": 0.15},
        "execution": {"initial_cash": 100_000, "slippage_bps": 10, "fee_bps": {"stocks": 1.0, "crypto": 10.0}},
    }
    config.update(sections)
    path.write_text(json.dumps(config))
    return path


#: a model whose class-1 rows rose 10% and class-0 rows fell 5% on average: the fakes' payoff
PAYOFF = Payoff(win=0.10, loss=-0.05)


class FixedPredictions:
    """Confidence ``base`` for every row (model version 1): deterministic, protocol-complete."""

    def __init__(self, base: float = 0.9):
        self.base = base

    def predict(self, strategy: str, rows: pd.DataFrame) -> Prediction:
        return Prediction(np.full(len(rows), self.base), model_version=1, payoff=PAYOFF)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)
