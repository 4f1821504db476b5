"""The one Order / Fill / Position model shared by the paper executor, backtests and real brokers.

Orders are immutable values: a broker answers with an updated copy (status, fills, reason).
Positions change only through ``Position.apply(fill)``, so replaying a ledger of fills in
order reproduces every position, and ``cash_delta(fill)`` reproduces the cash, exactly.

The values are ``msgspec`` structs: an engine step builds, copies and reads several per
order, which as frozen dataclasses cost over ten times as much (a backtest builds hundreds
of thousands). Orders, fills and positions hold no references back to anything, so the
garbage collector need not track them.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, tzinfo
from enum import StrEnum
from functools import lru_cache

import msgspec

__all__ = [
    "Side",
    "OrderType",
    "OrderStatus",
    "Intent",
    "Order",
    "Fill",
    "Position",
    "Account",
    "MarketClock",
    "client_order_id",
    "cash_delta",
]


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


_SIGN = {Side.BUY: 1, Side.SELL: -1}  # ``Side.sign`` without the property call, for every fill


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"  # also the take-profit leg of an exit
    STOP = "stop"  # also the stop-loss leg of an exit
    STOP_LIMIT = "stop_limit"


class OrderStatus(StrEnum):
    PENDING = "pending"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def is_open(self) -> bool:
        return self in _OPEN


#: the statuses of a live order; a set built once, as reading an enum member costs more than the test
_OPEN = frozenset({OrderStatus.PENDING, OrderStatus.PARTIALLY_FILLED})


class Intent(StrEnum):
    """Why an order exists; part of its client order id."""

    ENTRY = "entry"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TIME_EXIT = "time_exit"
    EXIT = "exit"


def client_order_id(portfolio: str, as_of: datetime, strategy: str, symbol: str, intent: str) -> str:
    """Deterministic id (36 chars, Alpaca- and Binance-safe): a re-run or a broker retry of the
    same decision reuses it, so the broker and the ``orders`` table never hold it twice."""
    key = "|".join((portfolio, _isoformat(as_of, as_of.tzinfo), strategy, symbol, str(intent)))
    return "lab-" + hashlib.sha256(key.encode()).hexdigest()[:32]


@lru_cache(maxsize=256)
def _isoformat(as_of: datetime, tz: tzinfo | None) -> str:
    """``as_of.isoformat()``, remembered: a backtest bar names every order decided on it. The
    zone is part of the key, as equal instants in two zones are equal keys but print apart."""
    return as_of.isoformat()


class Fill(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One execution. ``qty`` > 0; ``fee`` is in the account currency and always paid."""

    fill_id: str
    client_order_id: str
    portfolio: str
    strategy: str
    symbol: str
    side: Side
    qty: float
    price: float
    fee: float
    ts: datetime


def cash_delta(fill: Fill) -> float:
    """Cash change of a fill: buyers pay notional plus fee, sellers receive notional less fee."""
    return -_SIGN[fill.side] * fill.qty * fill.price - fill.fee


_replace = msgspec.structs.replace


