"""AlpacaBroker against a fake Alpaca paper API on 127.0.0.1 (market-apis.md §5)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import SecretStr

from lab.runtime import open_lab
from lab.trading.broker import BrokerInterface
from lab.trading.brokers._http import BrokerAuthError, BrokerError, OrderNotFound, RetryPolicy
from lab.trading.brokers.alpaca import AlpacaBroker
from lab.trading.model import Intent, Order, OrderStatus, OrderType, Side, client_order_id
from lab.trading.portfolio import PortfolioManager
from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca
from tests.fakes.broker_http import Reply

NOW = datetime(2025, 1, 6, 15, 0, tzinfo=UTC)


@pytest.fixture
def fake():
    with FakeAlpaca(cash="100000", quotes={"AAPL": "100", "MSFT": "200", "BTC/USD": "50000"}) as server:
        yield server


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def broker(fake: FakeAlpaca, waits: list[float]):
    broker = AlpacaBroker(SecretStr(KEY_ID), SecretStr(SECRET_KEY), base_url=fake.url,
                          policy=RetryPolicy(attempts=4, backoff_s=0.001, timeout_s=1.5), sleep=waits.append)
    yield broker
    broker.close()


def order(symbol: str = "AAPL", qty: float = 10, side: Side = Side.BUY, *, strategy: str = "momentum",
          intent: Intent = Intent.ENTRY, **fields) -> Order:
    asset_type = "crypto" if symbol == "BTC" else "stocks"
    return Order(client_order_id=client_order_id("alpaca", NOW, strategy, symbol, intent), portfolio="alpaca",
                 strategy=strategy, symbol=symbol, asset_type=asset_type, side=side, qty=qty, intent=intent,
                 created_at=NOW, **fields)


def test_it_implements_the_broker_interface(broker: AlpacaBroker) -> None:
    assert isinstance(broker, BrokerInterface)


def test_a_market_order_is_filled_and_its_fill_carries_the_strategy(broker, fake) -> None:
    result = broker.submit(order(qty=10))
    assert result.status is OrderStatus.FILLED
    assert result.broker_order_id in fake.orders
    assert [(f.qty, f.price, f.strategy) for f in result.fills] == [(10.0, 100.0, "momentum")]
    assert fake.sent("POST", "/v2/orders")[0].json()["client_order_id"] == result.client_order_id


def test_a_resting_limit_order_syncs_partial_then_full_fills_with_stable_ids(broker, fake) -> None:
    placed = broker.submit(order(qty=10, order_type=OrderType.LIMIT, limit_price=95.0))
    assert placed.status is OrderStatus.PENDING and placed.fills == ()

    fake.fill(placed.broker_order_id, "4")
    partial = broker.get_order(placed.client_order_id)
    assert partial.status is OrderStatus.PARTIALLY_FILLED and partial.filled_qty == 4

    fake.fill(placed.broker_order_id)
    filled = broker.get_order(placed.client_order_id)
    assert filled.status is OrderStatus.FILLED and [f.qty for f in filled.fills] == [4.0, 6.0]
    assert filled.fills[0].fill_id == partial.fills[0].fill_id


def test_an_order_done_for_the_day_stays_open_and_its_next_sessions_fill_is_seen(broker, fake) -> None:
    """done_for_day is not terminal at Alpaca: the order works again in the next session."""
    placed = broker.submit(order(qty=10, order_type=OrderType.LIMIT, limit_price=95.0))
    fake.orders[placed.broker_order_id]["status"] = "done_for_day"
    paused = broker.get_order(placed.client_order_id)
    assert paused.status is OrderStatus.PENDING and paused.reason is None

    fake.orders[placed.broker_order_id]["status"] = "new"
    fake.fill(placed.broker_order_id)
    filled = broker.get_order(placed.client_order_id)
    assert filled.status is OrderStatus.FILLED and [f.qty for f in filled.fills] == [10.0]


def test_an_order_partially_filled_on_arrival_is_reported_so(broker, fake) -> None:
    fake.fill_ratio = fake.fill_ratio / 2
    result = broker.submit(order(qty=10))
    assert result.status is OrderStatus.PARTIALLY_FILLED and result.filled_qty == 5


@pytest.mark.parametrize(("order_type", "expected"), [
    (OrderType.STOP, {"type": "stop", "stop_price": "90.5"}),
    (OrderType.STOP_LIMIT, {"type": "stop_limit", "stop_price": "90.5", "limit_price": "90.0"}),
])
def test_stop_orders_are_sent_with_their_prices_and_wait(broker, fake, order_type, expected) -> None:
    fake.positions["AAPL"] = fake.cost["AAPL"] = 10
    result = broker.submit(order(side=Side.SELL, order_type=order_type, stop_price=90.5, limit_price=90.0,
                                 intent=Intent.STOP_LOSS))
    body = fake.sent("POST", "/v2/orders")[0].json()
    assert {k: body.get(k) for k in expected} == expected
    assert result.status is OrderStatus.PENDING


def test_an_entry_with_stop_and_target_is_a_plain_order_and_the_labs_stop_exit_closes_it(broker, fake) -> None:
    """The lab's exit rules are the one exit mechanism, as in backtests: Alpaca holds no legs
    the books do not know, which would sell the position a second time."""
    manager = PortfolioManager(open_lab().config, portfolio="alpaca")
    entry = broker.submit(order(qty=10, stop_loss=92.0, take_profit=115.0))
    body = fake.sent("POST", "/v2/orders")[0].json()
    assert {"order_class", "take_profit", "stop_loss"} & set(body) == set()
    assert entry.status is OrderStatus.FILLED and broker.open_orders() == []
    for fill in entry.fills:
        manager.apply_fill(fill, asset_type="stocks", order=entry)

    fake.quotes["AAPL"] = Decimal("91")
    manager.mark({"AAPL": 91.0})
    [decision] = manager.exits(NOW)
    assert decision.intent is Intent.STOP_LOSS
    exit_ = broker.submit(order(qty=decision.position.qty, side=Side.SELL, intent=Intent.STOP_LOSS))
    assert exit_.status is OrderStatus.FILLED
    assert broker.positions() == [] and fake.orders_open() == []


def test_insufficient_buying_power_is_a_rejection_with_alpacas_reason(broker, fake) -> None:
    result = broker.submit(order(qty=5_000))
    assert result.status is OrderStatus.REJECTED
    assert "insufficient buying power" in result.reason and "403" in result.reason
    assert fake.orders == {}


def test_an_invalid_quantity_is_rejected_by_alpaca(broker) -> None:
    result = broker.submit(order(qty=0))
    assert result.status is OrderStatus.REJECTED and "qty must be > 0" in result.reason


def test_a_nan_quantity_is_rejected_without_a_request(broker, fake) -> None:
    result = broker.submit(order(qty=float("nan")))
    assert result.status is OrderStatus.REJECTED and "qty is nan" in result.reason
    assert fake.sent("POST", "/v2/orders") == []


def test_a_stock_order_while_the_market_is_closed_is_rejected_unsent(broker, fake) -> None:
    fake.market_open = False
    result = broker.submit(order())
    assert result.status is OrderStatus.REJECTED and result.reason.startswith("market closed (next open")
    assert fake.sent("POST", "/v2/orders") == []


def test_crypto_trades_while_the_stock_market_is_closed(broker, fake) -> None:
    fake.market_open = False
    result = broker.submit(order("BTC", qty=0.01))
    assert fake.sent("POST", "/v2/orders")[0].json()["symbol"] == "BTC/USD"
    assert result.status is OrderStatus.FILLED and result.symbol == "BTC"
    assert [(p.symbol, p.asset_type) for p in broker.positions()] == [("BTC", "crypto")]


@pytest.mark.parametrize("status", [401, 403])
def test_refused_keys_raise_an_auth_error_that_names_the_variables_not_the_keys(fake, waits, status) -> None:
    fake.fail_next("GET", "/v2/account", Reply(status, {"code": 40110000, "message": "request is not authorized"}
                                              if status == 401 else None))
    broker = AlpacaBroker(SecretStr(KEY_ID), SecretStr(SECRET_KEY), base_url=fake.url, sleep=waits.append)
    with pytest.raises(BrokerAuthError, match="APCA_API_KEY_ID") as info:
        broker.account()
    assert KEY_ID not in str(info.value) and SECRET_KEY not in str(info.value)


def test_wrong_keys_are_refused_by_the_server(fake, waits) -> None:
    broker = AlpacaBroker(SecretStr("PKWRONG"), SecretStr("wrong"), base_url=fake.url, sleep=waits.append)
    with pytest.raises(BrokerAuthError, match="HTTP 401"):
        broker.submit(order())


def test_429_waits_until_the_rate_limit_resets_then_places_one_order(broker, fake, waits) -> None:
    reset = str(int(time.time()) + 2)
    fake.fail_next("POST", "/v2/orders", Reply(429, {"code": 42910000, "message": "rate limit exceeded"},
                                               {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0",
                                                "X-RateLimit-Reset": reset}))
    result = broker.submit(order())
    assert result.status is OrderStatus.FILLED
    assert len(waits) == 1 and 0 < waits[0] <= 2
    assert len(fake.orders) == 1


def test_a_5xx_then_success_places_exactly_one_order(broker, fake) -> None:
    fake.fail_next("POST", "/v2/orders", Reply(500, {"code": 50010000, "message": "internal server error"}))
    result = broker.submit(order())
    assert result.status is OrderStatus.FILLED
    assert len(fake.sent("POST", "/v2/orders")) == 2 and len(fake.orders) == 1


def test_a_timeout_after_the_order_reached_alpaca_adopts_it_instead_of_resubmitting(broker, fake) -> None:
    fake.slow_next("POST", "/v2/orders", delay_s=3.0)
    result = broker.submit(order())
    assert result.status is OrderStatus.FILLED
    assert len(fake.sent("POST", "/v2/orders")) == 1
    assert len(fake.by_client_id(result.client_order_id)) == 1


def test_submitting_the_same_client_order_id_again_returns_the_held_order(broker, fake) -> None:
    first = broker.submit(order())
    again = broker.submit(order())
    assert again.broker_order_id == first.broker_order_id and again.status is OrderStatus.FILLED
    assert len(fake.orders) == 1


def test_persistent_5xx_gives_up_with_a_clear_error(broker, fake, waits) -> None:
    fake.fail_next("GET", "/v2/account", Reply(503, {"code": 50010000, "message": "service unavailable"}), times=4)
    with pytest.raises(BrokerError, match=r"GET /v2/account: service unavailable \(HTTP 503"):
        broker.account()
    assert len(waits) == 3


def test_cancel_cancels_a_resting_order_and_reports_a_filled_one_as_filled(broker, fake) -> None:
    resting = broker.submit(order(qty=10, order_type=OrderType.LIMIT, limit_price=95.0))
    assert broker.cancel(resting.client_order_id).status is OrderStatus.CANCELLED
    assert broker.open_orders() == []
    filled = broker.submit(order("MSFT", qty=1))
    assert broker.cancel(filled.client_order_id).status is OrderStatus.FILLED


def test_open_orders_pages_past_the_500_alpaca_lists_at_once(broker, fake) -> None:
    """The kill switch cancels what this lists: every open order, also those submitted at the
    same instant as the last of a page."""
    start = datetime(2025, 1, 6, 14, 0, tzinfo=UTC)
    with fake.lock:
        for i in range(1_201):
            resting = fake._new_order({"symbol": "AAPL", "side": "buy", "type": "limit", "limit_price": "90"},
                                      f"lab-resting-{i}", Decimal(1))
            resting["status"] = "new"
            resting["submitted_at"] = (start + timedelta(seconds=i // 3)).isoformat()  # three at each instant
    listed = [o.client_order_id for o in broker.open_orders()]
    assert sorted(listed) == sorted(f"lab-resting-{i}" for i in range(1_201))


def test_more_open_orders_at_one_instant_than_a_page_holds_is_an_error_not_a_short_list(broker, fake) -> None:
    with fake.lock:
        for i in range(501):
            resting = fake._new_order({"symbol": "AAPL", "side": "buy", "type": "limit", "limit_price": "90"},
                                      f"lab-resting-{i}", Decimal(1))
            resting["status"], resting["submitted_at"] = "new", "2025-01-06T14:00:00+00:00"
    with pytest.raises(BrokerError, match=r"more than 500 open orders were submitted at 2025-01-06T14:00:00\+00:00"):
        broker.open_orders()


def test_an_unknown_order_is_not_found(broker) -> None:
    with pytest.raises(OrderNotFound, match="order not found"):
        broker.get_order("lab-unknown")


def test_account_and_positions_come_back_as_numbers(broker) -> None:
    broker.submit(order(qty=10))
    account = broker.account()
    assert (account.cash, account.equity) == (99_000.0, 100_000.0)
    [position] = broker.positions()
    assert (position.symbol, position.qty, position.avg_price, position.strategy) == ("AAPL", 10.0, 100.0, "*")


def test_the_market_clock_says_when_alpaca_opens(broker, fake) -> None:
    fake.market_open = False
    clock = broker.clock(NOW)
    assert not clock.is_open and clock.next_open == datetime.fromisoformat("2025-01-07T09:30:00-05:00")
    crypto = broker.clock(datetime(2020, 1, 1, tzinfo=UTC), "crypto")  # at Alpaca's present, always open
    assert crypto.is_open and crypto.now == datetime.fromisoformat("2025-01-06T10:00:00-05:00")
