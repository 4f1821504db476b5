"""The paper broker: simulated matching against bars, behind ``BrokerInterface``.

Backtests and the paper-trading cycle use this one matcher. An order decided on bar t can
only fill on a later bar (``on_bar`` ignores bars at or before ``created_at``): market and
triggered stop orders at that bar's open plus slippage, limit orders at the better of the
open and the limit. A fill takes at most ``max_volume_share`` of the bar's volume (the rest
stays open: partially filled), and pays the asset class's fee. Refusals come back as
``rejected`` orders with a reason; nothing here raises for a bad order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from lab.config import TradingConfig
from lab.trading.broker import OrderNotFound
from lab.trading.calendar import market_clock
from lab.trading.model import (
    Account,
    Fill,
    MarketClock,
    Order,
    OrderType,
    Position,
    Side,
    cash_delta,
)

__all__ = ["Bar", "SlippageModel", "PaperTradingExecutor"]


@dataclass(frozen=True, slots=True)
class Bar:
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True)
class SlippageModel:
    """Adverse price move of a market fill: ``base_bps`` plus ``impact_bps`` per 100% of the
    bar's volume taken, capped at ``max_bps`` (0.1-0.5% is the usual range for daily bars)."""

    base_bps: float = 10.0
    impact_bps: float = 0.0
    max_bps: float = 50.0

    def fraction(self, qty: float, bar: Bar) -> float:
        share = qty / bar.volume if bar.volume > 0 else 0.0
        return min(self.base_bps + self.impact_bps * share, self.max_bps) / 10_000


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