class Order(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An order as the lab asks for it and as a broker reports it back."""

    client_order_id: str
    portfolio: str
    strategy: str
    symbol: str
    asset_type: str
    side: Side
    qty: float
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    stop_price: float | None = None
    intent: Intent = Intent.ENTRY
    created_at: datetime
    #: protective levels of an entry, checked by the lab's exit rules every cycle (no broker holds them)
    stop_loss: float | None = None
    take_profit: float | None = None
    #: a buy sized in cash: the broker resolves ``qty`` at the fill price as
    #: floor(min(notional, cash) / (price * (1 + fee))); ``qty`` is the estimate at decision
    notional: float | None = None
    #: the pair ("AAA/BBB") an order is a leg of; both legs are entered and exited together
    pair: str | None = None
    status: OrderStatus = OrderStatus.PENDING
    reason: str | None = None
    broker_order_id: str | None = None
    fills: tuple[Fill, ...] = ()

    @property
    def filled_qty(self) -> float:
        if not self.fills:
            return 0.0
        if len(self.fills) == 1:  # the usual case; the fsum of one (positive) value is that value
            return self.fills[0].qty
        return math.fsum(f.qty for f in self.fills)

    @property
    def remaining_qty(self) -> float:
        return max(self.qty - self.filled_qty, 0.0)

    @property
    def avg_fill_price(self) -> float | None:
        filled = self.filled_qty
        if filled <= 0:
            return None
        if len(self.fills) == 1:
            return self.fills[0].qty * self.fills[0].price / filled
        return math.fsum(f.qty * f.price for f in self.fills) / filled

    @property
    def cash_sized(self) -> bool:
        """Sized in cash and not filled yet: its quantity is an estimate, its notional the cap."""
        return self.notional is not None and not self.fills

    def open_notional(self, last_price: float | None) -> float:
        """What the order may still trade, in money: its notional when ``cash_sized``, else
        its remaining quantity at its limit or stop price, or (a market order) at ``last_price``
        (nothing when that is unknown)."""
        if self.cash_sized:
            return self.notional
        return self.remaining_qty * (self.limit_price or self.stop_price or last_price or 0.0)

    def evolve(self, **changes) -> Order:
        """A copy with ``changes`` (an unknown field is a TypeError)."""
        return _replace(self, **changes)

    def rejected(self, reason: str) -> Order:
        return self.evolve(status=OrderStatus.REJECTED, reason=reason)

    def cancelled(self, reason: str) -> Order:
        return self.evolve(status=OrderStatus.CANCELLED, reason=reason)

    def with_broker_state(self, remote: Order) -> Order:
        """This order with a broker's view of it: status, reason, id, and the fills tagged with
        this order's portfolio and strategy (a real broker knows neither)."""
        fills = tuple(_replace(f, portfolio=self.portfolio, strategy=self.strategy) for f in remote.fills)
        return self.evolve(status=remote.status, reason=remote.reason or self.reason,
                           broker_order_id=remote.broker_order_id, fills=fills)

    def with_fill(self, fill: Fill) -> Order:
        fills = (*self.fills, fill)
        done = (fill.qty if not self.fills else math.fsum(f.qty for f in fills)) >= self.qty * (1 - 1e-12)
        return self.evolve(fills=fills, status=OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED)


class Position(msgspec.Struct, kw_only=True, gc=False):
    """Holdings of one symbol for one strategy (``"*"``: a broker's per-symbol total).
    ``qty`` is signed (negative = short).

    ``realized_pnl`` is net of every fee paid on the position, so for a portfolio
    initial cash + realized + unrealized = equity.
    """

    portfolio: str
    strategy: str
    symbol: str
    asset_type: str
    qty: float = 0.0
    avg_price: float = 0.0
    realized_pnl: float = 0.0
    last_price: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    sector: str | None = None
    opened_at: datetime | None = None
    #: the pair ("AAA/BBB") this position is a leg of, from its entry order
    pair: str | None = None

    @property
    def is_open(self) -> bool:
        return self.qty != 0.0

    @property
    def market_value(self) -> float:
        return self.qty * self._mark

    @property
    def unrealized_pnl(self) -> float:
        return self.qty * (self._mark - self.avg_price)

    @property
    def _mark(self) -> float:
        return self.avg_price if self.last_price is None else self.last_price

    def apply(self, fill: Fill) -> float:
        """Apply a fill; returns the P&L it realized (net of its fee). The only mutator."""
        if fill.symbol != self.symbol or self.strategy not in (fill.strategy, "*"):
            raise ValueError(f"fill {fill.fill_id} is for {fill.strategy}/{fill.symbol}, "
                             f"not {self.strategy}/{self.symbol}")
        signed = _SIGN[fill.side] * fill.qty
        realized = -fill.fee
        if self.qty == 0.0 or (self.qty > 0) == (signed > 0):
            total = self.qty + signed
            self.avg_price = (self.qty * self.avg_price + signed * fill.price) / total
            self.qty = total
            if self.opened_at is None:
                self.opened_at = fill.ts
        else:
            closed = min(abs(signed), abs(self.qty))
            direction = 1.0 if self.qty > 0 else -1.0
            realized += closed * (fill.price - self.avg_price) * direction
            remainder = self.qty + signed
            if abs(remainder) <= 1e-12 * max(abs(self.qty), 1.0):
                self.qty, self.avg_price, self.opened_at = 0.0, 0.0, None
            elif (remainder > 0) != (self.qty > 0):  # flipped through zero
                self.qty, self.avg_price, self.opened_at = remainder, fill.price, fill.ts
            else:
                self.qty = remainder
        self.realized_pnl += realized
        self.last_price = fill.price
        return realized


class Account(msgspec.Struct, frozen=True, kw_only=True):
    cash: float
    equity: float
    buying_power: float | None = None
    currency: str = "USD"


class MarketClock(msgspec.Struct, frozen=True, kw_only=True):
    now: datetime
    is_open: bool
    next_open: datetime | None = None
    next_close: datetime | None = None
