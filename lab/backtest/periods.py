"""The period a scheduled backtest covers: the latest days of each asset class's stored bars,
so the weekly training run can show how its strategies did lately, out of sample."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pandas as pd
from sqlalchemy import Engine, func, select

from lab.config import TradingConfig
from lab.db.models import PriceBar
from lab.errors import DataError

__all__ = ["Period", "latest_periods"]


@dataclass(frozen=True)
class Period:
    """One asset class's backtest: the strategies that trade it, on its symbols only (a
    strategy trading stocks and crypto would otherwise bring every class's symbols into each
    class's period, and need their bars there)."""

    strategies: list[str]
    symbols: list[str]
    start: date
    end: date


def latest_periods(engine: Engine, config: TradingConfig, strategies: list[str], *, days: int,
                   end: datetime | None = None) -> dict[str, Period]:
    """Per asset class the strategies trade: its symbols over the ``days`` that end with its
    benchmark's last stored daily bar (at or before ``end``)."""
    trading: dict[str, list[str]] = {}
    for name in strategies:
        for asset_class in config.strategy_asset_classes(name):
            trading.setdefault(asset_class, []).append(name)
    universes = config.universe.asset_classes()
    periods = {}
    for asset_class, names in trading.items():
        if asset_class not in universes:
            continue  # a strategy's asset class without a universe has nothing to trade
        benchmark = universes[asset_class].benchmark
        query = select(func.max(PriceBar.ts)).where(PriceBar.symbol == benchmark, PriceBar.interval == "1d")
        if end is not None:
            query = query.where(PriceBar.ts <= end)
        with engine.connect() as conn:
            last = conn.scalar(query)
        if last is None:
            raise DataError(f"{asset_class}: no stored bars of its benchmark {benchmark}"
                            + (f" up to {end:%Y-%m-%d}" if end else "") + " to backtest on (ingest first)")
        last_day = pd.Timestamp(last).date()
        periods[asset_class] = Period(names, list(universes[asset_class].symbols), last_day - timedelta(days=days - 1),
                                      last_day)
    return periods