class PaperTradingExecutor:
    """A simulated account: cash, per-symbol positions, open orders, fills."""

    name = "paper"

    def __init__(
        self,
        *,
        cash: float,
        asset_types: Mapping[str, str],
        fee_bps: Mapping[str, float],
        slippage: SlippageModel = SlippageModel(),
        max_volume_share: float = 0.1,
        fill_delay_bars: int = 0,
        allow_shorts: bool = False,
        positions: Iterable[Position] = (),
        orders: Iterable[Order] = (),
        last_prices: Mapping[str, float] | None = None,
    ):
        self._cash = cash
        self._asset_types = dict(asset_types)
        self._fee_bps = dict(fee_bps)
        self._slippage = slippage
        self._max_volume_share = max_volume_share
        self._fill_delay_bars = fill_delay_bars
        self._allow_shorts = allow_shorts
        self._positions = self._opening_positions(positions)
        self._orders: dict[str, Order] = {o.client_order_id: o for o in orders}
        self._bars_seen: dict[str, int] = {}
        self._last: dict[str, float] = dict(last_prices or {})

    @classmethod
    def from_config(cls, config: TradingConfig, **state) -> PaperTradingExecutor:
        """An executor with the config's universe, fees, slippage, volume cap and short rule."""
        asset_types = {symbol: name for name, universe in config.universe.asset_classes().items()
                       for symbol in (*universe.symbols, universe.benchmark)}
        execution = config.execution
        return cls(asset_types=asset_types, fee_bps=execution.fee_bps,
                   slippage=SlippageModel(base_bps=execution.slippage_bps),
                   max_volume_share=execution.max_volume_share,
                   allow_shorts=config.risk.allow_shorts, **state)

    # --- BrokerInterface ---------------------------------------------------------------

    def submit(self, order: Order) -> Order:
        held = self._orders.get(order.client_order_id)
        if held is not None:
            return held
        reason = self._refusal(order)
        accepted = order.rejected(reason) if reason else replace(order, broker_order_id=order.client_order_id)
        self._orders[order.client_order_id] = accepted
        return accepted

    def cancel(self, client_order_id: str) -> Order:
        order = self.get_order(client_order_id)
        if order.status.is_open:
            order = self._orders[client_order_id] = order.cancelled("cancelled by request")
        return order

    def get_order(self, client_order_id: str) -> Order:
        try:
            return self._orders[client_order_id]
        except KeyError:
            raise OrderNotFound(f"paper broker holds no order {client_order_id!r}") from None

    def open_orders(self) -> list[Order]:
        return [o for o in self._orders.values() if o.status.is_open]

    def positions(self) -> list[Position]:
        return [p for p in self._positions.values() if p.is_open]

    def account(self) -> Account:
        value = math.fsum(p.qty * self._last.get(p.symbol, p.avg_price) for p in self._positions.values())
        return Account(cash=self._cash, equity=self._cash + value, buying_power=self._available_cash())

    def clock(self, now: datetime, asset_type: str = "stocks") -> MarketClock:
        return market_clock(asset_type, now)

    # --- matching ------------------------------------------------------------------------

    def on_bar(self, symbol: str, bar: Bar) -> list[Fill]:
        """Match this symbol's open orders against a new bar; returns the fills it made."""
        fills = []
        for order in [o for o in self._orders.values() if o.symbol == symbol and o.status.is_open]:
            if bar.ts <= order.created_at:
                continue
            seen = self._bars_seen[order.client_order_id] = self._bars_seen.get(order.client_order_id, 0) + 1
            if seen <= self._fill_delay_bars:
                continue
            fill = self._match(order, bar)
            if fill is not None:
                fills.append(fill)
        self._last[symbol] = bar.close
        return fills

    def _match(self, order: Order, bar: Bar) -> Fill | None:
        price = self._trigger_price(order, bar)
        if price is None:
            return None
        qty = order.remaining_qty
        if bar.volume > 0:
            qty = min(qty, self._max_volume_share * bar.volume)
        else:
            return None  # nothing traded on this bar
        if order.order_type in (OrderType.MARKET, OrderType.STOP):
            slip = self._slippage.fraction(qty, bar)
            price *= 1 + slip * order.side.sign
        fee_rate = self._fee_bps.get(order.asset_type, 0.0) / 10_000
        if order.side is Side.BUY:
            affordable = self._cash / (price * (1 + fee_rate))
            if affordable < qty:
                qty = math.floor(affordable) if order.asset_type == "stocks" else affordable * (1 - 1e-9)
        elif not self._allow_shorts:
            qty = min(qty, self._sellable(order.symbol, exclude=order.client_order_id))
        if qty <= 0:
            self._orders[order.client_order_id] = order.cancelled(
                "insufficient funds at fill" if order.side is Side.BUY else "no position left to sell")
            return None
        fill = Fill(
            fill_id=f"{order.client_order_id}-{len(order.fills) + 1}",
            client_order_id=order.client_order_id, portfolio=order.portfolio, strategy=order.strategy,
            symbol=order.symbol, side=order.side, qty=qty, price=price, fee=qty * price * fee_rate, ts=bar.ts,
        )
        self._cash += cash_delta(fill)
        self._position(order.symbol).apply(fill)
        self._orders[order.client_order_id] = order.with_fill(fill)
        return fill

    @staticmethod
    def _trigger_price(order: Order, bar: Bar) -> float | None:
        """The price an order executes at on this bar before slippage, or None."""
        buy = order.side is Side.BUY
        if order.order_type is OrderType.MARKET:
            return bar.open
        if order.order_type is OrderType.LIMIT:
            limit = order.limit_price
            if (bar.open <= limit) if buy else (bar.open >= limit):
                return bar.open
            return limit if ((bar.low <= limit) if buy else (bar.high >= limit)) else None
        stop = order.stop_price
        if (bar.open >= stop) if buy else (bar.open <= stop):
            triggered = bar.open
        elif (bar.high >= stop) if buy else (bar.low <= stop):
            triggered = stop
        else:
            return None
        if order.order_type is OrderType.STOP:
            return triggered
        limit = order.limit_price  # stop-limit: fills only within the limit
        return triggered if ((triggered <= limit) if buy else (triggered >= limit)) else None

    # --- validation ----------------------------------------------------------------------

    def _refusal(self, order: Order) -> str | None:
        if not (isinstance(order.qty, int | float) and math.isfinite(order.qty) and order.qty > 0):
            return f"invalid order: quantity must be a positive number, got {order.qty!r}"
        needs_limit = order.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        needs_stop = order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
        if needs_limit and not _positive(order.limit_price):
            return f"invalid order: {order.order_type} needs a positive limit price, got {order.limit_price!r}"
        if needs_stop and not _positive(order.stop_price):
            return f"invalid order: {order.order_type} needs a positive stop price, got {order.stop_price!r}"
        if order.symbol not in self._asset_types:
            return f"unknown symbol {order.symbol!r}"
        asset_type = self._asset_types[order.symbol]
        if not market_clock(asset_type, order.created_at).is_open:
            return f"market closed: {asset_type} market is not open at {order.created_at.isoformat()}"
        if order.side is Side.SELL:
            held = self._sellable(order.symbol, exclude=order.client_order_id)
            if not self._allow_shorts and order.qty > held * (1 + 1e-12):
                return (f"short selling disabled: selling {order.qty:g} {order.symbol} "
                        f"but only {held:g} held")
            return None
        reference = order.limit_price if needs_limit else (order.stop_price or self._last.get(order.symbol))
        if reference is None:
            return f"no price known for {order.symbol!r}"
        slip = 0.0 if order.order_type is OrderType.LIMIT else self._slippage.max_bps / 10_000
        fee_rate = self._fee_bps.get(asset_type, 0.0) / 10_000
        needed = order.qty * reference * (1 + slip) * (1 + fee_rate)
        available = self._available_cash()
        if needed > available:
            return f"insufficient funds: needs {needed:,.2f}, available {available:,.2f}"
        return None

    def _available_cash(self) -> float:
        """Cash less what open buy orders may still spend (at their reference price)."""
        reserved = math.fsum(
            o.remaining_qty * (o.limit_price or o.stop_price or self._last.get(o.symbol, 0.0))
            for o in self._orders.values() if o.status.is_open and o.side is Side.BUY)
        return self._cash - reserved

    def _sellable(self, symbol: str, *, exclude: str | None = None) -> float:
        held = self._positions[symbol].qty if symbol in self._positions else 0.0
        pending = math.fsum(o.remaining_qty for o in self._orders.values()
                            if o.symbol == symbol and o.side is Side.SELL and o.status.is_open
                            and o.client_order_id != exclude)
        return held - pending

    def _opening_positions(self, positions: Iterable[Position]) -> dict[str, Position]:
        """Per-symbol totals of the lab's per-strategy positions (the account we resume)."""
        qty: dict[str, float] = {}
        cost: dict[str, float] = {}
        for p in positions:
            qty[p.symbol] = qty.get(p.symbol, 0.0) + p.qty
            cost[p.symbol] = cost.get(p.symbol, 0.0) + p.qty * p.avg_price
        return {
            symbol: Position(portfolio="*", strategy="*", symbol=symbol, qty=total,
                             avg_price=cost[symbol] / total if total else 0.0,
                             asset_type=self._asset_types.get(symbol, "stocks"))
            for symbol, total in qty.items()
        }

    def _position(self, symbol: str) -> Position:
        position = self._positions.get(symbol)
        if position is None:
            position = self._positions[symbol] = Position(
                portfolio="*", strategy="*", symbol=symbol, asset_type=self._asset_types.get(symbol, "stocks"))
        return position
