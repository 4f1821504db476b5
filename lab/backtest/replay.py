"""The historical clock: bar by bar, the live cycle's decision step on the same books,
rules and matcher.

At each bar the paper executor sees the bar of every symbol an account has open orders or
candidate entries in, then ``lab.trading.step.trade_step`` runs for that account exactly as
in the live cycle (book fills, mark, drawdown halt, exits, sized entries) with an
in-memory journal. As in the cycle, every order passes pre-trade validation (``_PreTrade``),
and no entry or exit is decided in an asset class whose market is closed at the bar (a
weekend or holiday of a clock that crypto keeps going). Orders decided at bar t can only
fill at a later bar (the executor's rule), so the backtest cannot trade on the bar it
decided on. An account is stepped only at bars where its step could do something
(``_Idle``): it has open orders or candidates, an exit may be due in a symbol it holds, or
its drawdown nears the halt; before that step its books catch up on the marks and equity
peak of the bars it skipped.

Nothing is stored while replaying; the result is stored in one go afterwards. The
valuation (equity, positions over time) is read off the books after each bar that booked a
fill and computed for every bar in arrays at the end.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import cached_property, partial
from operator import attrgetter
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from lab.backtest.data import datetimes, nanoseconds, span
from lab.backtest.decisions import Decisions
from lab.backtest.funnel import SignalFunnel
from lab.backtest.result import FILL_COLUMNS, ORDER_COLUMNS, POSITION_COLUMNS, BacktestResult
from lab.config import TradingConfig
from lab.trading.calendar import open_at
from lab.trading.model import Fill, Intent, Order, OrderStatus, OrderType, Side
from lab.trading.paper import Bar, PaperTradingExecutor
from lab.trading.portfolio import PortfolioManager
from lab.trading.pretrade import validate_order
from lab.trading.step import Candidate, trade_step

__all__ = ["Market", "replay"]

_FIELDS = ("open", "high", "low", "close", "volume")
#: each enum member's value, looked up (``.value`` is a slow descriptor on Python 3.11)
_TEXT_TYPES = (Side, OrderType, Intent, OrderStatus)
_TEXT: dict[StrEnum, str] = {m: m.value for e in _TEXT_TYPES for m in e}


@dataclass(frozen=True)
class Market:
    """Dense bars over the clock: ``values[t, j]`` holds symbol j's open, high, low, close and
    volume at bar t (NaN where it has no bar)."""

    index: pd.DatetimeIndex
    symbols: list[str]
    values: np.ndarray  # time x symbol x field
    asset_types: dict[str, str]

    @cached_property
    def has_bar(self) -> np.ndarray:
        """Time x symbol: True where the symbol has a bar."""
        return ~np.isnan(self.arrays["open"])

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        """Each field's time x symbol view."""
        return {name: self.values[:, :, i] for i, name in enumerate(_FIELDS)}

    @cached_property
    def stamps(self) -> list[datetime]:
        """The clock's bars as datetimes (``datetimes``): every order and fill carries one."""
        return datetimes(self.index)

    @classmethod
    def from_bars(cls, bars: Mapping[str, pd.DataFrame], symbols: Sequence[str], start: pd.Timestamp,
                  end: pd.Timestamp, asset_types: Mapping[str, str]) -> Market:
        spans = {s: span(bars[s].index, start, end) for s in symbols}
        own = {s: nanoseconds(bars[s].index)[spans[s]] for s in symbols}
        # symbols mostly share their stamps: each distinct set is merged, checked and placed once
        distinct = {times.tobytes(): times for times in own.values()}
        stamps = np.unique(np.concatenate(list(distinct.values())))
        index = pd.DatetimeIndex(pd.to_datetime(stamps, utc=True))
        values = np.full((len(index), len(symbols), len(_FIELDS)), np.nan)
        rows: dict[bytes, np.ndarray] = {}
        for j, s in enumerate(symbols):
            if (key := own[s].tobytes()) not in rows:
                if (np.diff(np.sort(own[s])) == 0).any():
                    raise ValueError(f"{s}: more than one bar at the same time")
                rows[key] = np.searchsorted(stamps, own[s])
            frame = bars[s] if tuple(bars[s].columns) == _FIELDS else bars[s][list(_FIELDS)]
            values[rows[key], j] = frame.to_numpy(dtype=float)[spans[s]]
        return cls(index, list(symbols), values, dict(asset_types))

    def bar(self, t: int, column: int) -> Bar:
        """Symbol ``column``'s bar ``t`` in Python floats (the executor's arithmetic on it is
        several times slower in NumPy scalars, and it carries on into the books)."""
        return Bar(self.stamps[t], *self.values[t, column].tolist())


