"""Pre-trade validation: the last gate before an order reaches any broker.

A fat-finger and runaway guard independent of sizing and risk rules: the symbol must be in
the configured universe, the order's price must sit within a band around the last price,
and an entry's notional must fit the per-order and per-day limits of ``execution``. Exits are
never held back by the notional limits (closing risk must stay possible: a position that grew
past ``max_order_notional`` could not be closed at all). A refused order is stored
in ``orders`` as ``rejected`` with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select

from lab.config import TradingConfig
from lab.db import models as db
from lab.db import session_scope
from lab.trading.model import Intent, Order
from lab.trading.store import load_open_orders, store_order

__all__ = ["validate_order", "notional_today", "record_rejection"]


def validate_order(order: Order, *, last_price: float, config: TradingConfig, notional_today: float) -> str | None:
    """Why ``order`` must not be sent, or None when it may go."""
    limits = config.execution
    if config.asset_class_of(order.symbol) is None:
        return f"symbol {order.symbol} is not in the universe allow-list"
    if not (math.isfinite(order.qty) and order.qty > 0):
        return f"invalid quantity {order.qty}"
    if not (math.isfinite(last_price) and last_price > 0):
        return f"no valid last price for {order.symbol} ({last_price})"
    for name in ("limit_price", "stop_price"):
        price = getattr(order, name)
        if price is not None and not (math.isfinite(price) and abs(price / last_price - 1) <= limits.price_band_pct):
            return (f"{name.replace('_', ' ')} {price} is outside the {limits.price_band_pct:.0%} band "
                    f"around the last price {last_price}")
    if order.intent is not Intent.ENTRY:
        return None  # an exit closes what is held, whatever it is worth now
    notional = order.open_notional(last_price)  # a cash-sized order: its notional, whatever its estimated qty
    if notional > limits.max_order_notional:
        return f"order notional {notional:,.2f} exceeds max_order_notional {limits.max_order_notional:,.2f}"
    if notional_today + notional > limits.max_daily_notional:
        return (f"daily notional {notional_today + notional:,.2f} would exceed max_daily_notional "
                f"{limits.max_daily_notional:,.2f}")
    return None


def notional_today(engine: Engine, portfolio: str, now: datetime, prices: Mapping[str, float]) -> float:
    """Notional traded on ``now``'s UTC day: fills booked (at their bar's time), plus what the
    open orders decided that day may still fill (``Order.open_notional``; a market order at
    its symbol's last price). Both by the market's time, not the clock's, so a paper cycle
    replaying a past day counts that day."""
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    with session_scope(engine) as session:
        filled = session.scalar(select(func.coalesce(func.sum(db.Trade.qty * db.Trade.price), 0.0)).where(
            db.Trade.portfolio == portfolio, db.Trade.ts >= start, db.Trade.ts < end))
    pending = math.fsum(o.open_notional(prices.get(o.symbol, o.avg_fill_price))
                        for o in load_open_orders(engine, portfolio) if start <= o.created_at < end)
    return float(filled) + pending


def record_rejection(engine: Engine, order: Order, reason: str, *, broker: str) -> Order:
    """Store the order as rejected with ``reason`` (idempotent on its client order id)."""
    rejected = order.rejected(f"pre-trade: {reason}")
    store_order(engine, rejected, broker=broker)
    return rejected
