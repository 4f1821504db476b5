"""One decision step of the trading engine, the same for the live cycle and for backtests.

Given the books (``PortfolioManager``), a broker, the latest prices and where exits and
entries come from, a step: books every new fill of the open orders, marks the positions,
checks the drawdown halt, places the exits, then (unless halted) sizes every candidate
entry under the risk rules and places it; each order passes the pre-trade checks and is
recorded in the journal before it is submitted. What the step does not know is where the
books live: a ``Journal`` records orders, fills and signal outcomes (the cycle: in SQL, one
transaction per fill; a backtest: in memory), and hears each named stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec

from lab.trading.broker import BrokerInterface, OrderNotFound
from lab.trading.model import Fill, Intent, Order, OrderStatus, OrderType, Side, client_order_id
from lab.trading.portfolio import ExitDecision, PortfolioManager

__all__ = ["Bookkeeper", "Candidate", "Journal", "PreTradeCheck", "StepResult", "record", "sync", "trade_step"]

#: a pre-trade check returns None to pass or the reason to reject the order
PreTradeCheck = Callable[[Order], str | None]


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """An entry the signals ask for, before sizing; ``ref`` is the journal's handle of its signal."""

    strategy: str
    symbol: str
    side: Side
    entry: float
    confidence: float
    stop_loss: float | None = None
    take_profit: float | None = None
    #: Kelly's odds (``lab.trading.signals``): expected win per unit of expected loss
    odds: float | None = None
    #: a pair's ("AAA/BBB"): the value of BBB held against each unit of AAA's value
    hedge_ratio: float | None = None
    ref: Any = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any], ref: Any = None) -> Candidate:
        """From a signal row (``lab.trading.signals`` columns); missing levels become None."""
        def level(key: str) -> float | None:
            value = record.get(key)
            return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

        return cls(strategy=record["strategy"], symbol=record["symbol"], side=Side(record["side"]),
                   entry=float(record["entry"]), confidence=float(record["confidence"]),
                   stop_loss=level("stop_loss"), take_profit=level("take_profit"),
                   odds=level("odds"), hedge_ratio=level("hedge_ratio"), ref=ref)


class Bookkeeper(Protocol):
    """Where a broker's answers about recorded orders go: their fills and their status."""

    def update(self, order: Order) -> None:
        """Record the broker's view of a recorded order (status, reason, broker id)."""
        ...

    def book(self, order: Order, fill: Fill) -> bool:
        """Apply the fill to the manager and record it; False when it was booked already."""
        ...

    def stage(self, name: str) -> None:
        """A named point of the step was reached."""
        ...


class Journal(Bookkeeper, Protocol):
    """Where a step's orders, fills and outcomes are recorded."""

    def open_orders(self) -> list[Order]:
        """The recorded orders still pending or partially filled, with their booked fills."""
        ...

    def store(self, order: Order, *, ref: Any = None) -> bool:
        """Record an order before it is submitted; False when its client id is recorded already."""
        ...

    def outcome(self, candidate: Candidate, status: str, reason: str | None) -> None:
        """What became of a candidate: ``ordered`` or ``skipped`` (with why)."""
        ...

    def halted(self, reason: str) -> None:
        """The drawdown halt started."""
        ...


class StepResult(msgspec.Struct):
    fills: int = 0
    placed: int = 0
    rejected: int = 0
    exits: int = 0
    notes: list[str] = msgspec.field(default_factory=list)


def sync(broker: BrokerInterface, journal: Bookkeeper, orders: Iterable[Order], result: StepResult,
         checks: Sequence[PreTradeCheck] = ()) -> None:
    """Book every new fill of the given recorded orders; submit any the broker never got
    (recorded before a crash), once it passes the pre-trade checks as a new order must (the
    kill switch engaged since then included)."""
    for recorded in orders:
        try:
            current = broker.get_order(recorded.client_order_id)
        except OrderNotFound:
            if (refusal := _refusal(checks, recorded)) is not None:
                journal.update(recorded.rejected(refusal))
                result.rejected += 1
                continue
            current = broker.submit(recorded)
            journal.update(current)  # the broker's order now: its id and status are recorded
        record(journal, recorded, current, result)