class _Journal:
    """A backtest account's journal: orders and fills in memory, each fill handed to ``on_fill``."""

    def __init__(self, on_fill: Callable[[Order, Fill], None], funnel: SignalFunnel):
        self.open: dict[str, Order] = {}  # by client order id
        self.submitted: list[str] = []  # every recorded order's id, in order
        self.refused: dict[str, Order] = {}  # the orders pre-trade checks refused, by id
        self._recorded: set[str] = set()  # the submitted ids, to look up
        self._booked: set[str] = set()
        self._on_fill = on_fill
        self.outcome = funnel.outcome  # a backtest keeps its orders, and counts its signals

    def open_orders(self) -> list[Order]:
        return list(self.open.values())

    def store(self, order: Order, *, ref: Any = None) -> bool:
        if order.client_order_id in self._recorded:
            return False
        self.submitted.append(order.client_order_id)
        self._recorded.add(order.client_order_id)
        if order.status is OrderStatus.REJECTED:  # refused before the broker saw it
            self.refused[order.client_order_id] = order
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

    def halted(self, reason: str) -> None:
        pass  # the manager holds the halt for the rest of the run

    def stage(self, name: str) -> None:
        pass


class _PreTrade:
    """The live cycle's pre-trade validation of an account's orders (``validate_order``:
    allow-list, price band, per-order and per-day notional); a stored run has no kill switch.
    The day's notional is counted as the cycle counts it: the fills booked that (UTC) day and
    what the orders placed that day may still fill."""

    def __init__(self, config: TradingConfig):
        self._config = config
        self.journal: _Journal | None = None  # the account's, whose open orders count
        self._day: date | None = None
        self._filled = 0.0  # notional of the fills booked on ``_day``
        self.as_of: datetime | None = None  # the step's decision time and prices, set before it
        self.prices: Mapping[str, float] = {}

    def booked(self, fill: Fill) -> None:
        if (day := fill.ts.date()) != self._day:
            self._day, self._filled = day, 0.0
        self._filled += fill.qty * fill.price

    def __call__(self, order: Order) -> str | None:
        return validate_order(order, last_price=self.prices.get(order.symbol, math.nan), config=self._config,
                              notional_today=self._today())

    def _today(self) -> float:
        day = self.as_of.date()
        filled = self._filled if self._day == day else 0.0
        if not self.journal.open:
            return filled
        return filled + math.fsum(o.open_notional(self.prices.get(o.symbol))
                                  for o in self.journal.open.values() if o.created_at.date() == day)


