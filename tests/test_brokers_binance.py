"""BinanceBroker against a fake Binance spot testnet on 127.0.0.1 (market-apis.md §6)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from lab.trading.broker import BrokerInterface
from lab.trading.brokers._http import BrokerAuthError, BrokerError, RetryPolicy
from lab.trading.brokers.binance import BinanceBroker, fit_to_filters
from lab.trading.model import Intent, Order, OrderStatus, OrderType, Side, client_order_id
from tests.fakes.binance_trading import API_KEY, API_SECRET, FakeBinance, default_filters
from tests.fakes.broker_http import Reply

NOW = datetime(2025, 1, 5, 3, 0, tzinfo=UTC)  # a Sunday, 3 a.m.: crypto trades


@pytest.fixture
def fake():
    with FakeBinance(balances={"USDT": "10000", "BTC": "0", "ETH": "0"}) as server:
        yield server


@pytest.fixture
def waits() -> list[float]:
    return []


def make_broker(fake: FakeBinance, waits: list[float], **kwargs) -> BinanceBroker:
    return BinanceBroker(SecretStr(kwargs.pop("key", API_KEY)), SecretStr(kwargs.pop("secret", API_SECRET)),
                         base_url=fake.url, symbols=kwargs.pop("symbols", ("BTC", "ETH")), sleep=waits.append,
                         policy=RetryPolicy(attempts=4, backoff_s=0.001, timeout_s=1.5), **kwargs)


@pytest.fixture
def broker(fake, waits):
    broker = make_broker(fake, waits)
    yield broker
    broker.close()


def order(symbol: str = "BTC", qty: float = 0.1, side: Side = Side.BUY, **fields) -> Order:
    return Order(client_order_id=client_order_id("binance", NOW, "breakout", symbol, Intent.ENTRY),
                 portfolio="binance", strategy="breakout", symbol=symbol, asset_type="crypto", side=side,
                 qty=qty, created_at=NOW, **fields)


def test_the_signature_matches_binances_published_test_vector() -> None:
    payload = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
               "&recvWindow=5000&timestamp=1499827319559")
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    broker = BinanceBroker(SecretStr("k"), SecretStr(secret), wall_clock=lambda: 1499827319.559)
    request = broker._sign("POST", "/api/v3/order", {"symbol": "LTCBTC", "side": "BUY", "type": "LIMIT",
                                                     "timeInForce": "GTC", "quantity": "1", "price": "0.1"})
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    assert expected == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    assert request.content.decode() == f"{payload}&signature={expected}"


def test_it_implements_the_broker_interface(broker) -> None:
    assert isinstance(broker, BrokerInterface)


def test_a_market_order_is_filled_with_its_fee_in_the_quote_asset(broker, fake) -> None:
    result = broker.submit(order(qty=0.1))
    assert result.status is OrderStatus.FILLED
    [fill] = result.fills
    assert (fill.qty, fill.price, fill.fee, fill.strategy) == (0.1, 50_000.0, 5.0, "breakout")
    assert fake.sent("POST", "/api/v3/order")[0].params["newClientOrderId"] == result.client_order_id


def test_a_resting_limit_order_syncs_partial_then_full_fills_with_stable_ids(broker, fake) -> None:
    placed = broker.submit(order(qty=0.1, order_type=OrderType.LIMIT, limit_price=49_000.0))
    assert placed.status is OrderStatus.PENDING
    fake.fill(int(placed.broker_order_id), "0.04")
    partial = broker.get_order(placed.client_order_id)
    assert partial.status is OrderStatus.PARTIALLY_FILLED and partial.filled_qty == pytest.approx(0.04)
    fake.fill(int(placed.broker_order_id))
    filled = broker.get_order(placed.client_order_id)
    assert filled.status is OrderStatus.FILLED and [f.qty for f in filled.fills] == [0.04, 0.06]
    assert filled.fills[0].fill_id == partial.fills[0].fill_id


def test_a_marketable_limit_order_partially_filled_on_arrival_stays_open(broker, fake) -> None:
    fake.fill_ratio = Decimal("0.5")
    result = broker.submit(order(qty=0.1, order_type=OrderType.LIMIT, limit_price=51_000.0))
    assert result.status is OrderStatus.PARTIALLY_FILLED and result.filled_qty == pytest.approx(0.05)
    assert [o.client_order_id for o in broker.open_orders()] == [result.client_order_id]


def test_quantity_and_price_are_fitted_to_lot_step_and_tick_before_sending(broker, fake) -> None:
    result = broker.submit(order(qty=0.123456789, order_type=OrderType.LIMIT, limit_price=49_000.129))
    sent = fake.sent("POST", "/api/v3/order")[0].params
    assert (sent["quantity"], sent["price"]) == ("0.12345", "49000.12")
    assert (result.qty, result.limit_price) == (0.12345, 49_000.12)


@pytest.mark.parametrize(("symbol", "qty", "reason"), [
    ("BTC", 0.000001, "LOT_SIZE: quantity 0 outside [0.00001, 9000]"),
    ("BTC", 0.00005, "NOTIONAL: notional 2.5 below 5"),
    ("ETH", 0.003, "MIN_NOTIONAL: notional 9 below 10"),
])
def test_orders_failing_the_exchange_filters_are_rejected_unsent(broker, fake, symbol, qty, reason) -> None:
    result = broker.submit(order(symbol, qty=qty))
    assert result.status is OrderStatus.REJECTED and result.reason == f"binance filter: {reason}"
    assert fake.sent("POST", "/api/v3/order") == []


def test_a_price_outside_the_price_filter_is_rejected_unsent(broker, fake) -> None:
    result = broker.submit(order(qty=0.0001, order_type=OrderType.LIMIT, limit_price=2_000_000.0))
    assert result.status is OrderStatus.REJECTED and "PRICE_FILTER" in result.reason


def test_a_filter_failure_reported_by_binance_is_a_rejection(broker, fake) -> None:
    broker.submit(order(qty=0.1, order_type=OrderType.LIMIT, limit_price=40_000.0))  # caches the filters
    fake.filters["BTCUSDT"]["LOT_SIZE"]["stepSize"] = "0.01000000"  # the exchange changed them since
    result = broker.submit(order(qty=0.105).evolve(client_order_id="lab-second"))
    assert result.status is OrderStatus.REJECTED and "Filter failure: LOT_SIZE" in result.reason


def test_insufficient_balance_is_a_rejection_with_binances_reason(broker) -> None:
    result = broker.submit(order(qty=1.0))
    assert result.status is OrderStatus.REJECTED
    assert "insufficient balance" in result.reason and "-2010" in result.reason


def test_stock_and_stop_orders_are_rejected_as_unsupported(broker) -> None:
    stock = order().evolve(symbol="AAPL", asset_type="stocks")
    assert "crypto only" in broker.submit(stock).reason
    assert "not supported" in broker.submit(order(order_type=OrderType.STOP, stop_price=40_000.0)).reason


def test_an_unknown_symbol_is_rejected(broker) -> None:
    result = broker.submit(order("DOGE", qty=100))
    assert result.status is OrderStatus.REJECTED and "unknown symbol DOGE" in result.reason


def test_a_wrong_key_raises_an_auth_error_without_the_keys(fake, waits) -> None:
    broker = make_broker(fake, waits, key="wrong-key")
    with pytest.raises(BrokerAuthError, match="-2015") as info:
        broker.account()
    assert "wrong-key" not in str(info.value) and API_SECRET not in str(info.value)


def test_a_wrong_secret_fails_the_signature_check(fake, waits) -> None:
    broker = make_broker(fake, waits, secret="not-the-secret")
    with pytest.raises(BrokerAuthError, match="Signature for this request is not valid"):
        broker.submit(order())


def test_403_is_an_auth_error(broker, fake) -> None:
    fake.fail_next("GET", "/api/v3/account", Reply(403, None))
    with pytest.raises(BrokerAuthError, match="HTTP 403"):
        broker.account()


def test_429_waits_retry_after_then_places_one_order(broker, fake, waits) -> None:
    fake.fail_next("POST", "/api/v3/order", Reply(429, {"code": -1003, "msg": "Too much request weight used; "
                   "current limit is 6000 request weight per 1 MINUTE."}, {"Retry-After": "7"}))
    result = broker.submit(order())
    assert result.status is OrderStatus.FILLED and waits == [7.0]
    assert len(fake.orders) == 1


def test_a_ban_longer_than_the_client_waits_is_not_retried_and_says_why(broker, fake, waits) -> None:
    """Requests made while Binance bans the IP lengthen the ban: give up at once, naming it."""
    fake.fail_next("POST", "/api/v3/order", Reply(418, {"code": -1003, "msg": "Way too much request weight used; "
                   "IP banned until 1660000000000."}, {"Retry-After": "7200"}))
    with pytest.raises(BrokerError, match=r"IP banned until 1660000000000\. \(HTTP 418, code -1003, "
                                          r"Retry-After 7200 s\); not retried") as info:
        broker.submit(order())
    assert info.value.status == 418 and info.value.retry_after == 7200
    assert waits == [] and len(fake.sent("POST", "/api/v3/order")) == 1 and fake.orders == {}


def test_a_5xx_with_unknown_status_then_success_places_exactly_one_order(broker, fake) -> None:
    fake.fail_next("POST", "/api/v3/order", Reply(503, {"code": -1006, "msg": "An unexpected response was "
                   "received from the message bus. Execution status unknown."}))
    result = broker.submit(order())
    assert result.status is OrderStatus.FILLED
    assert len(fake.sent("POST", "/api/v3/order")) == 2 and len(fake.orders) == 1


def test_a_timeout_after_the_order_reached_binance_adopts_it_instead_of_resubmitting(broker, fake) -> None:
    fake.slow_next("POST", "/api/v3/order", delay_s=3.0)
    result = broker.submit(order())
    assert result.status is OrderStatus.FILLED and result.filled_qty == pytest.approx(0.1)
    assert len(fake.sent("POST", "/api/v3/order")) == 1 and len(fake.by_client_id(result.client_order_id)) == 1


def test_submitting_the_same_client_order_id_again_returns_the_held_order(broker, fake) -> None:
    first = broker.submit(order())
    again = broker.submit(order())
    assert again.broker_order_id == first.broker_order_id and len(fake.orders) == 1


@pytest.mark.parametrize("server_offset_ms", [10_000, -3_000])
def test_clock_skew_resyncs_with_server_time_and_retries_once(broker, fake, server_offset_ms) -> None:
    fake.clock_offset_ms = server_offset_ms
    result = broker.submit(order())
    assert result.status is OrderStatus.FILLED
    assert len(fake.sent("GET", "/api/v3/time")) == 1
    assert len(fake.sent("POST", "/api/v3/order")) == 2 and len(fake.orders) == 1


def test_the_clock_is_at_binances_present_whatever_time_is_asked(broker, fake) -> None:
    fake.clock_offset_ms = 10_000  # the server runs 10 s ahead of this machine
    broker._sync_time()
    clock = broker.clock(datetime(2020, 1, 1, tzinfo=UTC), "crypto")
    server = datetime.fromtimestamp(fake.server_time() / 1000, UTC)
    assert abs((clock.now - server).total_seconds()) < 1 and clock.is_open


def test_a_skew_that_persists_after_resync_is_an_error(broker, fake) -> None:
    skew = Reply(400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."})
    fake.fail_next("GET", "/api/v3/account", skew, times=2)
    with pytest.raises(BrokerError, match="-1021"):
        broker.account()


def test_cancel_a_resting_order(broker) -> None:
    placed = broker.submit(order(qty=0.1, order_type=OrderType.LIMIT, limit_price=40_000.0))
    assert broker.cancel(placed.client_order_id).status is OrderStatus.CANCELLED
    assert broker.open_orders() == []


@pytest.mark.parametrize("listed_first", [True, False])
def test_an_open_order_in_a_symbol_outside_the_configured_list_is_cancelled_at_its_own_symbol(
        broker, fake, waits, listed_first) -> None:
    """The kill switch cancels every order open at the account, whatever symbols the lab trades."""
    placed = broker.submit(order("ETH", qty=0.01, order_type=OrderType.LIMIT, limit_price=2_000.0))
    btc_only = make_broker(fake, waits, symbols=("BTC",))
    if listed_first:
        assert [o.client_order_id for o in btc_only.open_orders()] == [placed.client_order_id]
    cancelled = btc_only.cancel(placed.client_order_id)
    assert cancelled.status is OrderStatus.CANCELLED and cancelled.symbol == "ETH"
    assert [o["status"] for o in fake.orders.values()] == ["CANCELED"]


def test_positions_and_account_from_balances(broker, fake) -> None:
    broker.submit(order(qty=0.1))
    [position] = broker.positions()
    assert (position.symbol, position.qty, position.asset_type) == ("BTC", 0.1, "crypto")
    account = broker.account()
    assert account.cash == pytest.approx(10_000 - 5_000 - 5) and account.equity == pytest.approx(9_995)
    assert broker.clock(NOW, "crypto").is_open and not broker.clock(NOW, "stocks").is_open


@given(qty=st.decimals(min_value="0.00001", max_value="100", places=8),
       price=st.decimals(min_value="1", max_value="900000", places=4),
       side=st.sampled_from(list(Side)))
def test_fitted_orders_always_pass_the_filters_and_never_grow(qty, price, side) -> None:
    filters = default_filters()["BTCUSDT"]
    fitted = fit_to_filters(filters, side=side, qty=qty, price=price, market=False)
    if isinstance(fitted, str):
        return
    new_qty, new_price = fitted
    assert new_qty <= qty and (new_qty - Decimal("0.00001")) % Decimal("0.00001") == 0
    assert (new_price - Decimal("0.01")) % Decimal("0.01") == 0 and abs(new_price - price) < Decimal("0.01")
    assert (new_price <= price) if side is Side.BUY else (new_price >= price)
    assert new_qty * new_price >= 5


@pytest.mark.parametrize("fee_in_bought_coin", [False, True])
def test_a_cycle_books_the_fill_binance_answers_a_market_order_with(engine, tmp_path, monkeypatch, waits,
                                                                    fee_in_bought_coin) -> None:
    """A market order comes back FILLED with its fills (the FULL response): the cycle that
    placed it books them, and the next cycle finds the books and the account in agreement
    (the commission paid in USDT, or in the BTC bought)."""
    from datetime import timedelta

    import pandas as pd
    from sqlalchemy import insert, select

    from lab.db import models as db
    from lab.runtime import LabContext
    from lab.settings import Settings
    from lab.trading.cycle import run_trading_cycle
    from tests.fakes.trading import FixedPredictions, make_bars, sessions, write_config

    monkeypatch.setenv("LAB_CONFIG", str(write_config(
        tmp_path / "trading.json", universe={"crypto": {"symbols": ["BTC"], "benchmark": "BTC"}},
        strategies={"breakout": {"asset_classes": ["crypto"], "min_confidence": 0.65, "max_positions": 1,
                                 "params": {"max_width_pctile": 0.6, "min_volume_ratio": 0.5}}})))
    # the test world's BTC bars up to a day its breakout fires, moved to end yesterday at the fake's 50,000
    bars = make_bars(sessions("crypto", "2022-01-01", "2023-12-29"), seed=4, start_price=500.0).loc[:"2023-03-01"]
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    bars.index = bars.index + (pd.Timestamp(now).floor("D") - pd.Timedelta(days=1) - bars.index[-1])
    bars[["open", "high", "low", "close"]] *= 50_000 / bars["close"].iloc[-1]
    with engine.begin() as conn:
        conn.execute(insert(db.PriceBar), [
            {"asset_type": "crypto", "symbol": "BTC", "interval": "1d", "ts": ts.to_pydatetime(), "source": "test",
             **{k: float(v) for k, v in row.items()}} for ts, row in bars.iterrows()])
    ctx = LabContext(settings=Settings(), engine=engine)
    with FakeBinance(balances={"USDT": "100000", "BTC": "0"}, fee_in_bought_coin=fee_in_bought_coin) as fake:
        broker = make_broker(fake, waits, portfolio="binance")
        first = run_trading_cycle(ctx, now, portfolio="binance", predictions=FixedPredictions(), broker=broker)
        second = run_trading_cycle(ctx, now + timedelta(minutes=1), portfolio="binance",
                                   predictions=FixedPredictions(), broker=broker)
        held_at_broker = float(fake.balances["BTC"])
    assert first.orders_placed == first.fills == 1
    with engine.connect() as conn:
        (status, qty, filled), = conn.execute(select(db.Order.status, db.Order.qty, db.Order.filled_qty)).all()
        held = conn.execute(select(db.Position.qty).where(db.Position.symbol == "BTC")).scalar_one()
    assert status == "filled" and filled == held == held_at_broker and qty * 0.998 < filled <= qty
    assert not second.halted, second.notes



def test_a_buy_whose_commission_is_paid_in_the_bought_coin_books_what_the_account_received(waits) -> None:
    with FakeBinance(balances={"USDT": "10000", "BTC": "0"}, fee_in_bought_coin=True) as fake:
        answer = make_broker(fake, waits).submit(order(qty=0.1))
        held, cash = fake.balances["BTC"], fake.balances["USDT"]
    (fill,) = answer.fills
    assert fill.qty == float(held) == pytest.approx(0.0999)  # 0.1 bought, 0.0001 of it the commission
    assert 10_000 - fill.qty * fill.price - fill.fee == pytest.approx(float(cash), abs=1e-9)  # cash as the account's
    assert fill.fee == pytest.approx(0.0001 * 50_000)
