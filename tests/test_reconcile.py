"""Reconciliation: the broker's positions and cash against the lab's books, halting on a mismatch."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import SecretStr

from lab.db import models as db
from lab.db import session_scope
from lab.runtime import open_lab
from lab.trading.brokers._http import RetryPolicy
from lab.trading.brokers.alpaca import AlpacaBroker
from lab.trading.model import Intent, Order, Side, client_order_id
from lab.trading.reconcile import reconcile
from lab.trading.store import book_fill, load_books, store_order
from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca

NOW = datetime(2025, 1, 6, 15, 0, tzinfo=UTC)


@pytest.fixture
def traded(engine):
    """A lab account that bought 10 AAPL through Alpaca and booked the fill."""
    config = open_lab().config
    with FakeAlpaca(cash=str(config.execution.initial_cash)) as fake:
        broker = AlpacaBroker(SecretStr(KEY_ID), SecretStr(SECRET_KEY), base_url=fake.url,
                              policy=RetryPolicy(attempts=2, backoff_s=0.001))
        books = load_books(engine, config, "alpaca")
        order = broker.submit(Order(client_order_id=client_order_id("alpaca", NOW, "momentum", "AAPL", Intent.ENTRY),
                                    portfolio="alpaca", strategy="momentum", symbol="AAPL", asset_type="stocks",
                                    side=Side.BUY, qty=10, created_at=NOW))
        store_order(engine, order, broker="alpaca")
        for fill in order.fills:
            book_fill(engine, books, order, fill)
        yield engine, broker, fake


def halted(engine) -> tuple[bool, str | None]:
    with session_scope(engine) as session:
        control = session.get(db.TradingControl, "alpaca")
        return (bool(control.halted), control.halt_reason) if control else (False, None)


def test_matching_books_pass_and_leave_trading_on(traded) -> None:
    engine, broker, _ = traded
    assert reconcile(engine, broker, "alpaca").ok
    assert halted(engine) == (False, None)


def test_a_position_the_lab_does_not_know_halts_the_account(traded) -> None:
    engine, broker, fake = traded
    fake.positions["MSFT"] = Decimal(3)  # traded outside the lab
    result = reconcile(engine, broker, "alpaca")
    assert result.mismatches == ["MSFT: broker holds 3, books say 0"]
    assert halted(engine) == (True, "reconciliation mismatch with alpaca: MSFT: broker holds 3, books say 0")


def test_a_cash_difference_halts_the_account(traded) -> None:
    engine, broker, fake = traded
    fake.cash -= 250
    result = reconcile(engine, broker, "alpaca")
    assert result.mismatches == ["cash: broker has 98,750.00, books say 99,000.00"]
    assert halted(engine)[0]


def test_a_difference_within_tolerance_is_not_a_mismatch(traded) -> None:
    engine, broker, fake = traded
    fake.cash -= Decimal("0.5")
    assert reconcile(engine, broker, "alpaca", cash_tolerance=1.0).ok


def _ctx(engine):
    from lab.runtime import LabContext
    from lab.settings import get_settings

    return LabContext(settings=get_settings(), engine=engine)


def test_the_trading_cycle_reconciles_a_real_broker_first_and_a_mismatch_places_nothing(traded) -> None:
    from lab.trading.cycle import run_trading_cycle
    from tests.fakes.trading import FixedPredictions

    engine, broker, fake = traded
    fake.positions["MSFT"] = Decimal(3)  # traded outside the lab
    before = len(fake.orders)
    result = run_trading_cycle(_ctx(engine), NOW, portfolio="alpaca", predictions=FixedPredictions(0.9),
                               broker=broker)
    assert result.halted and result.orders_placed == 0
    assert result.notes == ["reconciliation mismatch, trading halted: MSFT: broker holds 3, books say 0"]
    assert len(fake.orders) == before
    assert halted(engine)[0]


def test_the_trading_cycle_trades_on_when_the_broker_agrees_with_the_books(traded) -> None:
    from lab.trading.cycle import run_trading_cycle
    from tests.fakes.trading import FixedPredictions

    engine, broker, _ = traded
    result = run_trading_cycle(_ctx(engine), NOW, portfolio="alpaca", predictions=FixedPredictions(0.9),
                               broker=broker)
    assert not result.halted and halted(engine) == (False, None)


def test_a_configured_real_broker_is_what_the_cycle_trades_through(engine, tmp_path, monkeypatch) -> None:
    """`execution.broker` switches the cycle's broker; nothing else changes (here: no keys)."""
    import json

    from lab.errors import ConfigError
    from lab.trading.cycle import run_trading_cycle
    from tests.fakes.trading import FixedPredictions

    raw = json.loads(open(open_lab().settings.lab_config).read())
    raw["execution"]["broker"] = "alpaca"
    path = tmp_path / "trading.json"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv("LAB_CONFIG", str(path))
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    with pytest.raises(ConfigError, match="APCA_API_KEY_ID"):
        run_trading_cycle(_ctx(engine), NOW, portfolio="alpaca", predictions=FixedPredictions(0.9))


