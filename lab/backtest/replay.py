"""The historical clock: bar by bar, the live cycle's decision step on the same books,
rules and matcher.

At each bar the paper executor sees the bar of every symbol an account has open orders or
candidate entries in, then ``lab.trading.step.trade_step`` runs for that account exactly as
in the live cycle (book fills, mark, drawdown halt, exits, sized entries) with an
in-memory journal. Orders decided at bar t can only fill at a later bar (the executor's
rule), so the backtest cannot trade on the bar it decided on. Accounts with no position,
no open order and no candidate are skipped: for them a step would change nothing.

Nothing is stored while replaying; the result is stored in one go afterwards. The
per-bar valuation (equity, positions over time) is read off the manager's books into
arrays, so a bar without events costs a few vector operations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lab.backtest.decisions import Decisions
from lab.backtest.result import FILL_COLUMNS, ORDER_COLUMNS, POSITION_COLUMNS, BacktestResult
from lab.config import TradingConfig
from lab.trading.model import Fill, Order
from lab.trading.paper import Bar, PaperTradingExecutor
from lab.trading.portfolio import PortfolioManager
from lab.trading.step import Candidate, trade_step

__all__ = ["Market", "replay"]

_FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Market:
    """Dense bar arrays (time x symbol, NaN where a symbol has no bar) over the clock."""

    index: pd.DatetimeIndex
    symbols: list[str]
    arrays: dict[str, np.ndarray]
    asset_types: dict[str, str]

    @classmethod
    def from_bars(cls, bars: Mapping[str, pd.DataFrame], symbols: Sequence[str], start: pd.Timestamp,
                  end: pd.Timestamp, asset_types: Mapping[str, str]) -> Market:
        frames = {s: bars[s].loc[start:end] for s in symbols}
        stamps = np.unique(np.concatenate([f.index.as_unit("ns").asi8 for f in frames.values()]))
        index = pd.DatetimeIndex(pd.to_datetime(stamps, utc=True))
        arrays = {name: np.column_stack([frames[s][name].reindex(index).to_numpy(dtype=float) for s in symbols])
                  for name in _FIELDS}
        return cls(index, list(symbols), arrays, dict(asset_types))

    def bar(self, t: int, column: int) -> Bar:
        a = self.arrays
        return Bar(self.index[t], a["open"][t, column], a["high"][t, column], a["low"][t, column],
                   a["close"][t, column], a["volume"][t, column])


class _Journal:
    """A backtest account's journal: orders and fills in memory, each fill handed to ``on_fill``."""

    def __init__(self, on_fill: Callable[[Order, Fill], None]):
        self.open: dict[str, Order] = {}  # by client order id
        self.submitted: list[str] = []
        self._booked: set[str] = set()
        self._on_fill = on_fill

    def open_orders(self) -> list[Order]:
        return list(self.open.values())

    def store(self, order: Order, *, ref: Any = None) -> bool:
        if order.client_order_id in self.open or order.client_order_id in self.submitted:
            return False
        self.submitted.append(order.client_order_id)
        self.update(order)
        return True

    def update(self, order: Order) -> None:
        if order.status.is_open:
            self.open[order.client_order_id] = order
        else:
            self.open.pop(order.client_order_id, None)

    def book(self, order: Order, fill: Fill) -> bool:
        if fill.fill_id in self._booked:
            return False
        self._booked.add(fill.fill_id)
        self._on_fill(order, fill)
        self.update(order)
        return True

    def outcome(self, candidate: Candidate, status: str, reason: str | None) -> None:
        pass  # a backtest keeps its orders, not its signals

    def halted(self, reason: str) -> None:
        pass  # the manager holds the halt for the rest of the run

    def stage(self, name: str) -> None:
        pass


@dataclass
class _Account:
    manager: PortfolioManager
    broker: PaperTradingExecutor
    journal: _Journal


