"""What the main job (``lab demo``) runs on: a plan of out-of-sample windows per asset class.

Every figure the demo reports is out of sample: each strategy is trained only on bars up to
the day before its asset class's out-of-sample window, the backtest covers that window with
the model trained before it, and the paper-trading days through Serve are its last sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import select

from lab.db.models import PriceBar
from lab.errors import DataError
from lab.runtime import LabContext

__all__ = ["DemoPlan", "plan_demo", "OOS_BARS"]

#: out-of-sample bars per asset class: about a year of stock sessions, four months of crypto days
OOS_BARS = {"stocks": 250, "crypto": 120}


@dataclass(frozen=True)
class DemoPlan:
    strategies: dict[str, list[str]]          # asset class -> enabled strategies trading it
    oos_start: dict[str, datetime]            # asset class -> first out-of-sample bar
    last_bar: dict[str, datetime]             # asset class -> last stored bar
    paper_sessions: dict[str, list[datetime]]  # asset class -> the as_of of each paper cycle
    training_end: dict[str, datetime]         # strategy -> last bar its model may learn from


def _bar_times(ctx: LabContext, symbol: str) -> list[datetime]:
    with ctx.engine.connect() as conn:
        stamps = conn.execute(select(PriceBar.ts).where(PriceBar.symbol == symbol, PriceBar.interval == "1d")
                              .order_by(PriceBar.ts)).scalars().all()
    return [pd.Timestamp(t).tz_convert("UTC").to_pydatetime() for t in stamps]


def plan_demo(ctx: LabContext, *, paper_days: int = 10, oos_bars: dict[str, int] | None = None) -> DemoPlan:
    """Windows from the stored bars of each asset class's benchmark."""
    oos_bars = oos_bars or OOS_BARS
    config = ctx.config
    strategies: dict[str, list[str]] = {}
    for name, s in config.enabled_strategies().items():
        for asset_class in s.asset_classes:
            strategies.setdefault(asset_class, []).append(name)
    oos_start, last_bar, sessions, class_train_end = {}, {}, {}, {}
    for asset_class, universe in config.universe.asset_classes().items():
        if asset_class not in strategies:
            continue
        times = _bar_times(ctx, universe.benchmark)
        needed = oos_bars[asset_class] + 300  # enough history before the window to learn from
        if len(times) < needed:
            raise DataError(f"{asset_class}: {len(times)} stored bars of {universe.benchmark}; the demo needs "
                            f"{needed} (ingest first)")
        oos_start[asset_class] = times[-oos_bars[asset_class]]
        class_train_end[asset_class] = times[-oos_bars[asset_class] - 1]
        last_bar[asset_class] = times[-1]
        sessions[asset_class] = times[-paper_days:]
    training_end = {}
    for asset_class, names in strategies.items():
        for name in names:
            end = class_train_end[asset_class]
            training_end[name] = min(training_end.get(name, end), end)
    return DemoPlan(strategies, oos_start, last_bar, sessions, training_end)

