"""Pre-trade validation: the last gate before an order reaches any broker.

A fat-finger and runaway guard independent of sizing and risk rules: the symbol must be in
the configured universe, the order's price must sit within a band around the last price,
and its notional must fit the per-order and per-day limits of ``execution``. Exits are never
held back by the daily budget (closing risk must stay possible). A refused order is stored
in ``orders`` as ``rejected`` with the reason.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select

from lab.config import TradingConfig
from lab.db import models as db
from lab.db import session_scope
from lab.trading.model import Intent, Order, OrderStatus
from lab.trading.store import store_order

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
    notional = order.qty * (order.limit_price or order.stop_price or last_price)
    if notional > limits.max_order_notional:
        return f"order notional {notional:,.2f} exceeds max_order_notional {limits.max_order_notional:,.2f}"
    if order.intent is Intent.ENTRY and notional_today + notional > limits.max_daily_notional:
        return (f"daily notional {notional_today + notional:,.2f} would exceed max_daily_notional "
                f"{limits.max_daily_notional:,.2f}")
    return None


def notional_today(engine: Engine, portfolio: str, now: datetime) -> float:
    """Notional traded on ``now``'s UTC day: fills booked, plus what open orders may still fill."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    with session_scope(engine) as session:
        filled = session.scalar(select(func.coalesce(func.sum(db.Trade.qty * db.Trade.price), 0.0)).where(
            db.Trade.portfolio == portfolio, db.Trade.ts >= start, db.Trade.ts < end))
        open_rows = session.execute(select(db.Order.qty, db.Order.filled_qty, db.Order.limit_price,
                                           db.Order.stop_price, db.Order.avg_fill_price).where(
            db.Order.portfolio == portfolio, db.Order.created_at >= start, db.Order.created_at < end,
            db.Order.status.in_([OrderStatus.PENDING.value, OrderStatus.PARTIALLY_FILLED.value]))).all()
    pending = math.fsum((qty - filled_qty) * (limit or stop or avg or 0.0)
                        for qty, filled_qty, limit, stop, avg in open_rows)
    return float(filled) + pending


def record_rejection(engine: Engine, order: Order, reason: str, *, broker: str) -> Order:
    """Store the order as rejected with ``reason`` (idempotent on its client order id)."""
    rejected = order.rejected(f"pre-trade: {reason}")
    store_order(engine, rejected, broker=broker)
    return rejected