def record(journal: Bookkeeper, recorded: Order, current: Order, result: StepResult) -> Order:
    """Take the broker's ``current`` view of a ``recorded`` order into the books: the fills not
    booked yet, then its status once it is finished (an open one is synced again later, so a
    fill is never left behind a finished status). Returns ``current`` as the recorded order (a
    real broker's view names no strategy)."""
    if current.strategy != recorded.strategy:
        current = recorded.with_broker_state(current)
    _book(journal, current, result)
    if not current.status.is_open:
        journal.update(current)
    return current


def _book(journal: Bookkeeper, order: Order, result: StepResult) -> None:
    """Book the fills of the broker's answer that are not booked yet."""
    for fill in order.fills:
        if journal.book(order, fill):
            result.fills += 1
            journal.stage("fill_booked")


def _refusal(checks: Sequence[PreTradeCheck], order: Order) -> str | None:
    """The first pre-trade check's reason to refuse the order, if any."""
    for check in checks:
        if (reason := check(order)) is not None:
            return reason
    return None


def trade_step(
    manager: PortfolioManager,
    broker: BrokerInterface,
    journal: Journal,
    *,
    as_of: datetime,
    prices: Mapping[str, float],
    asset_types: Mapping[str, str],
    exits: Callable[[Sequence[Order]], Iterable[ExitDecision]],
    entries: Callable[[], Iterable[Candidate]],
    checks: Sequence[PreTradeCheck] = (),
    closed: Collection[str] = (),
) -> StepResult:
    """Sync, mark, drawdown halt, exits, entries: one decision at ``as_of``.

    ``exits(pending)`` names the positions to close (the manager's stops, targets and holding
    time, and the strategies' exit rules); ``entries()`` is asked only when entries are not
    halted and yields candidates best first. ``closed``: the asset classes whose market is
    closed at ``as_of``; no exit is placed in them (brokers reject orders then: the next step
    with the market open decides again), and ``entries`` must offer none there.
    """
    result = StepResult()
    pending = journal.open_orders()
    if pending:
        sync(broker, journal, pending, result, checks)
        pending = journal.open_orders()
    journal.stage("synced")
    manager.mark(prices)
    if manager.update_drawdown():
        journal.halted(manager.halt_reason or "halted")
        result.notes.append(manager.halt_reason or "halted")
    place = _Placer(manager, broker, journal, as_of, prices, asset_types, checks, result)
    for decision in exits(pending):
        p = decision.position
        if p.asset_type in closed:
            continue
        order = place.order(p.strategy, p.symbol, Side.SELL if p.qty > 0 else Side.BUY, abs(p.qty), decision.intent,
                            pair=p.pair)  # a pair's leg leaves as one
        answer = place(order, note=decision.reason)
        if answer is not None and answer.status is not OrderStatus.REJECTED:
            result.exits += 1
    journal.stage("exits_placed")
    if manager.halted:
        result.notes.append(f"no new entries: {manager.halt_reason}")
    else:
        for candidate in entries():
            place.entry(candidate)
    journal.stage("entries_placed")
    return result


