"""What a backtest produces, as plain frames: the one shape that storage, export and the
report read, whether the result comes fresh from the driver or back from the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab.performance import Metrics, SuccessGate, buy_and_hold, compute_metrics, drawdown, monthly_series
from universe.calendars import skipped_days

__all__ = ["EQUITY_COLUMNS", "FILL_COLUMNS", "ORDER_COLUMNS", "POSITION_COLUMNS", "BacktestResult", "ExportFormat"]

EQUITY_COLUMNS = ["ts", "cash", "positions_value", "equity", "realized_pnl", "unrealized_pnl", "benchmark_close"]
ORDER_COLUMNS = ["client_order_id", "ts", "strategy", "symbol", "asset_type", "side", "order_type", "intent",
                 "qty", "status", "filled_qty", "avg_fill_price", "reason", "pair"]
#: ``pair``: the pair ("AAA/BBB") an order, and so its fills, is a leg of (None for a single symbol)
FILL_COLUMNS = ["fill_id", "client_order_id", "ts", "strategy", "symbol", "side", "qty", "price", "fee",
                "realized_pnl", "pair"]
POSITION_COLUMNS = ["ts", "strategy", "symbol", "qty", "avg_price", "last_price", "market_value"]


class ExportFormat(StrEnum):
    """The file formats a result's frames are exported in (the file's extension too)."""

    PARQUET = "parquet"
    CSV = "csv"


@dataclass
class BacktestResult:
    """One run over one period: equity per bar, its orders and fills, positions over time.

    ``strategy_equity`` holds one equity column per strategy (its share of the initial
    cash plus its realized and unrealized P&L), so strategies are judged side by side.
    ``gaps`` lists, per symbol, the sessions inside the period that had no bar, and
    ``first_bars`` the first bar's day of each symbol that had none on the period's first
    sessions (listed later, or a hole at the start); ``funnel`` says per strategy why it
    traded as often as it did.
    """

    portfolio: str
    name: str
    start: pd.Timestamp
    end: pd.Timestamp
    strategies: list[str]
    symbols: list[str]
    benchmark: str  # the portfolio's buy-and-hold benchmark, closes in ``equity["benchmark_close"]``
    initial_cash: float
    periods_per_year: int
    equity: pd.DataFrame  # EQUITY_COLUMNS, one row per bar
    strategy_equity: pd.DataFrame  # index ts, one column per strategy
    orders: pd.DataFrame  # ORDER_COLUMNS
    fills: pd.DataFrame  # FILL_COLUMNS
    positions: pd.DataFrame  # POSITION_COLUMNS, open positions at each bar
    gaps: dict[str, list[str]] = field(default_factory=dict)
    first_bars: dict[str, str] = field(default_factory=dict)
    #: per strategy, how far its signals got (``lab.backtest.funnel``)
    funnel: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # the spec
    #: the trading settings it ran with (``lab.backtest.spec.run_settings``)
    settings: dict[str, Any] = field(default_factory=dict)
    decided_by: str = ""  # ``Decisions.basis``
    #: a pretrained run's registry version per strategy ({"id", "version"}), part of its name
    models: dict[str, dict[str, int]] = field(default_factory=dict)
    #: each strategy's own buy-and-hold benchmark, its asset class's (none kept by a run stored
    #: before they were: each is compared with ``benchmark`` then)
    strategy_benchmarks: dict[str, str] = field(default_factory=dict)
    #: index ts: the closes of each of ``strategy_benchmarks`` other than ``benchmark``
    benchmark_closes: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def equity_curve(self) -> pd.Series:
        return self.equity.set_index("ts")["equity"]

    @property
    def benchmark_curve(self) -> pd.Series:
        """Buy-and-hold of the portfolio's benchmark with the same initial cash, on the same bars."""
        return self.buy_and_hold(self.benchmark)

    def closes_of(self, benchmark: str) -> pd.Series:
        """The closes (index ts) of one of the run's benchmarks, the portfolio's or a strategy's."""
        if benchmark == self.benchmark:
            return self.equity.set_index("ts")["benchmark_close"]
        return self.benchmark_closes[benchmark]

    def buy_and_hold(self, benchmark: str) -> pd.Series:
        """Buy-and-hold of one of the run's benchmarks with the same initial cash, on the same bars."""
        return buy_and_hold(self.closes_of(benchmark).ffill().bfill(), self.initial_cash)

    @property
    def drawdown(self) -> pd.Series:
        return drawdown(self.equity_curve)

    @property
    def benchmarks(self) -> list[str]:
        """Each distinct benchmark of the run: the portfolio's first, then the strategies' own."""
        return list(dict.fromkeys([self.benchmark, *self.strategy_benchmarks.values()]))

    def monthly_returns(self) -> pd.DataFrame:
        """Each calendar month's return (``lab.performance.monthly_series``) of the portfolio, each
        strategy and buy-and-hold of each benchmark: one row per month ("2019-01"), one column
        each, named as in ``metrics``."""
        curves = {"portfolio": self.equity_curve, **{s: self.strategy_equity[s] for s in self.strategies},
                  **{f"buy&hold {b}": self.buy_and_hold(b) for b in self.benchmarks}}
        table = pd.DataFrame({name: monthly_series(curve) for name, curve in curves.items()})
        table.index = pd.Index([f"{year}-{month:02d}" for year, month in table.index], name="month")
        return table

    def metrics(self) -> dict[str, Metrics]:
        """Portfolio, each strategy, and buy-and-hold of each benchmark (the portfolio's first,
        then each strategy's own), with one set of rules."""
        exposure = _gross(self.positions)
        curve = self.equity_curve
        out = {"portfolio": compute_metrics(curve, fills=self.fills, exposure=exposure.reindex(curve.index,
                                            fill_value=0.0), periods_per_year=self.periods_per_year)}
        for strategy in self.strategies:
            held = self.positions[self.positions["strategy"] == strategy]
            strategy_exposure = _gross(held)
            out[strategy] = compute_metrics(
                self.strategy_equity[strategy], fills=self.fills[self.fills["strategy"] == strategy],
                exposure=strategy_exposure.reindex(curve.index, fill_value=0.0),
                periods_per_year=self.periods_per_year)
        for benchmark in self.benchmarks:
            bench = self.buy_and_hold(benchmark)
            out[f"buy&hold {benchmark}"] = compute_metrics(  # all of its equity is the one position, every bar
                bench, exposure=bench, periods_per_year=self.periods_per_year)
        return out

    def gap_notes(self) -> list[str]:
        """Each symbol's missing sessions in words, those before its first bar apart: a symbol
        listed after the start has no bar there, which is not a hole in its data. The holes
        after it are named gap by gap (``_gaps_in_words``)."""
        notes = []
        for symbol, days in sorted(self.gaps.items()):
            first = self.first_bars.get(symbol, days[0])
            before = [d for d in days if d < first]
            after = days[len(before):]
            parts = [f"first bar {first}, {_sessions(len(before))} into the period"] if before else []
            if after:
                parts.append(_gaps_in_words(after, self._asset_class(symbol)))
            notes.append(f"{symbol}: {'; '.join(parts)}")
        return notes

    def _asset_class(self, symbol: str) -> str:
        """The symbol's asset class in the run's universe (a run stored before the settings kept
        it traded stocks only)."""
        universe = self.settings.get("universe") or {}
        return next((asset_class for asset_class, section in universe.items()
                     if section and symbol in section["symbols"]), "stocks")

    def gate(self, gate: SuccessGate | None = None) -> list:
        return (gate or SuccessGate()).evaluate(self.metrics()["portfolio"])

    def frames(self) -> dict[str, pd.DataFrame]:
        curve = self.equity.copy()
        curve["drawdown"] = self.drawdown.to_numpy()
        curve["benchmark_equity"] = self.benchmark_curve.to_numpy()
        strategy_equity = self.strategy_equity.reset_index(names="ts")
        return {"equity": curve, "strategy_equity": strategy_equity, "orders": self.orders,
                "trades": self.fills, "positions": self.positions,
                "monthly_returns": self.monthly_returns().reset_index()}

    def export(self, directory: Path, fmt: ExportFormat | str = ExportFormat.PARQUET) -> list[Path]:
        """Write equity, strategy_equity, orders, trades, positions and monthly_returns, one file each."""
        if fmt not in ExportFormat.__members__.values():
            raise ValueError(f"export format {fmt!r}: expected one of {', '.join(ExportFormat)}")
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, frame in self.frames().items():
            path = directory / f"{name}.{fmt}"
            if fmt == ExportFormat.PARQUET:
                frame.to_parquet(path, index=False)
            else:
                frame.to_csv(path, index=False)
            written.append(path)
        return written