def replay(
    config: TradingConfig,
    market: Market,
    decisions: Decisions,
    *,
    portfolio: str,
    name: str,
    strategies: Sequence[str],
    benchmark_close: np.ndarray,
    per_symbol_accounts: bool = False,
    sectors: Mapping[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestResult:
    """Run the clock over ``market``; one shared account, or one per symbol (each with the
    full initial cash). ``config.universe`` must list every symbol (``backtest_config`` does that)."""
    symbols, n_bars = market.symbols, len(market.index)
    column = {s: i for i, s in enumerate(symbols)}
    cash = config.execution.initial_cash
    groups = [[s] for s in symbols] if per_symbol_accounts else [list(symbols)]
    accounts: list[_Account] = []
    account_of = {s: a for a, group in enumerate(groups) for s in group}

    slot = {(st, s): k for k, (st, s) in enumerate((st, s) for st in strategies for s in symbols)}
    slot_symbol = np.array([column[s] for st in strategies for s in symbols], dtype=int)
    slot_strategy = np.repeat(np.arange(len(strategies)), len(symbols))
    qty, avg, realized = (np.zeros(len(slot)) for _ in range(3))
    qty_hist, avg_hist = np.zeros((n_bars, len(slot))), np.zeros((n_bars, len(slot)))
    cash_hist, strategy_hist = np.zeros(n_bars), np.zeros((n_bars, len(strategies)))
    pnl_hist = np.zeros((n_bars, 2))  # realized, unrealized
    closes = pd.DataFrame(market.arrays["close"]).ffill().to_numpy()
    allocation = cash * len(groups) / len(strategies)
    fills: list[tuple] = []
    ordering: set[int] = set()  # accounts with open orders
    holding: set[int] = set()  # accounts with open positions
    account_cash = np.full(len(groups), cash)

    def booker(manager: PortfolioManager) -> Callable[[Order, Fill], None]:
        def on_fill(order: Order, fill: Fill) -> None:
            position = manager.apply_fill(fill, asset_type=order.asset_type, order=order)
            k = slot[(fill.strategy, fill.symbol)]
            fills.append((fill.fill_id, fill.client_order_id, fill.ts, fill.strategy, fill.symbol,
                          fill.side.value, fill.qty, fill.price, fill.fee, position.realized_pnl - realized[k]))
            qty[k], avg[k], realized[k] = position.qty, position.avg_price, position.realized_pnl

        return on_fill

    for _ in groups:
        manager = PortfolioManager(config, portfolio=portfolio, cash=cash, initial_cash=cash, sectors=sectors)
        accounts.append(_Account(manager, PaperTradingExecutor.from_config(config, cash=cash),
                                 _Journal(booker(manager))))

    for t in range(n_bars):
        as_of = market.index[t]  # a pd.Timestamp: a tz-aware datetime
        present = ~np.isnan(market.arrays["open"][t])
        prices = _Prices(closes[t], column, present)
        wanted: dict[int, list[Candidate]] = {}
        for record in decisions.entries(as_of, prices):
            if (a := account_of.get(record["symbol"])) is not None:
                wanted.setdefault(a, []).append(Candidate.from_record(record))
        for a in sorted(ordering | holding | set(wanted)):
            account, candidates = accounts[a], wanted.get(a, [])
            # the executor sees this bar of every symbol it may fill or price an order in
            if account.journal.open or candidates:
                for symbol in sorted({o.symbol for o in account.journal.open.values()}
                                     | {c.symbol for c in candidates}):
                    if present[column[symbol]]:
                        account.broker.on_bar(symbol, market.bar(t, column[symbol]))
            step = trade_step(account.manager, account.broker, account.journal, as_of=as_of, prices=prices,
                              asset_types=market.asset_types, checks=(),
                              exits=lambda pending, m=account.manager, ts=as_of: decisions.exits(ts, m, pending),
                              entries=lambda c=candidates: c)
            if step.fills:
                account_cash[a] = account.manager.cash
                holding.discard(a)
                if account.manager.open_positions():
                    holding.add(a)
            ordering.discard(a)
            if account.journal.open:
                ordering.add(a)
        # read the books into arrays
        cash_hist[t] = account_cash.sum()
        qty_hist[t], avg_hist[t] = qty, avg
        unrealized = np.nan_to_num(qty * (closes[t, slot_symbol] - avg))
        strategy_hist[t] = allocation + np.bincount(slot_strategy, realized + unrealized, minlength=len(strategies))
        pnl_hist[t] = realized.sum(), unrealized.sum()
        if progress is not None:
            progress(t + 1, n_bars)

    return _result(market, accounts, portfolio, name, strategies, symbols, benchmark_close, fills,
                   cash_hist, pnl_hist, qty_hist, avg_hist, strategy_hist, closes, slot_symbol, slot_strategy,
                   initial_cash=cash * len(accounts))


class _Prices(Mapping[str, float]):
    """This bar's closes of the symbols that traded, read lazily from the close row."""

    def __init__(self, row: np.ndarray, column: Mapping[str, int], present: np.ndarray):
        self._row, self._column, self._present = row, column, present

    def __getitem__(self, symbol: str) -> float:
        i = self._column.get(symbol)
        if i is None or not self._present[i]:
            raise KeyError(symbol)
        return float(self._row[i])

    def get(self, symbol: str, default=None):  # the books mark every bar: skip Mapping's try/except
        i = self._column.get(symbol)
        return default if i is None or not self._present[i] else float(self._row[i])

    def __iter__(self):
        return (s for s, i in self._column.items() if self._present[i])

    def __len__(self) -> int:
        return int(self._present.sum())


def _result(market: Market, accounts: list[_Account], portfolio: str, name: str, strategies: Sequence[str],
            symbols: list[str], benchmark_close: np.ndarray, fills: list[tuple], cash_hist: np.ndarray,
            pnl_hist: np.ndarray, qty_hist: np.ndarray, avg_hist: np.ndarray, strategy_hist: np.ndarray, closes: np.ndarray,
            slot_symbol: np.ndarray, slot_strategy: np.ndarray, *, initial_cash: float) -> BacktestResult:
    index = market.index
    values = qty_hist * closes[:, slot_symbol]
    positions_value = np.nansum(values, axis=1)
    equity = pd.DataFrame({"ts": index, "cash": cash_hist, "positions_value": positions_value,
                           "equity": cash_hist + positions_value, "realized_pnl": pnl_hist[:, 0],
                           "unrealized_pnl": pnl_hist[:, 1], "benchmark_close": benchmark_close})
    t_idx, k_idx = np.nonzero(qty_hist)
    positions = pd.DataFrame({
        "ts": index[t_idx], "strategy": np.asarray(strategies, dtype=object)[slot_strategy[k_idx]],
        "symbol": np.asarray(symbols, dtype=object)[slot_symbol[k_idx]], "qty": qty_hist[t_idx, k_idx],
        "avg_price": avg_hist[t_idx, k_idx], "last_price": closes[t_idx, slot_symbol[k_idx]],
        "market_value": values[t_idx, k_idx]}, columns=POSITION_COLUMNS
    ).sort_values(["ts", "strategy", "symbol"], ignore_index=True)
    orders = []
    for account in accounts:
        for coid in account.journal.submitted:
            o = account.broker.get_order(coid)
            orders.append((coid, o.created_at, o.strategy, o.symbol, o.asset_type, o.side.value, o.order_type.value,
                           o.intent.value, o.qty, o.status.value, o.filled_qty, o.avg_fill_price, o.reason))
    orders_frame = pd.DataFrame(orders, columns=ORDER_COLUMNS)
    fills_frame = pd.DataFrame(fills, columns=FILL_COLUMNS)
    for frame in (orders_frame, fills_frame):
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    strategy_equity = pd.DataFrame(strategy_hist, index=index, columns=list(strategies))
    strategy_equity.index.name = "ts"
    periods = 365 if any(market.asset_types.get(s) == "crypto" for s in symbols) else 252
    return BacktestResult(
        portfolio=portfolio, name=name, start=index[0], end=index[-1], strategies=list(strategies),
        symbols=list(symbols), benchmark="", initial_cash=initial_cash, periods_per_year=periods,
        equity=equity, strategy_equity=strategy_equity, orders=orders_frame, fills=fills_frame,
        positions=positions)
