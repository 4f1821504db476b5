"""The paper broker: simulated matching against bars, behind ``BrokerInterface``.

Backtests and the paper-trading cycle use this one matcher. An order decided on bar t can
only fill on a later bar (``on_bar`` ignores bars at or before ``created_at``): market and
triggered stop orders at that bar's open plus slippage, limit orders at the better of the
open and the limit. A fill takes at most ``max_volume_share`` of the bar's volume, in whole
shares of a stock (the rest stays open: partially filled, for a later bar: an order fills at
most once per bar), and pays the asset class's fee. Buying back a short is never refused or
cut for cash (a margin account lends it). Refusals come back as
``rejected`` orders with a reason; nothing here raises for a bad order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import lru_cache

import msgspec

from lab.config import TradingConfig
from lab.trading.broker import OrderNotFound
from lab.trading.calendar import is_market_open, market_clock
from lab.trading.costs import CostModel, SlippageModel, round_qty
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


class Bar(msgspec.Struct, frozen=True, gc=False):
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


_NO_IMPACT = SlippageModel()


@lru_cache(maxsize=4096)
def _market_open(asset_type: str, ts: datetime) -> bool:
    """``is_market_open``, remembered: a backtest asks it about the same bar for every order."""
    return is_market_open(asset_type, ts)


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


class PaperTradingExecutor:
    """A simulated account: cash, per-symbol positions, open orders, fills.

    Open orders are indexed by symbol (and open buys kept apart), so matching a bar, the
    buying power and the sellable quantity cost one step per open order, not per order
    ever placed: a bar of a symbol without open orders only records its close.
    """

    name = "paper"

    def __init__(
        self,
        *,
        cash: float,
        asset_types: Mapping[str, str],
        fee_bps: Mapping[str, float],
        slippage: SlippageModel = _NO_IMPACT,
        max_volume_share: float = 0.1,
        fill_delay_bars: int = 0,
        allow_shorts: bool = False,
        positions: Iterable[Position] = (),
        orders: Iterable[Order] = (),
        last_prices: Mapping[str, float] | None = None,
    ):
        self._cash = cash
        self._asset_types = dict(asset_types)
        self._costs = CostModel(dict(fee_bps), slippage)
        self._max_volume_share = max_volume_share
        self._fill_delay_bars = fill_delay_bars
        self._allow_shorts = allow_shorts
        self._positions = self._opening_positions(positions)
        self._orders: dict[str, Order] = {}
        self._open: dict[str, dict[str, Order]] = {}  # symbol -> client id -> open order
        self._open_buys: dict[str, Order] = {}
        for order in orders:
            self._put(order)
        self._bars_seen: dict[str, int] = {}
        self._last: dict[str, float] = dict(last_prices or {})

    @classmethod
    def from_config(cls, config: TradingConfig, **state) -> PaperTradingExecutor:
        """An executor with the config's universe, costs (``CostModel.from_config``, the one
        the portfolio manager sizes with), volume cap and short rule."""
        asset_types = {symbol: name for name, universe in config.universe.asset_classes().items()
                       for symbol in (*universe.symbols, universe.benchmark)}
        costs = CostModel.from_config(config.execution)
        return cls(asset_types=asset_types, fee_bps=costs.fee_bps, slippage=costs.slippage,
                   max_volume_share=config.execution.max_volume_share,
                   allow_shorts=config.risk.allow_shorts, **state)

    # --- BrokerInterface ---------------------------------------------------------------

    def submit(self, order: Order) -> Order:
        held = self._orders.get(order.client_order_id)
        if held is not None:
            return held
        reason = self._refusal(order)
        accepted = order.rejected(reason) if reason else order.evolve(broker_order_id=order.client_order_id)
        self._put(accepted)
        return accepted

    def cancel(self, client_order_id: str) -> Order:
        order = self.get_order(client_order_id)
        if order.status.is_open:
            order = order.cancelled("cancelled by request")
            self._put(order)
        return order

    def get_order(self, client_order_id: str) -> Order:
        try:
            return self._orders[client_order_id]
        except KeyError:
            raise OrderNotFound(f"paper broker holds no order {client_order_id!r}") from None

    def open_orders(self) -> list[Order]:
        return [o for orders in self._open.values() for o in orders.values()]

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
        self._last[symbol] = bar.close
        waiting = self._open.get(symbol)
        if not waiting:
            return []
        fills = []
        for order in list(waiting.values()):
            if bar.ts <= order.created_at or (order.fills and bar.ts <= order.fills[-1].ts):
                continue  # decided on this bar, or filled on it already (a cycle replays the bars since)
            if self._fill_delay_bars:
                seen = self._bars_seen[order.client_order_id] = self._bars_seen.get(order.client_order_id, 0) + 1
                if seen <= self._fill_delay_bars:
                    continue
            fill = self._match(order, bar)
            if fill is not None:
                fills.append(fill)
        return fills

    def _put(self, order: Order) -> None:
        """Record the broker's view of an order and keep the open-order indexes in step."""
        coid = order.client_order_id
        self._orders[coid] = order
        by_symbol = self._open.setdefault(order.symbol, {})
        if order.status.is_open:
            by_symbol[coid] = order
            if order.side is Side.BUY:
                self._open_buys[coid] = order
        else:
            by_symbol.pop(coid, None)
            self._open_buys.pop(coid, None)

    def _match(self, order: Order, bar: Bar) -> Fill | None:
        price = self._trigger_price(order, bar)
        if price is None:
            return None
        costs, asset_type = self._costs, order.asset_type
        cap = round_qty(self._max_volume_share * bar.volume, asset_type)  # whole shares of a stock
        if cap <= 0:
            return None  # too little traded on this bar for one unit
        qty = min(order.remaining_qty, cap)
        if order.order_type in (OrderType.MARKET, OrderType.STOP):
            price *= 1 + self._costs.slippage.fraction(qty, bar.volume) * order.side.sign
        if order.side is Side.BUY:
            if order.cash_sized:  # resolved at this price
                order = order.evolve(qty=costs.affordable(min(order.notional, self._cash), price, asset_type))
                qty = min(order.qty, cap)
            # buying back a short is never held back for cash (a margin account lends it)
            qty = min(qty, max(self._short(order.symbol), costs.affordable(self._cash, price, asset_type)))
        elif not self._allow_shorts:
            qty = min(qty, self._sellable(order.symbol, exclude=order.client_order_id))
        if qty <= 0:
            self._put(order.cancelled(
                "insufficient funds at fill" if order.side is Side.BUY else "no position left to sell"))
            return None
        fill = Fill(
            fill_id=f"{order.client_order_id}-{len(order.fills) + 1}",
            client_order_id=order.client_order_id, portfolio=order.portfolio, strategy=order.strategy,
            symbol=order.symbol, side=order.side, qty=qty, price=price, fee=costs.fee(qty, price, asset_type),
            ts=bar.ts,
        )
        self._cash += cash_delta(fill)
        self._position(order.symbol).apply(fill)
        self._put(order.with_fill(fill))
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
        if not _market_open(asset_type, order.created_at):
            return f"market closed: {asset_type} market is not open at {order.created_at.isoformat()}"
        if order.side is Side.SELL:
            held = self._sellable(order.symbol, exclude=order.client_order_id)
            if not self._allow_shorts and order.qty > held * (1 + 1e-12):
                return (f"short selling disabled: selling {order.qty:g} {order.symbol} "
                        f"but only {held:g} held")
            return None
        if order.qty <= self._short(order.symbol) - self._covering(order.symbol, exclude=order.client_order_id):
            return None  # a cover: closing risk is never refused for cash
        available = self._available_cash()
        if order.notional is not None:
            needed = order.notional
        else:
            reference = order.limit_price if needs_limit else (order.stop_price or self._last.get(order.symbol))
            if reference is None:
                return f"no price known for {order.symbol!r}"
            needed = order.qty * self._costs.unit_cost(reference, asset_type,
                                                       slipped=order.order_type is not OrderType.LIMIT)
        if needed > available:
            return f"insufficient funds: needs {needed:,.2f}, available {available:,.2f}"
        return None

    def _available_cash(self) -> float:
        """Cash less what open buy orders may still spend (at their reference price; a cash-sized
        order not filled yet: its notional)."""
        return self._cash - math.fsum(o.open_notional(self._last.get(o.symbol)) for o in self._open_buys.values())

    def _sellable(self, symbol: str, *, exclude: str | None = None) -> float:
        held = self._positions[symbol].qty if symbol in self._positions else 0.0
        pending = math.fsum(o.remaining_qty for o in self._open.get(symbol, {}).values()
                            if o.side is Side.SELL and o.client_order_id != exclude)
        return held - pending

    def _short(self, symbol: str) -> float:
        """The quantity held short in ``symbol`` (0 if none)."""
        held = self._positions[symbol].qty if symbol in self._positions else 0.0
        return -held if held < 0 else 0.0

    def _covering(self, symbol: str, *, exclude: str) -> float:
        """What the other open buys in ``symbol`` may still buy."""
        return math.fsum(o.remaining_qty for o in self._open.get(symbol, {}).values()
                         if o.side is Side.BUY and o.client_order_id != exclude)

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