@pytest.mark.parametrize("as_of", [datetime(2025, 1, 1, 15, 0, tzinfo=UTC), datetime(2025, 1, 6, 16, 0, tzinfo=UTC)])
def test_a_real_brokers_cycle_decides_at_the_brokers_present_or_not_at_all(traded, as_of) -> None:
    """It fills at today's prices: a decision at another time would size on other prices."""
    from lab.errors import TradingError
    from lab.trading.cycle import run_trading_cycle
    from tests.fakes.trading import FixedPredictions

    engine, broker, fake = traded
    before = len(fake.orders)
    with pytest.raises(TradingError, match=rf"alpaca trades at its present, 2025-01-06T15:00:00\+00:00: a cycle "
                                           rf"deciding at {as_of.isoformat().replace('+', '[+]')} .*paper broker"):
        run_trading_cycle(_ctx(engine), as_of, portfolio="alpaca", predictions=FixedPredictions(0.9), broker=broker)
    with session_scope(engine) as session:
        assert session.query(db.TradingCycle).count() == 0
    assert len(fake.orders) == before
    late = datetime(2025, 1, 6, 14, 50, tzinfo=UTC)  # a retry or a resumed cycle minutes later runs
    assert not run_trading_cycle(_ctx(engine), late, portfolio="alpaca", predictions=FixedPredictions(0.9),
                                 broker=broker).already_completed
    fake.now = "2025-01-06T15:00:00.000000-05:00"  # hours later, re-running it is still the no-op it was
    assert run_trading_cycle(_ctx(engine), late, portfolio="alpaca", predictions=FixedPredictions(0.9),
                             broker=broker).already_completed


def _resting_entry(engine, broker, fake) -> Order:
    """A swing entry for 5 AAPL resting at the broker, recorded by the cycle that placed it, still open."""
    fake._match = lambda order: None  # the order rests at the broker
    order = broker.submit(Order(client_order_id=client_order_id("alpaca", NOW, "swing", "AAPL", Intent.ENTRY),
                                portfolio="alpaca", strategy="swing", symbol="AAPL", asset_type="stocks",
                                side=Side.BUY, qty=5, created_at=NOW))
    store_order(engine, order, broker="alpaca")
    return order


def _assert_booked_unhalted(engine, result) -> None:
    """The cycle halted nothing and booked the resting entry's fill to its strategy."""
    assert not result.halted and halted(engine) == (False, None), result.notes
    with session_scope(engine) as session:
        trade = session.query(db.Trade).filter(db.Trade.qty == 5.0).one()
        assert (trade.strategy, trade.symbol) == ("swing", "AAPL")


def test_what_the_broker_filled_since_the_last_cycle_is_booked_to_its_strategy_before_reconciling(traded) -> None:
    from lab.trading.cycle import run_trading_cycle
    from tests.fakes.trading import FixedPredictions

    engine, broker, fake = traded
    order = _resting_entry(engine, broker, fake)
    fake.fill(next(i for i, o in fake.orders.items() if o["client_order_id"] == order.client_order_id))  # filled since
    result = run_trading_cycle(_ctx(engine), NOW, portfolio="alpaca", predictions=FixedPredictions(0.9),
                               broker=broker)
    _assert_booked_unhalted(engine, result)
    assert reconcile(engine, broker, "alpaca").ok


def test_a_fill_that_lands_between_the_cycles_sync_and_its_reconciliation_is_booked_not_a_halt(traded) -> None:
    """The broker keeps trading while a cycle runs: a difference that a second sync explains
    is no evidence against the books; only one that persists halts."""
    from lab.trading.cycle import run_trading_cycle
    from tests.fakes.trading import FixedPredictions

    engine, broker, fake = traded
    order = _resting_entry(engine, broker, fake)
    fake.before_next("GET", "/v2/positions", lambda: fake.fill(order.broker_order_id))  # fills as reconcile reads
    result = run_trading_cycle(_ctx(engine), NOW, portfolio="alpaca", predictions=FixedPredictions(0.9),
                               broker=broker)
    _assert_booked_unhalted(engine, result)