class _Placer:
    """Builds, checks, records and submits the orders of one step."""

    def __init__(self, manager: PortfolioManager, broker: BrokerInterface, journal: Journal, as_of: datetime,
                 prices: Mapping[str, float], asset_types: Mapping[str, str], checks: Sequence[PreTradeCheck],
                 result: StepResult):
        self.manager, self.broker, self.journal, self.as_of, self.prices = manager, broker, journal, as_of, prices
        self.asset_types, self.checks, self.result = asset_types, checks, result
        self._ids: dict[tuple[str, str, Intent], str] = {}

    def order_id(self, strategy: str, symbol: str, intent: Intent) -> str:
        """The decision's client order id, hashed once per step (an entry asks for it twice)."""
        key = (strategy, symbol, intent)
        if (coid := self._ids.get(key)) is None:
            coid = self._ids[key] = client_order_id(self.manager.portfolio, self.as_of, strategy, symbol, intent)
        return coid

    def order(self, strategy: str, symbol: str, side: Side, qty: float, intent: Intent, **extra) -> Order:
        return Order(client_order_id=self.order_id(strategy, symbol, intent), portfolio=self.manager.portfolio,
                     strategy=strategy, symbol=symbol, asset_type=self.asset_types.get(symbol, "stocks"), side=side, qty=qty,
                     order_type=OrderType.MARKET, intent=intent, created_at=self.as_of, **extra)

    def entry(self, c: Candidate) -> None:
        if "/" in c.symbol:
            self.pair_entry(c)
            return
        pending = self.journal.open_orders()
        coid = self.order_id(c.strategy, c.symbol, Intent.ENTRY)
        if any(o.client_order_id == coid for o in pending):
            self.journal.outcome(c, "ordered", None)  # placed before a crash (its outcome may be unrecorded)
            return
        asset_type = self.asset_types.get(c.symbol, "stocks")
        wanted = self.manager.target_qty(entry=c.entry, stop_loss=c.stop_loss, confidence=c.confidence,
                                         odds=c.odds, asset_type=asset_type)
        decision = self.manager.size_entry(strategy=c.strategy, symbol=c.symbol, side=c.side, entry=c.entry,
                                           qty=wanted, asset_type=asset_type, pending=pending, prices=self.prices)
        if decision.qty <= 0:
            self.journal.outcome(c, "skipped", decision.reason or "sized to zero")
            return
        # sized in cash (resolved at the fill price, within the caps) unless a risk limit cut the quantity
        notional = self.manager.entry_notional() if decision.reason is None else None
        if notional is not None:
            notional = min(notional, decision.budget)
        order = self.order(c.strategy, c.symbol, c.side, decision.qty, Intent.ENTRY, stop_loss=c.stop_loss,
                           take_profit=c.take_profit, notional=notional)
        answer = self(order, ref=c.ref)
        if answer is None:
            return  # decided and recorded before a crash, outcome included: it is done with
        if answer.status is OrderStatus.REJECTED:
            self.journal.outcome(c, "skipped", f"pre-trade: {answer.reason}")
        else:
            self.journal.outcome(c, "ordered", decision.reason)

    def pair_entry(self, c: Candidate) -> None:
        """Both legs of a pair as one decision: sized together in the hedge ratio (the pair's
        gross notional by the sizing method, its stop on that notional), each leg under every
        risk rule, both checked before either is placed, and the first cancelled if the
        broker rejects the second."""
        first, second = c.symbol.split("/")
        side = {first: c.side, second: c.side.opposite}
        price = {leg: self.prices.get(leg, math.nan) for leg in (first, second)}
        beta = c.hedge_ratio if c.hedge_ratio is not None else math.nan
        if not all(math.isfinite(v) and v > 0 for v in (price[first], price[second], beta)):
            self.journal.outcome(c, "skipped", f"pair {c.symbol}: needs both legs' prices and a positive hedge "
                                               f"ratio, got {price} and {beta!r}")
            return
        asset_type = self.asset_types.get(first, "stocks")

        def legs(units: float) -> dict[str, float]:  # units of the first leg and their hedge
            return {first: units, second: self.manager.round_qty(units * beta * price[first] / price[second],
                                                                 asset_type)}

        pending = self.journal.open_orders()
        recorded = {o.symbol: o for o in pending if o.pair == c.symbol and o.intent is Intent.ENTRY}
        if recorded:  # placed before a crash: finish the missing leg, hedged to the recorded one
            if first in recorded and second not in recorded:
                self(self.order(c.strategy, second, side[second], legs(recorded[first].qty)[second], Intent.ENTRY,
                                pair=c.symbol), ref=c.ref)
            return
        unit = price[first] * (1 + beta)  # gross value of one unit of the first leg with its hedge
        stop = abs(c.entry - c.stop_loss) / c.entry if c.stop_loss is not None else 0.0
        units = self.manager.target_qty(entry=unit, stop_loss=unit * (1 - stop), confidence=c.confidence,
                                        odds=c.odds, asset_type=asset_type)
        asked, wanted, limited, seen = units, legs(units), None, list(pending)
        for leg in (first, second):
            decision = self.manager.size_entry(strategy=c.strategy, symbol=leg, side=side[leg], entry=price[leg],
                                               qty=wanted[leg], asset_type=asset_type, pending=seen, pair=c.symbol,
                                               prices=self.prices)
            if decision.qty <= 0:
                self.journal.outcome(c, "skipped", f"pair {c.symbol}: {leg} leg: {decision.reason or 'sized to zero'}")
                return
            if decision.qty < wanted[leg]:
                units = min(units, self.manager.round_qty(asked * decision.qty / wanted[leg], asset_type))
                limited = f"{leg} leg: {decision.reason}"
            seen.append(self.order(c.strategy, leg, side[leg], decision.qty, Intent.ENTRY, pair=c.symbol))
        sized = legs(units)
        if not all(q > 0 for q in sized.values()):
            self.journal.outcome(c, "skipped", f"pair {c.symbol}: sized to zero ({limited})")
            return
        orders = [self.order(c.strategy, leg, side[leg], sized[leg], Intent.ENTRY, pair=c.symbol)
                  for leg in (first, second)]
        for order in orders:
            if (refusal := _refusal(self.checks, order)) is not None:
                for o in orders:
                    if self.journal.store(o.rejected(f"pair {c.symbol}: {order.symbol} leg: {refusal}"), ref=c.ref):
                        self.result.rejected += 1
                self.journal.outcome(c, "skipped", f"pair {c.symbol}: {order.symbol} leg refused: {refusal}")
                return
        placed = self(orders[0], ref=c.ref)
        if placed is None or placed.status is OrderStatus.REJECTED:
            self.journal.outcome(c, "skipped", f"pair {c.symbol}: the {first} leg was rejected"
                                               + (f": {placed.reason}" if placed else ""))
            return
        hedge = self(orders[1], ref=c.ref)
        if hedge is None or hedge.status is OrderStatus.REJECTED:
            self.broker.cancel(orders[0].client_order_id)
            sync(self.broker, self.journal, orders[:1], self.result)  # books any fill it got before the cancel
            self.journal.outcome(c, "skipped", f"pair {c.symbol}: the {second} leg was rejected; {first} cancelled")
            return
        self.journal.outcome(c, "ordered", limited)

    def __call__(self, order: Order, *, ref: Any = None, note: str | None = None) -> Order | None:
        """Check, record, submit; the broker's answer, or the order rejected with the check's
        reason when a pre-trade check refused it. None when this decision was already placed."""
        if (refusal := _refusal(self.checks, order)) is not None:
            rejected = order.rejected(refusal)
            if self.journal.store(rejected, ref=ref):
                self.result.rejected += 1
            return rejected
        if not self.journal.store(order, ref=ref):
            return None
        self.journal.stage("order_stored")
        answer = self.broker.submit(order)
        _book(self.journal, answer, self.result)  # a broker may fill it at once (Binance's FULL answer)
        self.journal.update(answer)
        if answer.status is OrderStatus.REJECTED:
            self.result.rejected += 1
            self.result.notes.append(f"{order.symbol} {order.intent}: rejected: {answer.reason}")
        else:
            self.result.placed += 1
            if note:
                self.result.notes.append(f"{order.symbol} {order.intent}: {note}")
        return answer