@dataclass
class _Account:
    manager: PortfolioManager
    broker: PaperTradingExecutor
    journal: _Journal
    pretrade: _PreTrade


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
    qty, avg, realized = (np.zeros(len(slot)) for _ in range(3))
    # the books after each bar that booked a fill; the other bars' rows are copied at the end
    qty_hist, avg_hist, realized_hist = (np.zeros((n_bars, len(slot))) for _ in range(3))
    cash_hist = np.zeros((n_bars, len(groups)))
    booked = np.zeros(n_bars, dtype=bool)
    booked[0] = True
    closes = pd.DataFrame(market.arrays["close"]).ffill().to_numpy()
    known = np.isfinite(closes)
    allocation = cash * len(groups) / len(strategies)
    fills: list[Fill] = []
    fill_realized: list[float] = []  # the P&L each fill realized
    fill_pair: list[str | None] = []  # the pair each fill's order is a leg of
    ordering: set[int] = set()  # accounts with open orders
    holding: set[int] = set()  # accounts with open positions
    account_cash = np.full(len(groups), cash)
    funnel = SignalFunnel()
    # as the live cycle: no entries or exits in a market the broker's calendar has closed
    open_by_class = {c: open_at(c, market.index) for c in {market.asset_types.get(s, "stocks") for s in symbols}}
    closed_at = [frozenset(c for c, is_open in open_by_class.items() if not is_open[t]) for t in range(n_bars)]
    idle = _Idle(market, closes, decisions.exit_mask(market.index, symbols), slot_symbol,
                 np.array([account_of[symbols[i]] for i in slot_symbol], dtype=int), len(groups),
                 cash=cash, limit=config.risk.max_drawdown_halt)

    def booker(manager: PortfolioManager, pretrade: _PreTrade) -> Callable[[Order, Fill], None]:
        def on_fill(order: Order, fill: Fill) -> None:
            position = manager.apply_fill(fill, asset_type=order.asset_type, order=order)
            pretrade.booked(fill)
            k = slot[(fill.strategy, fill.symbol)]
            fills.append(fill)
            fill_realized.append(position.realized_pnl - realized[k])
            fill_pair.append(order.pair)
            qty[k], avg[k], realized[k] = position.qty, position.avg_price, position.realized_pnl

        return on_fill

    for _ in groups:
        manager = PortfolioManager(config, portfolio=portfolio, cash=cash, initial_cash=cash, sectors=sectors)
        pretrade = _PreTrade(config)
        pretrade.journal = journal = _Journal(booker(manager, pretrade), funnel)
        accounts.append(_Account(manager, PaperTradingExecutor.from_config(config, cash=cash), journal, pretrade))

    with _heap_frozen():  # the collector scans only what the replay and its result allocate
        for t in range(n_bars):
            as_of = market.stamps[t]
            present = market.has_bar[t]
            prices = _Prices(closes[t], column, present)  # the symbols with a bar now, to decide on
            last_prices = _Prices(closes[t], column, known[t])  # every symbol's last close, as the cycle's books see
            closed = closed_at[t]
            wanted: dict[int, list[Candidate]] = {}
            for candidate in decisions.entries(as_of, prices, closed):
                funnel.offered(candidate)
                # a pair's legs must share an account (so per-symbol accounts never trade pairs)
                owners = {account_of.get(leg) for leg in candidate.symbol.split("/")}
                if len(owners) == 1 and (a := owners.pop()) is not None:
                    wanted.setdefault(a, []).append(candidate)
                else:
                    funnel.outcome(candidate, "skipped", "its legs are in two accounts (per-symbol accounts)")
            for a in sorted(ordering | idle.due(t, qty, account_cash, holding) | set(wanted)):
                account, candidates = accounts[a], wanted.get(a, [])
                if a in holding:
                    idle.catch_up(a, t, account.manager, column)
                # the executor sees this bar of every symbol it may fill or price an order in
                if account.journal.open or candidates:
                    for symbol in sorted({o.symbol for o in account.journal.open.values()}
                                         | {leg for c in candidates for leg in c.symbol.split("/")}):
                        if present[column[symbol]]:
                            account.broker.on_bar(symbol, market.bar(t, column[symbol]))
                account.pretrade.as_of, account.pretrade.prices = as_of, last_prices
                step = trade_step(account.manager, account.broker, account.journal, as_of=as_of, prices=last_prices,
                                  asset_types=market.asset_types, checks=(account.pretrade,), closed=closed,
                                  exits=partial(decisions.exits, as_of, account.manager), entries=candidates.copy)
                if candidates and account.manager.halted:  # the step asked for no entries
                    for candidate in candidates:
                        funnel.outcome(candidate, "skipped", f"entries halted: {account.manager.halt_reason}")
                if step.fills:
                    booked[t] = True
                    account_cash[a] = account.manager.cash
                    holding.discard(a)
                    if held := account.manager.open_positions():
                        holding.add(a)
                    idle.held(a, [column[p.symbol] for p in held])
                idle.stepped(a, t, account.manager)
                ordering.discard(a)
                if account.journal.open:
                    ordering.add(a)
            if booked[t]:
                qty_hist[t], avg_hist[t], realized_hist[t], cash_hist[t] = qty, avg, realized, account_cash
            if progress is not None:
                progress(t + 1, n_bars)

        latest = np.maximum.accumulate(np.where(booked, np.arange(n_bars), 0))  # each bar's row of the books
        result = _result(market, accounts, portfolio, name, strategies, symbols, benchmark_close, fills,
                         fill_realized, fill_pair, *(h[latest] for h in (cash_hist, qty_hist, avg_hist, realized_hist)), closes,
                         slot_symbol, allocation=allocation, initial_cash=cash * len(accounts))
        result.funnel = funnel.summary(strategies, decisions.screening(), result.orders)
        return result


