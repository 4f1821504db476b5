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
from lab.db import connect, session_scope
from lab.db import models as db
from lab.errors import TradingError
from lab.trading import killswitch
from lab.trading.brokers._http import RetryPolicy
from lab.trading.brokers.alpaca import AlpacaBroker
from lab.trading.model import Intent, Order, OrderStatus, OrderType, Side, client_order_id
from lab.trading.store import store_order
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


def test_engaging_cancels_the_open_orders_at_the_broker_and_in_the_books(engine) -> None:
    with FakeAlpaca() as fake:
        broker = AlpacaBroker(SecretStr(KEY_ID), SecretStr(SECRET_KEY), base_url=fake.url,
                              policy=RetryPolicy(backoff_s=0.001))
        resting = Order(client_order_id=client_order_id("alpaca", NOW, "swing", "AAPL", Intent.ENTRY),
                        portfolio="alpaca", strategy="swing", symbol="AAPL", asset_type="stocks", side=Side.BUY,
                        qty=5, order_type=OrderType.LIMIT, limit_price=90.0, created_at=NOW)
        store_order(engine, broker.submit(resting), broker="alpaca")

        cancelled = killswitch.engage(engine, "alpaca", "operator stop", broker=broker)

        assert [o.status for o in cancelled] == [OrderStatus.CANCELLED]
        assert broker.open_orders() == [] and killswitch.is_killed(engine, "alpaca")
    with session_scope(engine) as session:
        row = session.scalar(select(db.Order).where(db.Order.client_order_id == resting.client_order_id))
    assert (row.status, row.reason) == ("cancelled", "kill switch: operator stop")


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
