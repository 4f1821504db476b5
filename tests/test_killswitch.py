"""The kill switch: a DB flag that stops submission at once and cancels open broker orders."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from typer.testing import CliRunner

from lab.cli.main import app
from lab.config import load_config
from lab.db import connect, session_scope
from lab.db import models as db
from lab.errors import TradingError
from lab.trading import killswitch
from lab.trading.brokers._http import RetryPolicy
from lab.trading.brokers.alpaca import AlpacaBroker
from lab.trading.model import Intent, Order, OrderStatus, OrderType, Side, client_order_id
from lab.trading.reconcile import reconcile
from lab.trading.step import StepResult, sync
from lab.trading.store import SqlBookkeeper, load_books, sole_writer, store_order
from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca
from tests.fakes.broker_http import Reply

NOW = datetime(2025, 1, 6, 15, 0, tzinfo=UTC)
CONFIG = Path(__file__).resolve().parents[1] / "config" / "trading.json"


@pytest.fixture
def cli(tmp_path, monkeypatch, sqlite_url):
    """The CLI on its own database, configured to trade at Alpaca, without its keys; returns
    the database's engine."""
    raw = json.loads(CONFIG.read_text())
    raw["execution"]["broker"] = "alpaca"
    (tmp_path / "trading.json").write_text(json.dumps(raw))
    for name, value in (("LAB_CONFIG", str(tmp_path / "trading.json")), ("LAB_DATABASE_URL", sqlite_url),
                        ("COLUMNS", "200")):
        monkeypatch.setenv(name, value)
    for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    return connect(sqlite_url)


def test_it_is_off_until_engaged_and_stays_on_until_released(engine) -> None:
    assert not killswitch.is_killed(engine, "alpaca")
    killswitch.engage(engine, "alpaca", "runaway strategy")
    assert killswitch.is_killed(engine, "alpaca") and not killswitch.is_killed(engine, "binance")
    assert killswitch.switches(engine) == [("alpaca", True, ("alpaca",), "runaway strategy", False, None)]
    assert killswitch.release(engine, "alpaca") is False  # nothing else holds it
    assert not killswitch.is_killed(engine, "alpaca")


@pytest.mark.parametrize("switch", [lambda engine, name: killswitch.engage(engine, name, "market halt"),
                                    killswitch.release])
def test_a_switch_for_a_name_no_portfolio_can_have_is_refused(engine, switch) -> None:
    with pytest.raises(TradingError, match="portfolio name 'xxxx.*': expected 1 to 64 characters"):
        switch(engine, "x" * 65)
    with pytest.raises(TradingError, match="portfolio name ' paper': expected 1 to 64 characters"):
        switch(engine, " paper")
    assert killswitch.switches(engine) == []


def test_the_status_lists_every_trading_account_set_or_not_and_no_stored_backtest(engine) -> None:
    with session_scope(engine) as session:
        session.add_all([db.Account(portfolio=name, initial_cash=1e5, cash=1e5, peak_equity=1e5)
                         for name in ("paper", "swing-desk", "backtest:1a2b3c4d5e6f")])
    killswitch.engage(engine, "swing-desk", "reconciling")
    assert killswitch.switches(engine) == [("paper", False, (), None, False, None),
                                           ("swing-desk", True, ("swing-desk",), "reconciling", False, None)]


def test_releasing_one_account_under_the_switch_for_all_says_it_stays_stopped(engine) -> None:
    killswitch.engage(engine, killswitch.ALL, "market halt")
    killswitch.engage(engine, "alpaca", "runaway strategy")
    assert killswitch.release(engine, "alpaca") is True
    assert killswitch.is_killed(engine, "alpaca")


def test_the_global_switch_stops_every_account(engine) -> None:
    killswitch.engage(engine, killswitch.ALL, "market halt")
    assert killswitch.is_killed(engine, "alpaca") and killswitch.is_killed(engine, "paper")


def test_the_status_shows_each_account_stopped_by_the_global_switch_and_which_switches_hold_it(engine) -> None:
    with session_scope(engine) as session:
        session.add_all([db.Account(portfolio=name, initial_cash=1e5, cash=1e5, peak_equity=1e5)
                         for name in ("paper", "swing-desk")])
    killswitch.engage(engine, "swing-desk", "reconciling")
    killswitch.engage(engine, killswitch.ALL, "market halt")
    assert killswitch.switches(engine) == [("*", True, ("*",), "market halt", False, None),
                                           ("paper", True, ("*",), "market halt", False, None),
                                           ("swing-desk", True, ("swing-desk", "*"), "reconciling; market halt",
                                            False, None)]