_YOUNG = 50_000  # allocations between the collector's passes over young objects while replaying


@contextmanager
def _heap_frozen() -> Iterator[None]:
    """Leave the objects that exist before the replay (modules, frames, bars) out of the
    garbage collector's passes while it runs: the full passes that the replay's many small
    objects trigger otherwise rescan them all. The youngest generation is collected every
    ``_YOUNG`` allocations, not the default 700: the replay's objects are mostly freed by
    reference counting or kept to the end. (Orders, fills and positions are not tracked at
    all, so this saves a few percent of a run now, down from a tenth.)"""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(_YOUNG, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


class _Idle:
    """Which holding accounts a bar's step would leave as they are, and bringing a skipped
    account's books up to date before its next step.

    A step on an account without open orders or candidates books nothing; it places an order
    only when an exit is due or the drawdown halt starts, and otherwise just marks the
    positions and tracks the equity peak. So a holding account is skipped at a bar when
    ``Decisions.exit_mask`` clears its symbols there and its equity is clear of the halt (by a
    margin); before its next step the manager itself marks the highest skipped equity
    (``update_drawdown``) and the last skipped bar (``mark``). The equity computed here in
    arrays equals the manager's (a fsum) when the account holds at most two positions and
    their closes are finite wherever they have a bar: other accounts are stepped every bar.
    """

    _MARGIN = 1e-9  # drawdown this close to the halt limit is stepped, whatever the rounding

    def __init__(self, market: Market, closes: np.ndarray, exit_mask: np.ndarray | None, slot_symbol: np.ndarray,
                 slot_account: np.ndarray, n_accounts: int, *, cash: float, limit: float):
        self._closes, self._finite = closes, np.isfinite(closes)
        self._slot_closes = np.ascontiguousarray(closes[:, slot_symbol])
        self._slot_exits = None if exit_mask is None else np.ascontiguousarray(exit_mask[:, slot_symbol])
        self._slot_account = slot_account
        # drawdown >= limit is equity <= peak * (1 - limit); the margin covers the rounding
        self._halt_share = 1 - limit + self._MARGIN
        self._equity = np.zeros((len(closes), n_accounts))  # each bar's, before its steps
        self._peak = np.full(n_accounts, cash)
        self._last = [-1] * n_accounts  # the bar each account was last stepped
        odd = market.has_bar & ~np.isfinite(market.arrays["close"])
        self._odd_close = set(np.flatnonzero(odd.any(axis=0)).tolist())
        self._loud: set[int] = set()
        self._no_exits = np.zeros(len(slot_account), dtype=bool)
        self._due = np.zeros(n_accounts, dtype=np.int64)  # the accounts due, filled by ``_due_accounts``

    def due(self, t: int, qty: np.ndarray, cash: np.ndarray, holding: set[int]) -> set[int]:
        """The holding accounts to step at bar ``t`` (before its steps)."""
        if not holding:
            return set()  # flat accounts: equity is cash, below the peak their last step saw
        exits = self._no_exits if self._slot_exits is None else self._slot_exits[t]
        count = _due_accounts(qty, self._slot_closes[t], exits, self._slot_account, cash, self._peak,
                              self._halt_share, self._equity[t], self._due)
        if self._slot_exits is None:
            return set(holding)
        return (self._loud | set(self._due[:count].tolist())) & holding

    def catch_up(self, a: int, t: int, manager: PortfolioManager, column: Mapping[str, int]) -> None:
        """What the steps skipped since the account's last one would have done to its books."""
        last = self._last[a]
        if last >= t - 1:
            return
        skipped = self._equity[last + 1:t, a]
        top = int(np.argmax(skipped))
        if skipped[top] > manager.peak_equity:
            manager.mark(self._prices(last + 1 + top, column))
            if manager.update_drawdown():
                raise RuntimeError(f"the replay skipped bar {last + 1 + top}, which halts account {a}")
        manager.mark(self._prices(t - 1, column))

    def stepped(self, a: int, t: int, manager: PortfolioManager) -> None:
        self._last[a], self._peak[a] = t, manager.peak_equity

    def held(self, a: int, columns: list[int]) -> None:
        """After a fill: the columns the account holds positions in."""
        if len(columns) > 2 or not self._odd_close.isdisjoint(columns):
            self._loud.add(a)
        else:
            self._loud.discard(a)

    def _prices(self, t: int, column: Mapping[str, int]) -> _Prices:
        return _Prices(self._closes[t], column, self._finite[t])


@njit(cache=True)
def _due_accounts(qty: np.ndarray, closes: np.ndarray, exits: np.ndarray, slot_account: np.ndarray,
                  cash: np.ndarray, peak: np.ndarray, halt_share: float, equity: np.ndarray, due: np.ndarray) -> int:
    """One bar of ``_Idle.due`` in one compiled pass (a few microseconds of NumPy calls per
    bar otherwise, which a run over few symbols feels): each account's equity (cash plus the
    sum of its held slots' values, summed in slot order), its peak (NaN once either is NaN, as
    ``np.maximum``), and into ``due`` the accounts at the halt margin or holding a flagged
    exit; returns how many."""
    n = len(cash)
    value = np.zeros(n)
    flagged = np.zeros(n, dtype=np.bool_)
    for k in range(len(qty)):
        if qty[k] != 0.0:
            a = slot_account[k]
            value[a] += qty[k] * closes[k]
            flagged[a] |= exits[k]
    count = 0
    for a in range(n):
        e = equity[a] = cash[a] + value[a]
        if np.isnan(e) or np.isnan(peak[a]):
            peak[a] = np.nan
        elif e > peak[a]:
            peak[a] = e
        if flagged[a] or e <= peak[a] * halt_share:
            due[count] = a
            count += 1
    return count


class _Prices(Mapping[str, float]):
    """This bar's closes of the symbols that traded, read lazily from the close row."""

    def __init__(self, row: np.ndarray, column: Mapping[str, int], present: np.ndarray):
        self._row, self._column, self._present = row, column, present

    def __getitem__(self, symbol: str) -> float:
        i = self._column.get(symbol)
        if i is None or not self._present[i]:
            raise KeyError(symbol)
        return float(self._row[i])

    def __contains__(self, symbol: object) -> bool:
        i = self._column.get(symbol)  # type: ignore[call-overload]
        return i is not None and bool(self._present[i])

    def get(self, symbol: str, default=None):  # the books mark every bar: skip Mapping's try/except
        i = self._column.get(symbol)
        return default if i is None or not self._present[i] else float(self._row[i])

    def __iter__(self):
        return (s for s, i in self._column.items() if self._present[i])

    def __len__(self) -> int:
        return int(self._present.sum())


def _result(market: Market, accounts: list[_Account], portfolio: str, name: str, strategies: Sequence[str],
            symbols: list[str], benchmark_close: np.ndarray, fills: list[Fill], fill_realized: list[float],
            fill_pair: list[str | None],
            cash_hist: np.ndarray, qty_hist: np.ndarray, avg_hist: np.ndarray, realized_hist: np.ndarray,
            closes: np.ndarray,
            slot_symbol: np.ndarray, *, allocation: float, initial_cash: float) -> BacktestResult:
    index = market.index
    slot_strategy = np.repeat(np.arange(len(strategies)), len(symbols))
    values = qty_hist * closes[:, slot_symbol]
    positions_value = np.nansum(values, axis=1)
    cash_hist = cash_hist.sum(axis=1)
    unrealized = np.nan_to_num(qty_hist * (closes[:, slot_symbol] - avg_hist))
    # each strategy's slots in slot order, summed one after the other
    by_strategy = (realized_hist + unrealized).reshape(len(index), len(strategies), len(symbols))
    strategy_hist = allocation + np.cumsum(by_strategy, axis=2)[:, :, -1]
    equity = pd.DataFrame({"ts": index, "cash": cash_hist, "positions_value": positions_value,
                           "equity": cash_hist + positions_value, "realized_pnl": realized_hist.sum(axis=1),
                           "unrealized_pnl": unrealized.sum(axis=1), "benchmark_close": benchmark_close})
    # rows by ts, strategy, symbol: the slots in name order, then row-major nonzero
    by_name = sorted(range(len(slot_symbol)), key=lambda k: (strategies[slot_strategy[k]], symbols[slot_symbol[k]]))
    t_idx, rank = np.nonzero(qty_hist[:, by_name])
    k_idx = np.asarray(by_name, dtype=int)[rank]
    positions = pd.DataFrame({
        "ts": index[t_idx], "strategy": _names(strategies, slot_strategy[k_idx]),
        "symbol": _names(symbols, slot_symbol[k_idx]), "qty": qty_hist[t_idx, k_idx],
        "avg_price": avg_hist[t_idx, k_idx], "last_price": closes[t_idx, slot_symbol[k_idx]],
        "market_value": values[t_idx, k_idx]}, columns=POSITION_COLUMNS)
    orders = [account.journal.refused.get(coid) or account.broker.get_order(coid)
              for account in accounts for coid in account.journal.submitted]
    orders_frame = _frame(orders, dict(zip(ORDER_COLUMNS, _ORDER_FIELDS, strict=True)))
    fills_frame = _frame(fills, dict(zip(FILL_COLUMNS, _FILL_FIELDS, strict=True)), realized_pnl=fill_realized,
                         pair=fill_pair)
    strategy_equity = pd.DataFrame(strategy_hist, index=index, columns=list(strategies))
    strategy_equity.index.name = "ts"
    periods = 365 if any(market.asset_types.get(s) == "crypto" for s in symbols) else 252
    return BacktestResult(
        portfolio=portfolio, name=name, start=index[0], end=index[-1], strategies=list(strategies),
        symbols=list(symbols), benchmark="", initial_cash=initial_cash, periods_per_year=periods,
        equity=equity, strategy_equity=strategy_equity, orders=orders_frame, fills=fills_frame,
        positions=positions)


#: each result column's attribute of an Order / a Fill (None: given apart)
_ORDER_FIELDS = ("client_order_id", "created_at", "strategy", "symbol", "asset_type", "side", "order_type", "intent",
                 "qty", "status", "filled_qty", "avg_fill_price", "reason", "pair")
_FILL_FIELDS = ("fill_id", "client_order_id", "ts", "strategy", "symbol", "side", "qty", "price", "fee", None, None)


def _frame(items: list, fields: Mapping[str, str | None], **given: list) -> pd.DataFrame:
    """A frame of one column per field, read off the items with ``attrgetter`` (enum members
    as their text) and built as its dtype's array (``_column``); ``ts`` becomes UTC nanoseconds."""
    columns = {name: given[name] if attr is None else list(map(attrgetter(attr), items))
               for name, attr in fields.items()}
    frame = pd.DataFrame({name: _column(values) for name, values in columns.items()} if items else None,
                         columns=list(fields))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ns")  # as the clock's (datetimes infer us)
    return frame


def _column(values: list) -> Sequence:
    """A column's values in the array its dtype takes (pandas' inference per row is many
    times slower on text); anything else as it is."""
    kind = type(values[0])
    if issubclass(kind, float):  # NumPy's float64 too
        return np.array(values, dtype=float)  # None: NaN
    if kind in _TEXT_TYPES:
        values = list(map(_TEXT.__getitem__, values))
        kind = str
    return pd.array(values, dtype="str") if kind is str else values


def _names(names: Sequence[str], codes: np.ndarray) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """``names[codes]`` as the frame's string column: the array's take over the few names,
    not a conversion of one Python string per row (a position row per symbol and bar). An
    empty column stays the object array pandas gives it."""
    if not len(codes):
        return np.asarray(names, dtype=object)[codes]
    return pd.Index(names).array.take(codes)
