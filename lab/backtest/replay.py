"""The historical clock: bar by bar, the same books, rules and matcher as the live cycle.

At each bar, in the live cycle's order: the paper executor matches open orders against the
bar (fills are booked by the portfolio manager), positions are marked and the drawdown
halt is checked, exits are placed, then entries are sized by the manager under every risk
rule and submitted. Orders decided at bar t can only fill at a later bar (the executor's
rule), so the backtest cannot trade on the bar it decided on.

Nothing is stored while replaying; the result is stored in one go afterwards. The
per-bar valuation (equity, positions over time) is read off the manager's books into
arrays, so a bar without events costs a few vector operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lab.backtest.decisions import Decisions
from lab.backtest.result import FILL_COLUMNS, ORDER_COLUMNS, POSITION_COLUMNS, BacktestResult
from lab.config import TradingConfig
from lab.trading.model import Intent, Order, OrderType, Side, client_order_id
from lab.trading.paper import Bar, PaperTradingExecutor
from lab.trading.portfolio import PortfolioManager

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


@dataclass
class _Account:
    manager: PortfolioManager
    broker: PaperTradingExecutor
    open_orders: dict[str, Order] = field(default_factory=dict)  # by client order id
    submitted: list[str] = field(default_factory=list)


def _account(config: TradingConfig, portfolio: str, cash: float, sectors: Mapping[str, str]) -> _Account:
    manager = PortfolioManager(config, portfolio=portfolio, cash=cash, initial_cash=cash, sectors=sectors)
    return _Account(manager, PaperTradingExecutor.from_config(config, cash=cash))


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
    accounts = [_account(config, portfolio, cash, sectors or {}) for _ in groups]
    account_of = {s: a for a, group in enumerate(groups) for s in group}

    slot = {(st, s): k for k, (st, s) in enumerate((st, s) for st in strategies for s in symbols)}
    slot_symbol = np.array([column[s] for st in strategies for s in symbols], dtype=int)
    slot_strategy = np.repeat(np.arange(len(strategies)), len(symbols))
    qty, avg, realized = (np.zeros(len(slot)) for _ in range(3))
    qty_hist, avg_hist = np.zeros((n_bars, len(slot))), np.zeros((n_bars, len(slot)))
    cash_hist, strategy_hist = np.zeros(n_bars), np.zeros((n_bars, len(strategies)))
    pnl_hist = np.zeros((n_bars, 2))  # realized, unrealized
    closes = pd.DataFrame(market.arrays["close"]).ffill().to_numpy()
    allocation = cash * len(accounts) / len(strategies)
    fills: list[tuple] = []
    ordering: set[int] = set()  # accounts with open orders
    holding: set[int] = set()  # accounts with open positions
    account_cash = np.full(len(accounts), cash)

    def book(a: int, new_fills: list) -> None:
        account = accounts[a]
        for fill in new_fills:
            order = account.broker.get_order(fill.client_order_id)
            position = account.manager.apply_fill(fill, asset_type=order.asset_type, order=order)
            k = slot[(fill.strategy, fill.symbol)]
            fills.append((fill.fill_id, fill.client_order_id, fill.ts, fill.strategy, fill.symbol,
                          fill.side.value, fill.qty, fill.price, fill.fee, position.realized_pnl - realized[k]))
            qty[k], avg[k], realized[k] = position.qty, position.avg_price, position.realized_pnl
        if new_fills:
            account_cash[a] = account.manager.cash
            holding.discard(a)
            if account.manager.open_positions():
                holding.add(a)

    def submit(a: int, order: Order) -> None:
        account = accounts[a]
        answer = account.broker.submit(order)
        account.submitted.append(order.client_order_id)
        if answer.status.is_open:
            account.open_orders[order.client_order_id] = answer
            ordering.add(a)

    def feed(a: int, symbol: str, t: int, present: np.ndarray, fed: set[str]) -> None:
        if symbol not in fed and present[column[symbol]]:
            fed.add(symbol)
            book(a, accounts[a].broker.on_bar(symbol, market.bar(t, column[symbol])))

    for t in range(n_bars):
        as_of = market.index[t]  # a pd.Timestamp: a tz-aware datetime
        present = ~np.isnan(market.arrays["open"][t])
        prices = _Prices(closes[t], column, present)
        fed: set[str] = set()  # symbols whose bar the executor has seen at t

        # 1. match open orders against this bar
        for a in sorted(ordering):
            account = accounts[a]
            for symbol in sorted({o.symbol for o in account.open_orders.values()}):
                feed(a, symbol, t, present, fed)
            account.open_orders = {c: o for c in account.open_orders
                                   if (o := account.broker.get_order(c)).status.is_open}
            if not account.open_orders:
                ordering.discard(a)
        # 2. mark, drawdown halt; 3. exits
        for a in sorted(holding):
            manager = accounts[a].manager
            manager.mark(prices)
            manager.update_drawdown()
            for decision in decisions.exits(as_of, manager, list(accounts[a].open_orders.values())):
                p = decision.position
                submit(a, _order(portfolio, as_of, p.strategy, p.symbol, Side.SELL if p.qty > 0 else Side.BUY,
                                 abs(p.qty), decision.intent, market.asset_types[p.symbol]))
        # 4. entries, best first, each sized by its account's manager under every risk rule
        for s in decisions.entries(as_of, prices):
            a = account_of.get(s["symbol"])
            if a is None or accounts[a].manager.halted:
                continue
            manager, asset_type = accounts[a].manager, market.asset_types[s["symbol"]]
            stop, take, rr = (None if _missing(s[k]) else float(s[k]) for k in ("stop_loss", "take_profit", "rr"))
            entry, side = float(s["entry"]), Side(s["side"])
            wanted = manager.target_qty(entry=entry, stop_loss=stop, confidence=float(s["confidence"]), rr=rr,
                                        asset_type=asset_type)
            decision = manager.size_entry(strategy=s["strategy"], symbol=s["symbol"], side=side, entry=entry,
                                          qty=wanted, asset_type=asset_type,
                                          pending=list(accounts[a].open_orders.values()))
            if decision.qty > 0:
                feed(a, s["symbol"], t, present, fed)  # the executor prices the order off this bar's close
                submit(a, _order(portfolio, as_of, s["strategy"], s["symbol"], side, decision.qty, Intent.ENTRY,
                                 asset_type, stop_loss=stop, take_profit=take))
        # 5. read the books into arrays
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


def _order(portfolio: str, as_of, strategy: str, symbol: str, side: Side, qty: float, intent: Intent,
           asset_type: str, *, stop_loss: float | None = None, take_profit: float | None = None) -> Order:
    return Order(client_order_id=client_order_id(portfolio, as_of, strategy, symbol, intent), portfolio=portfolio,
                 strategy=strategy, symbol=symbol, asset_type=asset_type, side=side, qty=qty,
                 order_type=OrderType.MARKET, intent=intent, created_at=as_of, stop_loss=stop_loss,
                 take_profit=take_profit)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class _Prices(Mapping[str, float]):
    """This bar's closes of the symbols that traded, read lazily from the close row."""

    def __init__(self, row: np.ndarray, column: Mapping[str, int], present: np.ndarray):
        self._row, self._column, self._present = row, column, present

    def __getitem__(self, symbol: str) -> float:
        i = self._column.get(symbol)
        if i is None or not self._present[i]:
            raise KeyError(symbol)
        return float(self._row[i])

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
        for coid in account.submitted:
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