def test_engaging_needs_a_reason(engine) -> None:
    with pytest.raises(TradingError, match=r"the kill switch needs a reason \(--reason\)"):
        killswitch.engage(engine, "alpaca", "  ")
    assert not killswitch.is_killed(engine, "alpaca")


def resting(portfolio: str, symbol: str = "AAPL", client_id: str | None = None) -> Order:
    """A buy limit below the fake's quote: it rests open at the broker."""
    return Order(client_order_id=client_id or client_order_id(portfolio, NOW, "swing", symbol, Intent.ENTRY),
                 portfolio=portfolio, strategy="swing", symbol=symbol, asset_type="stocks", side=Side.BUY,
                 qty=5, order_type=OrderType.LIMIT, limit_price=90.0, created_at=NOW)


def alpaca(fake: FakeAlpaca) -> AlpacaBroker:
    return AlpacaBroker(SecretStr(KEY_ID), SecretStr(SECRET_KEY), base_url=fake.url, policy=RetryPolicy(backoff_s=0.001))


def switch_on(engine, portfolio: str, reason: str, broker: AlpacaBroker) -> killswitch.Cancellation:
    """The switch as `lab kill-switch on` engages it: stored, then the open orders cancelled."""
    killswitch.engage(engine, portfolio, reason)
    return killswitch.cancel_open_orders(engine, load_config(CONFIG), broker, portfolio, reason)


def stored(engine, client_id: str) -> tuple[str, str, str | None] | None:
    with session_scope(engine) as session:
        row = session.scalar(select(db.Order).where(db.Order.client_order_id == client_id))
        return None if row is None else (row.portfolio, row.status, row.reason)


@pytest.fixture
def shared_account(engine):
    """One Alpaca account traded by two portfolios, each order in the lab's journal, and one
    order placed at the broker outside the lab; yields the broker and the three orders."""
    with FakeAlpaca() as fake:
        broker = alpaca(fake)
        mine, theirs = resting("swing-desk"), resting("momo-desk", "MSFT")
        for order in (mine, theirs):
            store_order(engine, broker.submit(order), broker="alpaca")
        outside = broker.submit(resting("alpaca", client_id="manual-by-hand-1"))
        yield broker, mine, theirs, outside


def test_engaging_cancels_the_open_orders_at_the_broker_and_in_the_books(engine) -> None:
    with FakeAlpaca() as fake:
        broker = alpaca(fake)
        order = resting("alpaca")
        store_order(engine, broker.submit(order), broker="alpaca")

        outcome = switch_on(engine, "alpaca", "operator stop", broker)

        assert [o.status for o in outcome.cancelled] == [OrderStatus.CANCELLED] and outcome.unknown == []
        assert broker.open_orders() == [] and killswitch.is_killed(engine, "alpaca")
    assert stored(engine, order.client_order_id) == ("alpaca", "cancelled", "kill switch: operator stop")


def test_one_portfolios_switch_cancels_only_its_own_orders_at_a_shared_account_and_names_the_unknown(
        engine, shared_account) -> None:
    broker, mine, theirs, outside = shared_account

    outcome = switch_on(engine, "swing-desk", "runaway strategy", broker)

    assert [o.client_order_id for o in outcome.cancelled] == [mine.client_order_id]
    assert [o.client_order_id for o in outcome.unknown] == [outside.client_order_id]
    assert {o.client_order_id for o in broker.open_orders()} == {theirs.client_order_id, outside.client_order_id}
    assert stored(engine, mine.client_order_id) == ("swing-desk", "cancelled", "kill switch: runaway strategy")
    assert stored(engine, theirs.client_order_id) == ("momo-desk", "pending", None)
    assert stored(engine, outside.client_order_id) is None  # left alone, not taken into any portfolio's books


def test_the_fills_of_an_order_it_cancelled_are_booked_with_its_status(engine) -> None:
    config = load_config(CONFIG)
    with FakeAlpaca(cash=str(config.execution.initial_cash)) as fake:
        broker = alpaca(fake)
        load_books(engine, config, "alpaca")  # the account as its first cycle opened it
        placed = broker.submit(resting("alpaca"))
        store_order(engine, placed, broker="alpaca")
        fake.fill(placed.broker_order_id, "2")  # 2 of 5 filled at the broker since the last cycle

        outcome = switch_on(engine, "alpaca", "runaway strategy", broker)

        assert [(o.status, o.filled_qty) for o in outcome.cancelled] == [(OrderStatus.CANCELLED, 2)]
        assert reconcile(engine, broker, "alpaca").ok  # the books hold the 2 the broker does
    with session_scope(engine) as session:
        assert [(t.symbol, t.qty) for t in session.scalars(select(db.Trade))] == [("AAPL", 2)]
        row = session.scalar(select(db.Order))
        assert (row.status, row.filled_qty, row.reason) == ("cancelled", 2, "kill switch: runaway strategy")


