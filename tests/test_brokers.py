"""Both real brokers: paper by default, live only by config AND --live, keys never leak,
and the CLI (``lab broker status``, ``lab kill-switch``) against the fakes."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select
from typer.testing import CliRunner

from lab.cli.main import app
from lab.config import load_config
from lab.db import connect
from lab.errors import ConfigError
from lab.settings import get_settings
from lab.trading import killswitch
from lab.trading.brokers import alpaca, binance, open_real_broker
from lab.trading.brokers._http import BrokerError, RetryPolicy
from lab.trading.model import Intent, Order, OrderType, Side, client_order_id
from lab.trading.pretrade import record_rejection
from lab.trading.reconcile import reconcile
from lab.trading.store import store_order
from tests.fakes import alpaca as fake_alpaca
from tests.fakes import binance_trading as fake_binance
from tests.fakes.broker_http import Reply

NOW = datetime(2025, 1, 6, 15, 0, tzinfo=UTC)
SECRETS = [fake_alpaca.KEY_ID, fake_alpaca.SECRET_KEY, fake_binance.API_KEY, fake_binance.API_SECRET]
BASE_CONFIG = json.loads((Path(__file__).resolve().parents[1] / "config" / "trading.json").read_text())


@pytest.fixture
def keys(monkeypatch):
    for name, value in zip(["APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "BINANCE_API_KEY", "BINANCE_API_SECRET"],
                           SECRETS, strict=True):
        monkeypatch.setenv(name, value)


def config(tmp_path: Path, monkeypatch, **execution):
    raw = {**BASE_CONFIG, "execution": {**BASE_CONFIG["execution"], **execution}}
    path = tmp_path / "trading.json"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv("LAB_CONFIG", str(path))
    return load_config(path)


@pytest.mark.parametrize("name", ["alpaca", "binance"])
def test_the_default_is_the_paper_account(tmp_path, monkeypatch, keys, name) -> None:
    broker = open_real_broker(get_settings(), config(tmp_path, monkeypatch, broker=name))
    assert broker.base_url == {"alpaca": alpaca.PAPER_URL, "binance": binance.TESTNET_URL}[name]


def test_the_live_config_flag_alone_still_trades_paper(tmp_path, monkeypatch, keys) -> None:
    broker = open_real_broker(get_settings(), config(tmp_path, monkeypatch, broker="alpaca", live=True))
    assert broker.base_url == alpaca.PAPER_URL


def test_live_needs_both_the_config_flag_and_the_switch(tmp_path, monkeypatch, keys) -> None:
    cfg = config(tmp_path, monkeypatch, broker="binance", live=True)
    assert open_real_broker(get_settings(), cfg, live=True).base_url == binance.LIVE_URL


def test_the_switch_without_the_config_flag_is_an_error(tmp_path, monkeypatch, keys) -> None:
    with pytest.raises(ConfigError, match="--live was given but the config does not set execution.live: true"):
        open_real_broker(get_settings(), config(tmp_path, monkeypatch, broker="alpaca"), live=True)


def test_a_cycle_refused_the_live_switch_has_stored_nothing(tmp_path, monkeypatch, keys, engine) -> None:
    from lab.db.models import TradingCycle
    from lab.runtime import LabContext
    from lab.trading.cycle import run_trading_cycle
    from tests.fakes.trading import FixedPredictions

    config(tmp_path, monkeypatch, broker="alpaca")
    with pytest.raises(ConfigError, match="--live was given but the config does not set execution.live: true"):
        run_trading_cycle(LabContext(settings=get_settings(), engine=engine), NOW, predictions=FixedPredictions(),
                          live=True)
    with engine.connect() as conn:
        assert conn.execute(select(TradingCycle)).all() == []


def test_a_live_base_url_cannot_sneak_past_the_switch(tmp_path, monkeypatch, keys) -> None:
    with pytest.raises(ConfigError, match="needs execution.live: true and the --live switch"):
        open_real_broker(get_settings(), config(tmp_path, monkeypatch, broker="alpaca"), base_url=alpaca.LIVE_URL)


@pytest.mark.parametrize(("name", "variables"), [("alpaca", "APCA_API_KEY_ID and APCA_API_SECRET_KEY"),
                                                  ("binance", "BINANCE_API_KEY and BINANCE_API_SECRET")])
def test_missing_keys_name_the_environment_variables(tmp_path, monkeypatch, name, variables) -> None:
    for var in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "BINANCE_API_KEY", "BINANCE_API_SECRET"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match=variables):
        open_real_broker(get_settings(), config(tmp_path, monkeypatch, broker=name))


def test_cli_broker_status_and_kill_switch_against_the_fake(tmp_path, monkeypatch, keys, sqlite_url) -> None:
    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    config(tmp_path, monkeypatch, broker="alpaca")
    runner = CliRunner()
    with fake_alpaca.FakeAlpaca() as fake:
        broker = alpaca.AlpacaBroker(get_settings().alpaca_api_key_id, get_settings().alpaca_api_secret_key,
                                     base_url=fake.url)
        store_order(connect(sqlite_url), broker.submit(Order(
            client_order_id="lab-resting", portfolio="alpaca", strategy="swing", symbol="MSFT", asset_type="stocks",
            side=Side.BUY, qty=2, order_type=OrderType.LIMIT, limit_price=150.0, created_at=NOW)), broker="alpaca")
        status = runner.invoke(app, ["broker", "status", "--base-url", fake.url])
        assert status.exit_code == 0, status.output
        assert "cash 100,000.00" in status.output and "lab-resting" in status.output

        on = runner.invoke(app, ["kill-switch", "on", "--reason", "drill", "--portfolio", "alpaca",
                                 "--base-url", fake.url])
        assert on.exit_code == 0, on.output
        assert "cancelled 1 open order of alpaca at alpaca" in on.output and fake.orders_open() == []
    shown = runner.invoke(app, ["kill-switch", "status"])
    assert "ON" in shown.output and "drill" in shown.output
    assert runner.invoke(app, ["kill-switch", "off", "--portfolio", "alpaca"]).exit_code == 0
    assert "off" in runner.invoke(app, ["kill-switch", "status"]).output


def test_keys_never_reach_logs_errors_or_the_database(engine, keys, caplog, tmp_path, monkeypatch) -> None:
    """A session with successes, rejections, retries, a timeout, auth failures, a halt and
    the kill switch, with every logger at DEBUG; then scan everything the lab produced."""
    caplog.set_level(logging.DEBUG)
    settings = get_settings()
    texts: list[str] = []
    policy = RetryPolicy(attempts=3, backoff_s=0.001, timeout_s=1.5)
    with fake_alpaca.FakeAlpaca() as fa, fake_binance.FakeBinance() as fb:
        brokers = [alpaca.AlpacaBroker(settings.alpaca_api_key_id, settings.alpaca_api_secret_key,
                                       base_url=fa.url, policy=policy, sleep=lambda s: None),
                   binance.BinanceBroker(settings.binance_api_key, settings.binance_api_secret, base_url=fb.url,
                                         policy=policy, sleep=lambda s: None)]
        fa.fail_next("POST", "/v2/orders", Reply(503, {"code": 50010000, "message": "internal server error"}))
        fb.slow_next("POST", "/api/v3/order", delay_s=3.0)
        fb.clock_offset_ms = 8_000
        for broker, symbol, asset, qty in ((brokers[0], "AAPL", "stocks", 10), (brokers[1], "BTC", "crypto", 0.01)):
            texts.append(repr(broker))
            base = Order(client_order_id=client_order_id(broker.name, NOW, "momentum", symbol, Intent.ENTRY),
                         portfolio=broker.name, strategy="momentum", symbol=symbol, asset_type=asset,
                         side=Side.BUY, qty=qty, created_at=NOW)
            for order in (base, base.evolve(client_order_id=base.client_order_id[:-1] + "x", qty=1e6)):
                result = broker.submit(order)
                store_order(engine, result, broker=broker.name)
                texts.append(repr(result))
            record_rejection(engine, base.evolve(client_order_id="lab-pretrade", symbol="TSLA"),
                             "symbol TSLA is not in the universe allow-list", broker=broker.name)
            texts.append(repr(reconcile(engine, broker, broker.name)))  # no books: halts with a reason
            killswitch.engage(engine, broker.name, "secret scan")
            killswitch.cancel_open_orders(engine, config(tmp_path, monkeypatch), broker, broker.name, "secret scan")
        for fault in (Reply(401, {"code": 40110000, "message": "request is not authorized"}),
                      Reply(503, {"code": 50010000, "message": "down"})):
            fa.fail_next("GET", "/v2/account", fault, times=3)
            with pytest.raises(BrokerError) as info:
                brokers[0].account()
            texts += [str(info.value), repr(info.value)]
        fb.fail_next("GET", "/api/v3/account", Reply(401, {"code": -2015, "msg": "Invalid API-key"}))
        with pytest.raises(BrokerError) as info:
            brokers[1].account()
        texts += [str(info.value), repr(info.value)]
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            texts += [repr(tuple(row)) for row in conn.execute(select(table))]
    everything = "\n".join(texts)
    assert "reconciliation mismatch" in everything and "insufficient" in everything  # the scan saw real output
    for secret in SECRETS:
        assert secret not in everything