#: the gaps a note names one by one; the rest are counted
_NAMED_GAPS = 3


def _sessions(count: int, kind: str = "") -> str:
    """"1 session", "3 sessions" ("3 missing sessions" with a kind)."""
    return f"{count} {kind + ' ' if kind else ''}session{'' if count == 1 else 's'}"


def _gaps_in_words(days: list[str], asset_class: str) -> str:
    """Missing sessions (ISO days, ascending) as their gaps: each run of sessions in a row
    without a bar (on the asset class's calendar, so a weekend does not split a stock's gap,
    and does split a coin's) by its first and last day and its length, the first few named."""
    stamps = pd.DatetimeIndex(days, tz="UTC").as_unit("ns").asi8
    starts = [0, *(np.flatnonzero(skipped_days(asset_class, stamps) > 0) + 1)]
    runs = [days[a:b] for a, b in zip(starts, [*starts[1:], len(days)], strict=True)]
    if len(runs) == 1:
        only = runs[0]
        return f"{_sessions(len(days), 'missing')}: {only[0]}" + (f" to {only[-1]}" if len(only) > 1 else "")
    named = ", ".join(run[0] if len(run) == 1 else f"{run[0]} to {run[-1]} ({_sessions(len(run))})"
                      for run in runs[:_NAMED_GAPS])
    more = f" and {len(runs) - _NAMED_GAPS} more" if len(runs) > _NAMED_GAPS else ""
    return f"{_sessions(len(days), 'missing')} in {len(runs)} gaps: {named}{more}"


def _gross(positions: pd.DataFrame) -> pd.Series:
    """The gross value of the open positions at each bar that has any."""
    return positions["market_value"].abs().groupby(positions["ts"]).sum()