def test_orders_of_books_a_cycle_holds_are_cancelled_and_left_to_its_sync_to_record(engine) -> None:
    config = load_config(CONFIG)
    with FakeAlpaca(cash=str(config.execution.initial_cash)) as fake:
        broker = alpaca(fake)
        books = load_books(engine, config, "alpaca")
        placed = broker.submit(resting("alpaca"))
        store_order(engine, placed, broker="alpaca")
        fake.fill(placed.broker_order_id, "2")
        with sole_writer(engine, "alpaca", what="a cycle"):
            outcome = switch_on(engine, "alpaca", "runaway strategy", broker)
            assert stored(engine, placed.client_order_id) == ("alpaca", "pending", None)  # not the switch's to write
            journal = SqlBookkeeper(engine, books, broker.name)
            sync(broker, journal, journal.open_orders(), StepResult())  # the cycle's next sync

        assert [o.client_order_id for o in outcome.cancelled] == [placed.client_order_id] and fake.orders_open() == []
        assert reconcile(engine, broker, "alpaca").ok
    assert stored(engine, placed.client_order_id)[1] == "cancelled"


def test_the_switch_for_every_account_cancels_every_open_order_journaled_or_not(engine, shared_account) -> None:
    broker, mine, theirs, outside = shared_account

    outcome = switch_on(engine, killswitch.ALL, "market halt", broker)

    assert {o.client_order_id for o in outcome.cancelled} == {mine.client_order_id, theirs.client_order_id,
                                                                outside.client_order_id}
    assert outcome.unknown == [] and broker.open_orders() == []
    assert stored(engine, theirs.client_order_id) == ("momo-desk", "cancelled", "kill switch: market halt")


def test_the_cli_switch_for_one_portfolio_names_the_orders_it_left_open_at_the_broker(cli, monkeypatch) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", KEY_ID)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    with FakeAlpaca() as fake:
        broker = alpaca(fake)
        mine, theirs = resting("swing-desk"), resting("momo-desk", "MSFT")
        for order in (mine, theirs):
            store_order(cli, broker.submit(order), broker="alpaca")
        broker.submit(resting("alpaca", client_id="manual-by-hand-1"))
        result = CliRunner().invoke(app, ["kill-switch", "on", "--reason", "runaway", "--portfolio", "swing-desk",
                                          "--base-url", fake.url])
        assert {o["client_order_id"] for o in fake.orders_open()} == {theirs.client_order_id, "manual-by-hand-1"}
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "cancelled 1 open order of swing-desk at alpaca" in result.output
    assert "left open at alpaca, in no portfolio's journal: manual-by-hand-1 (buy 5 AAPL limit)" in result.output


def test_the_switch_engages_even_when_the_broker_cannot_be_opened_and_says_the_orders_were_not_cancelled(cli):
    result = CliRunner().invoke(app, ["kill-switch", "on", "--reason", "runaway", "--portfolio", "alpaca"])
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert killswitch.is_killed(cli, "alpaca")
    assert "kill switch ON for alpaca: runaway" in result.output
    assert "open orders at alpaca were NOT cancelled" in result.output and "APCA_API_KEY_ID" in result.output


def test_the_switch_engages_the_same_way_when_the_broker_refuses_to_list_its_orders(cli, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", KEY_ID)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    with FakeAlpaca() as fake:
        fake.fail_next("GET", "/v2/orders", Reply(401, {"code": 40110000, "message": "request is not authorized"}))
        result = CliRunner().invoke(app, ["kill-switch", "on", "--reason", "runaway", "--portfolio", "alpaca",
                                          "--base-url", fake.url])
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert killswitch.is_killed(cli, "alpaca")
    assert "kill switch ON for alpaca: runaway" in result.output
    assert "open orders at alpaca were NOT cancelled" in result.output and "not authorized" in result.output


def test_releasing_the_global_switch_leaves_each_accounts_own_switch_on_and_lists_how_to_release_it(cli):
    killswitch.engage(cli, "demo-stocks", "bad fills")
    killswitch.engage(cli, killswitch.ALL, "market halt")
    result = CliRunner().invoke(app, ["kill-switch", "off"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert not killswitch.is_killed(cli, "paper") and killswitch.is_killed(cli, "demo-stocks")
    assert "kill switch off for * (every account)" in result.output
    assert "still ON by its own switch: demo-stocks (bad fills)" in result.output
    assert "lab kill-switch off --portfolio demo-stocks" in result.output
