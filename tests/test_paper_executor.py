"""The paper broker: fills at the next bar, slippage, fees, volume caps, and every refusal."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from lab.trading.broker import BrokerInterface, OrderNotFound
from lab.trading.calendar import is_market_open, open_at
from lab.trading.model import Order, OrderStatus, OrderType, Side
from lab.trading.paper import Bar, PaperTradingExecutor, SlippageModel
from tests.fakes.trading import utc
from universe.calendars import last_bar_at, last_closed_session

NY = ZoneInfo("America/New_York")
MON, TUE, WED = utc(2024, 1, 8), utc(2024, 1, 9), utc(2024, 1, 10)


def executor(cash: float = 10_000.0, **kwargs) -> PaperTradingExecutor:
    defaults = dict(cash=cash, asset_types={"AAPL": "stocks", "BTC": "crypto"},
                    fee_bps={"stocks": 1.0, "crypto": 10.0}, slippage=SlippageModel(base_bps=20.0),
                    max_volume_share=0.1, last_prices={"AAPL": 100.0, "BTC": 40_000.0})
    return PaperTradingExecutor(**(defaults | kwargs))


def order(symbol: str = "AAPL", qty: float = 10, side: Side = Side.BUY, at: datetime = MON, **kwargs) -> Order:
    return Order(client_order_id=f"id-{symbol}-{side}-{qty}-{sorted(kwargs.items())}",
                 portfolio="p", strategy="momentum", symbol=symbol,
                 asset_type="crypto" if symbol == "BTC" else "stocks", side=side, qty=qty, created_at=at, **kwargs)


def bar(ts: datetime, o: float = 100.0, h: float = 105.0, low: float = 95.0, c: float = 101.0,
        v: float = 1_000_000.0) -> Bar:
    return Bar(ts, o, h, low, c, v)


def test_the_paper_executor_is_a_broker():
    assert isinstance(executor(), BrokerInterface)


def test_a_market_order_fills_at_the_next_bars_open_plus_slippage_and_pays_the_stock_fee():
    broker = executor()
    assert broker.submit(order()).status is OrderStatus.PENDING
    assert broker.on_bar("AAPL", bar(MON)) == []  # the decision bar itself never fills it
    (fill,) = broker.on_bar("AAPL", bar(TUE, o=100.0))
    assert fill.price == pytest.approx(100.0 * 1.002)
    assert fill.fee == pytest.approx(10 * fill.price * 1e-4)
    assert broker.account().cash == pytest.approx(10_000 - 10 * fill.price - fill.fee)
    assert broker.get_order(fill.client_order_id).status is OrderStatus.FILLED
    assert [p.qty for p in broker.positions()] == [10]


def test_crypto_pays_its_own_fee_and_trades_fractions():
    broker = executor(cash=100_000.0)
    broker.submit(order("BTC", qty=0.5))
    (fill,) = broker.on_bar("BTC", bar(TUE, o=40_000, h=41_000, low=39_000, c=40_500))
    assert fill.qty == 0.5 and fill.fee == pytest.approx(0.5 * fill.price * 10e-4)


def test_a_sell_market_order_slips_down():
    broker = executor()
    broker.submit(order())
    broker.on_bar("AAPL", bar(TUE))
    broker.submit(order(side=Side.SELL, at=TUE))
    (fill,) = broker.on_bar("AAPL", bar(WED, o=110.0))
    assert fill.price == pytest.approx(110.0 * 0.998)


def test_a_large_order_fills_partially_at_the_volume_cap_then_completes():
    broker = executor(cash=1e9)
    broker.submit(order(qty=150))
    (first,) = broker.on_bar("AAPL", bar(TUE, v=1_000))
    assert first.qty == 100
    assert broker.get_order(first.client_order_id).status is OrderStatus.PARTIALLY_FILLED
    (second,) = broker.on_bar("AAPL", bar(WED, v=1_000))
    assert second.qty == 50 and second.fill_id != first.fill_id
    assert broker.get_order(first.client_order_id).status is OrderStatus.FILLED


def test_the_volume_cap_fills_whole_shares_of_a_stock_and_nothing_below_one():
    broker = executor(cash=1e9)
    broker.submit(order(qty=100))
    assert broker.on_bar("AAPL", bar(TUE, v=5)) == []  # a tenth of 5 shares is no share
    (fill,) = broker.on_bar("AAPL", bar(WED, v=234.567))
    assert fill.qty == 23 and broker.positions()[0].qty == 23


def test_a_bar_that_filled_part_of_an_order_fills_no_more_of_it_when_seen_again():
    broker = executor(cash=1e9)  # a cycle rebuilds the paper account and replays the bars since its orders
    broker.submit(order(qty=150))
    assert [f.qty for f in broker.on_bar("AAPL", bar(TUE, v=1_000))] == [100]
    assert broker.on_bar("AAPL", bar(TUE, v=1_000)) == []
    assert [f.qty for f in broker.on_bar("AAPL", bar(WED, v=1_000))] == [50]


def test_a_fill_delay_holds_the_order_for_that_many_bars():
    broker = executor(fill_delay_bars=1)
    broker.submit(order())
    assert broker.on_bar("AAPL", bar(TUE)) == []
    assert len(broker.on_bar("AAPL", bar(WED))) == 1


def test_a_limit_buy_fills_at_the_limit_when_the_low_reaches_it_and_not_before():
    broker = executor()
    broker.submit(order(order_type=OrderType.LIMIT, limit_price=96.0))
    assert broker.on_bar("AAPL", bar(TUE, o=100, low=97)) == []
    (fill,) = broker.on_bar("AAPL", bar(WED, o=100, low=95))
    assert fill.price == 96.0  # no slippage on a limit


def test_a_stop_loss_sells_at_the_stop_or_the_gap_open_whichever_is_worse():
    broker = executor()
    broker.submit(order(qty=20))
    broker.on_bar("AAPL", bar(TUE))
    broker.submit(order(qty=10, side=Side.SELL, at=TUE, order_type=OrderType.STOP, stop_price=95.0))
    broker.submit(order(qty=10, side=Side.SELL, at=TUE, order_type=OrderType.STOP, stop_price=99.0))
    fills = broker.on_bar("AAPL", bar(WED, o=97.0, low=90.0))
    prices = sorted(f.price for f in fills)
    assert prices == pytest.approx([95.0 * 0.998, 97.0 * 0.998])


def test_a_take_profit_limit_sell_fills_when_the_high_reaches_it():
    broker = executor()
    broker.submit(order())
    broker.on_bar("AAPL", bar(TUE))
    broker.submit(order(side=Side.SELL, at=TUE, order_type=OrderType.LIMIT, limit_price=104.0))
    (fill,) = broker.on_bar("AAPL", bar(WED, o=101, h=106))
    assert fill.price == 104.0


def test_submitting_the_same_client_order_id_twice_places_one_order():
    broker = executor()
    first = broker.submit(order())
    assert broker.submit(order()) == first
    assert len(broker.open_orders()) == 1


def test_cancel_closes_an_open_order_and_unknown_ids_raise_order_not_found():
    broker = executor()
    placed = broker.submit(order())
    assert broker.cancel(placed.client_order_id).status is OrderStatus.CANCELLED
    assert broker.on_bar("AAPL", bar(TUE)) == []
    with pytest.raises(OrderNotFound):
        broker.get_order("nope")


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"qty": 0}, "invalid order: quantity must be a positive number"),
    ({"qty": -5}, "invalid order: quantity must be a positive number"),
    ({"qty": math.nan}, "invalid order: quantity must be a positive number"),
    ({"order_type": OrderType.LIMIT, "limit_price": math.nan}, "needs a positive limit price"),
    ({"order_type": OrderType.LIMIT, "limit_price": -1.0}, "needs a positive limit price"),
    ({"order_type": OrderType.STOP}, "needs a positive stop price"),
    ({"symbol": "NOPE"}, "unknown symbol 'NOPE'"),
    ({"qty": 1_000}, "insufficient funds"),
    ({"side": Side.SELL}, "short selling disabled"),
    ({"at": utc(2024, 1, 6)}, "market closed"),  # a Saturday
])
def test_each_bad_order_is_rejected_with_its_reason_and_never_raises(kwargs, reason):
    answer = executor().submit(order(**kwargs))
    assert answer.status is OrderStatus.REJECTED
    assert reason in answer.reason


def test_shorts_are_accepted_when_configured():
    assert executor(allow_shorts=True).submit(order(side=Side.SELL)).status is OrderStatus.PENDING


def test_buying_back_a_short_is_never_refused_or_cut_for_cash():
    broker = executor(cash=1_000.0, allow_shorts=True)
    broker.submit(order(qty=50, side=Side.SELL))
    broker.on_bar("AAPL", bar(TUE))  # short 50 at about 100: about 5,990 of cash with the proceeds
    broker.on_bar("AAPL", bar(WED, c=125.0))  # the price runs up: buying back costs more than the cash
    cover = broker.submit(order(qty=50, at=WED))
    assert cover.status is OrderStatus.PENDING, cover.reason
    (fill,) = broker.on_bar("AAPL", bar(utc(2024, 1, 11), o=130.0))
    assert fill.qty == 50 and broker.positions() == []
    assert broker.account().cash < 0  # lent by the margin account, as a broker does


def test_open_buy_orders_reserve_cash_for_later_submissions():
    broker = executor(cash=1_500.0)
    assert broker.submit(order(qty=10)).status is OrderStatus.PENDING
    assert "insufficient funds" in broker.submit(order(qty=5)).reason


def test_a_gap_up_never_spends_more_cash_than_the_account_has():
    broker = executor(cash=1_010.0)
    broker.submit(order(qty=10))
    fills = broker.on_bar("AAPL", bar(TUE, o=150.0))
    assert broker.account().cash >= 0
    assert sum(f.qty for f in fills) < 10


@pytest.mark.parametrize(("asset_type", "when", "expected"), [
    ("stocks", datetime(2024, 1, 6, 11, 0, tzinfo=NY), False),   # Saturday
    ("stocks", datetime(2024, 1, 8, 11, 0, tzinfo=NY), True),    # Monday mid-session
    ("stocks", datetime(2024, 1, 8, 17, 0, tzinfo=NY), False),   # after the close
    ("stocks", datetime(2023, 12, 25, 11, 0, tzinfo=NY), False),  # Christmas
    ("stocks", utc(2023, 12, 25), False),                         # Christmas as a daily bar label
    ("stocks", datetime(2023, 11, 24, 12, 0, tzinfo=NY), True),   # half day, before the early close
    ("stocks", datetime(2023, 11, 24, 14, 0, tzinfo=NY), False),  # half day, after the 13:00 close
    ("crypto", datetime(2024, 1, 7, 3, 0, tzinfo=NY), True),      # crypto at 3 a.m. on a Sunday
])
def test_market_hours_come_from_the_exchange_calendar(asset_type, when, expected):
    assert is_market_open(asset_type, when) is expected
    assert executor().clock(when, asset_type).is_open is expected
    assert open_at(asset_type, pd.DatetimeIndex([when])).tolist() == [expected]


@pytest.mark.parametrize("asset_type", ["stocks", "crypto"])
def test_a_clock_of_stamps_is_open_where_each_stamp_is(asset_type):
    # daily labels over holidays and weekends, and times around a half day's early close
    stamps = pd.date_range("2023-11-20", "2024-01-03", freq="D", tz="UTC").append(
        pd.date_range("2023-11-24 11:00", "2023-11-24 14:00", freq="30min", tz="America/New_York").tz_convert("UTC"))
    assert open_at(asset_type, stamps).tolist() == [is_market_open(asset_type, ts) for ts in stamps]


@pytest.mark.parametrize(("asset_type", "when", "last_bar"), [
    ("stocks", utc(2024, 1, 9), utc(2024, 1, 8)),                          # a session's label: the one before
    ("stocks", datetime(2024, 1, 9, 15, 59, tzinfo=NY), utc(2024, 1, 8)),  # Tuesday before its close
    ("stocks", datetime(2024, 1, 9, 16, 30, tzinfo=NY), utc(2024, 1, 9)),  # Tuesday after its close
    ("stocks", datetime(2024, 1, 8, 9, 30, tzinfo=NY), utc(2024, 1, 5)),   # Monday's open: Friday
    ("stocks", datetime(2023, 12, 26, 9, 30, tzinfo=NY), utc(2023, 12, 22)),  # over Christmas
    ("crypto", utc(2024, 1, 7), utc(2024, 1, 6)),                          # midnight: the day that just ended
    ("crypto", datetime(2024, 1, 7, 3, 0, tzinfo=NY), utc(2024, 1, 6)),
])
def test_the_last_complete_daily_bar_comes_from_the_exchange_calendar(asset_type, when, last_bar):
    assert last_closed_session(asset_type, when) == last_bar


@pytest.mark.parametrize(("asset_type", "as_of", "last_bar"), [
    ("stocks", utc(2024, 1, 9), utc(2024, 1, 9)),  # a date: that session's bar
    ("stocks", utc(2024, 1, 13), utc(2024, 1, 12)),  # a Saturday's label: Friday's session
    ("stocks", utc(2024, 1, 9, 15), utc(2024, 1, 8)),  # in market hours: the session before
    ("stocks", utc(2024, 1, 9, 22), utc(2024, 1, 9)),  # after the close
    ("crypto", utc(2024, 1, 9), utc(2024, 1, 9)),
    ("crypto", utc(2024, 1, 9, 15), utc(2024, 1, 8)),
])
def test_a_decision_reads_its_dates_bar_or_the_bars_complete_at_its_time(asset_type, as_of, last_bar):
    assert last_bar_at(asset_type, as_of) == last_bar


# --- orders sized in cash ----------------------------------------------------------------------

def test_a_cash_sized_buy_is_resolved_at_the_fill_price_with_the_fee():
    broker = executor(cash=10_000.0, slippage=SlippageModel(base_bps=0.0, max_bps=0.0))
    broker.submit(order(qty=99, notional=10_000.0))  # 99: the estimate at the decision close
    (fill,) = broker.on_bar("AAPL", bar(TUE, o=90.0))
    assert fill.qty == math.floor(10_000.0 / (90.0 * 1.0001))
    assert broker.get_order(fill.client_order_id).status is OrderStatus.FILLED
    assert broker.account().cash == pytest.approx(10_000 - fill.qty * 90.0 * 1.0001)


def test_a_cash_sized_buy_over_the_buying_power_is_rejected():
    answer = executor(cash=1_000.0).submit(order(qty=5, notional=1_500.0))
    assert answer.status is OrderStatus.REJECTED and "insufficient funds" in answer.reason


def test_finished_orders_leave_the_open_order_book():
    broker = executor(cash=100_000.0)
    first, second = broker.submit(order(qty=1)), broker.submit(order(qty=2))
    broker.cancel(second.client_order_id)
    assert [o.client_order_id for o in broker.open_orders()] == [first.client_order_id]
    broker.on_bar("AAPL", bar(TUE))
    assert broker.open_orders() == []
    assert broker.account().buying_power == broker.account().cash