def test_a_drawdown_halt_that_a_cycles_last_fills_start_holds_for_the_next_cycle(engine, tmp_path, monkeypatch) -> None:
    """Fills booked at a cycle's end (a real broker fills while the cycle runs) can take the
    account past the drawdown limit: the halt is kept, not only reported."""
    import pandas as pd
    from sqlalchemy import insert

    from lab.trading.cycle import run_trading_cycle
    from tests.fakes.trading import STOCKS, FixedPredictions, make_bars, sessions, write_config
    from universe.calendars import xnys

    monkeypatch.setenv("LAB_CONFIG", str(write_config(
        tmp_path / "trading.json", universe={"stocks": {"symbols": STOCKS, "benchmark": "AAPL"}},
        strategies={"momentum": {"asset_classes": ["stocks"], "min_confidence": 0.6, "max_positions": 3,
                                 "params": {"top_quantile": 0.5, "min_volume_ratio": 0.5}}})))
    labels = pd.DatetimeIndex(xnys().sessions_in_range("2022-01-01", "2025-01-06")).tz_localize("UTC")
    rows, quotes = [], {}
    for i, symbol in enumerate(STOCKS):  # the test world's bars, moved to end on the fake's today
        bars = make_bars(sessions("stocks", "2022-01-01", "2023-12-29"), seed=i, start_price=100.0 * (i + 1))
        bars = bars.loc[:"2023-03-01"]
        bars.index = labels[-len(bars):]
        quotes[symbol] = f"{bars['close'].iloc[-1] * 1.03:.2f}"  # the entries fill 3% above the last close
        rows += [{"asset_type": "stocks", "symbol": symbol, "interval": "1d", "ts": ts.to_pydatetime(),
                  "source": "test", **{k: float(v) for k, v in r.items()}} for ts, r in bars.iterrows()]
    with engine.begin() as conn:
        conn.execute(insert(db.PriceBar), rows)
    with session_scope(engine) as session:  # 19.99% below its peak before the cycle
        session.add(db.Account(portfolio="alpaca", initial_cash=100_000, cash=100_000, peak_equity=124_990))
    with FakeAlpaca(cash="100000", quotes=quotes) as fake:
        fake._match = lambda order: None  # market orders rest until the hook fills them, as the cycle runs

        def fill_entries(stage: str) -> None:
            if stage == "entries_placed":
                for order in fake.orders_open():
                    fake.fill(order["id"])

        broker = AlpacaBroker(SecretStr(KEY_ID), SecretStr(SECRET_KEY), base_url=fake.url, portfolio="alpaca",
                              policy=RetryPolicy(attempts=2, backoff_s=0.001))
        result = run_trading_cycle(_ctx(engine), NOW, portfolio="alpaca", predictions=FixedPredictions(),
                                   broker=broker, hook=fill_entries)
    assert result.fills > 0 and result.halted
    assert halted(engine)[0] and "drawdown" in halted(engine)[1]


def test_a_real_brokers_unfinished_cycle_blocks_the_next_until_it_can_no_longer_resume_then_is_abandoned(traded):
    """Near the broker's present, re-running the failed cycle resumes it, so a later one waits;
    once the present has moved on it never can, and the next cycle records it abandoned."""
    from datetime import timedelta

    from lab.errors import TradingError
    from lab.trading.cycle import run_trading_cycle
    from tests.fakes.trading import FixedPredictions

    def crash(stage: str) -> None:
        if stage == "claimed":
            raise RuntimeError("killed mid-way")

    engine, broker, fake = traded
    with pytest.raises(RuntimeError):
        run_trading_cycle(_ctx(engine), NOW, portfolio="alpaca", predictions=FixedPredictions(0.9), broker=broker,
                          hook=crash)
    with pytest.raises(TradingError, match=r"unfinished cycle at 2025-01-06T15:00:00\+00:00"):
        run_trading_cycle(_ctx(engine), NOW + timedelta(minutes=5), portfolio="alpaca",
                          predictions=FixedPredictions(0.9), broker=broker)
    fake.now = "2025-01-07T10:00:00.000000-05:00"
    next_day = NOW + timedelta(days=1)
    assert not run_trading_cycle(_ctx(engine), next_day, portfolio="alpaca", predictions=FixedPredictions(0.9),
                                 broker=broker).already_completed
    with session_scope(engine) as session:
        cycles = session.query(db.TradingCycle.as_of, db.TradingCycle.status).order_by(db.TradingCycle.as_of).all()
    assert cycles == [(NOW, "abandoned"), (next_day, "completed")]
