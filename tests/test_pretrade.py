"""Pre-trade validation: allow-list, price band, per-order and per-day notional limits."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from lab.config import load_config
from lab.db import models as db
from lab.db import session_scope
from lab.trading.model import Intent, Order, OrderType, Side, client_order_id
from lab.trading.pretrade import notional_today, record_rejection, validate_order
from lab.trading.store import store_order

NOW = datetime(2025, 1, 6, 15, 0, tzinfo=UTC)
CONFIG = load_config(Path(__file__).resolve().parents[1] / "config" / "trading.json")
LIMITS = CONFIG.execution  # 25k per order, 250k per day, 10% band


def order(symbol: str = "AAPL", qty: float = 10, *, intent: Intent = Intent.ENTRY, **fields) -> Order:
    return Order(client_order_id=client_order_id("paper", NOW, "momentum", symbol, intent), portfolio="paper",
                 strategy="momentum", symbol=symbol, asset_type="stocks", side=Side.BUY, qty=qty,
                 intent=intent, created_at=NOW, **fields)


def check(o: Order, last_price: float = 100.0, today: float = 0.0) -> str | None:
    return validate_order(o, last_price=last_price, config=CONFIG, notional_today=today)


def test_an_order_within_every_limit_passes() -> None:
    assert check(order(qty=10, order_type=OrderType.LIMIT, limit_price=101.0)) is None


def test_a_symbol_outside_the_universe_is_refused() -> None:
    assert check(order("TSLA")) == "symbol TSLA is not in the universe allow-list"


@pytest.mark.parametrize("qty", [0.0, -5.0, math.nan, math.inf])
def test_a_non_positive_or_non_finite_quantity_is_refused(qty) -> None:
    assert check(order(qty=qty)).startswith("invalid quantity")


@pytest.mark.parametrize("last_price", [0.0, math.nan, -1.0])
def test_without_a_valid_last_price_nothing_goes(last_price) -> None:
    assert check(order(), last_price=last_price).startswith("no valid last price for AAPL")


@pytest.mark.parametrize(("field", "price"), [("limit_price", 111.0), ("limit_price", 89.0), ("stop_price", 80.0)])
def test_a_price_outside_the_band_around_the_last_price_is_refused(field, price) -> None:
    reason = check(order(order_type=OrderType.LIMIT if field == "limit_price" else OrderType.STOP, **{field: price}))
    assert reason == (f"{field.replace('_', ' ')} {price} is outside the 10% band around the last price 100.0")


def test_a_cash_sized_order_is_checked_at_the_cash_it_may_spend() -> None:
    # its quantity is an estimate at the decision's price: a lower open buys more
    assert check(order(qty=25, notional=25_999.0), last_price=1_000.0) == (
        "order notional 25,999.00 exceeds max_order_notional 25,000.00")


def test_an_order_above_max_order_notional_is_refused() -> None:
    assert check(order(qty=300)) == "order notional 30,000.00 exceeds max_order_notional 25,000.00"


def test_an_exit_above_max_order_notional_goes_out_as_it_closes_what_is_held() -> None:
    # a position bought within the limit and grown past it could otherwise never be closed
    assert check(order(qty=300, intent=Intent.TIME_EXIT)) is None


def test_an_entry_beyond_the_daily_budget_is_refused_but_an_exit_is_not() -> None:
    assert check(order(qty=100), today=245_000.0) == (
        "daily notional 255,000.00 would exceed max_daily_notional 250,000.00")
    assert check(order(qty=100, intent=Intent.STOP_LOSS), today=245_000.0) is None


@given(qty=st.floats(0.001, 1e4), last=st.floats(0.5, 1e5), today=st.floats(0, 3e5),
       band=st.floats(-0.2, 0.2))
def test_an_accepted_order_always_respects_the_limits(qty, last, today, band) -> None:
    limit = last * (1 + band)
    o = order(qty=qty, order_type=OrderType.LIMIT, limit_price=limit)
    if check(o, last_price=last, today=today) is None:
        assert qty * limit <= LIMITS.max_order_notional
        assert today + qty * limit <= LIMITS.max_daily_notional
        assert abs(limit / last - 1) <= LIMITS.price_band_pct


def test_a_rejection_is_stored_with_its_reason(engine) -> None:
    rejected = record_rejection(engine, order("TSLA"), "symbol TSLA is not in the universe allow-list", broker="alpaca")
    with session_scope(engine) as session:
        row = session.scalar(select(db.Order).where(db.Order.client_order_id == rejected.client_order_id))
    assert (row.status, row.broker, row.reason) == (
        "rejected", "alpaca", "pre-trade: symbol TSLA is not in the universe allow-list")


def test_notional_today_counts_open_orders_of_the_day_only(engine) -> None:
    store_order(engine, order(qty=10, order_type=OrderType.LIMIT, limit_price=100.0), broker="paper")
    store_order(engine, order("MSFT", qty=5).rejected("no"), broker="paper")
    assert notional_today(engine, "paper", NOW, {}) == 1_000.0
    assert notional_today(engine, "paper", NOW + timedelta(days=1), {}) == 0.0
    assert notional_today(engine, "other", NOW, {}) == 0.0


def test_notional_today_counts_an_open_market_order_at_its_last_price(engine) -> None:
    # it counted nothing until the order filled: a cycle's market entries passed any daily budget
    store_order(engine, order("MSFT", qty=5), broker="paper")
    assert notional_today(engine, "paper", NOW, {"MSFT": 400.0}) == 2_000.0
