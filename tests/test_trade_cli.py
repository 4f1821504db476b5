"""``lab trade cycle`` and ``lab portfolio`` from the command line, on the registry's active models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from lab.cli.main import app
from lab.db import connect
from lab.db.models import Account, Position, TradingCycle
from lab.registry import ModelRegistry
from lab.trading.store import set_halt, sole_writer
from tests.fakes.trading import seed_bars, write_config
from tests.test_serving import MOMENTUM_PAYOFF, _train


@pytest.fixture
def lab(sqlite_url: str, tmp_path: Path, lab_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("COLUMNS", "200")  # one line per message
    monkeypatch.setenv("LAB_CONFIG", str(write_config(tmp_path / "trading.json")))
    engine = connect(sqlite_url)
    seed_bars(engine)
    registry = ModelRegistry(engine, lab_home / "models")
    registry.activate(registry.save_version("trading", "momentum", _train(tmp_path / "m.ubj", "momentum", 0),
                                            metrics={"payoff": MOMENTUM_PAYOFF}).id)


def test_a_cycle_says_how_far_each_strategy_got_and_why_one_was_skipped(lab) -> None:
    result = CliRunner().invoke(app, ["trade", "cycle", "--as-of", "2023-03-01", "--in-process"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "cycle 2023-03-01T00:00:00+00:00 completed" in result.output
    assert "momentum: 4 screened, " in result.output
    assert "min confidence 0.60, risk/reward and positive EV (best " in result.output
    assert "breakout" in result.output and "no active model" in result.output
    assert "cash 100,000.00" in CliRunner().invoke(app, ["portfolio"]).output


def test_a_cycle_before_the_latest_is_refused_by_name(lab) -> None:
    assert CliRunner().invoke(app, ["trade", "cycle", "--as-of", "2023-03-02", "--in-process"]).exit_code == 0
    earlier = CliRunner().invoke(app, ["trade", "cycle", "--as-of", "2023-03-01", "--in-process"])
    assert earlier.exit_code != 0
    assert "already ran a cycle at 2023-03-02" in earlier.output + str(earlier.exception)


@pytest.mark.parametrize(("args", "message"), [
    (["--as-of", "garbage"], "as_of 'garbage': expected an ISO date or time such as 2024-03-01"),
    (["--as-of", "2023-13-01"], "as_of '2023-13-01': expected an ISO date or time"),
    (["--as-of", "2023-03-01", "--portfolio", ""], "portfolio name '': expected 1 to 64 characters"),
    (["--as-of", "2023-03-01", "--portfolio", "x" * 65], "expected 1 to 64 characters"),
    (["--as-of", "2023-03-01", "--live"], "--live trades real money at a real broker, but execution.broker is 'paper'"),
])
def test_a_bad_decision_time_portfolio_name_or_live_switch_is_refused_by_name(lab, args, message) -> None:
    result = CliRunner().invoke(app, ["trade", "cycle", "--in-process", *args])
    assert result.exit_code != 0 and message in str(result.exception)
    with connect(os.environ["LAB_DATABASE_URL"]).connect() as conn:  # nothing started
        assert conn.scalar(select(func.count()).select_from(TradingCycle)) == 0


def test_an_unknown_portfolio_is_named_and_not_opened(lab) -> None:
    CliRunner().invoke(app, ["trade", "cycle", "--as-of", "2023-03-01", "--in-process"])
    result = CliRunner().invoke(app, ["portfolio", "--portfolio", "nosuch"])
    assert result.exit_code != 0 and "no portfolio 'nosuch'; portfolios: paper" in str(result.exception)
    assert "no portfolio 'nosuch'" in str(CliRunner().invoke(app, ["portfolio", "--portfolio", "nosuch"]).exception)


def test_lifting_a_halt_resumes_entries_and_restarts_the_peak(lab) -> None:
    assert CliRunner().invoke(app, ["trade", "cycle", "--as-of", "2023-03-01", "--in-process"]).exit_code == 0
    engine = connect(os.environ["LAB_DATABASE_URL"])
    set_halt(engine, "paper", True, "drawdown 21.0% from peak 100,000.00 reached the 20% limit")
    halted = CliRunner().invoke(app, ["trade", "cycle", "--as-of", "2023-03-02", "--in-process"])
    assert "[HALTED]" in halted.output and "no new entries: drawdown 21.0%" in halted.output
    lifted = CliRunner().invoke(app, ["trade", "lift-halt"])
    assert lifted.exit_code == 0, lifted.output + repr(lifted.exception)
    assert "halt lifted on 'paper' (it was: drawdown 21.0% from peak 100,000.00 reached the 20% limit)" \
        in lifted.output
    with engine.connect() as conn:
        account = conn.execute(select(Account).where(Account.portfolio == "paper")).one()
        positions = conn.execute(select(Position.qty, Position.last_price).where(Position.portfolio == "paper")).all()
    assert account.peak_equity == pytest.approx(account.cash + sum(q * p for q, p in positions), rel=1e-12)
    resumed = CliRunner().invoke(app, ["trade", "cycle", "--as-of", "2023-03-03", "--in-process"])
    assert resumed.exit_code == 0 and "HALTED" not in resumed.output and "no new entries" not in resumed.output


@pytest.mark.parametrize(("portfolio", "message"), [
    ("paper", "portfolio 'paper' is not halted: nothing to lift"),
    ("nope", "no portfolio 'nope'; portfolios: paper"),
])
def test_lifting_a_halt_that_is_not_there_is_refused_by_name(lab, portfolio, message) -> None:
    assert CliRunner().invoke(app, ["trade", "cycle", "--as-of", "2023-03-01", "--in-process"]).exit_code == 0
    result = CliRunner().invoke(app, ["trade", "lift-halt", "--portfolio", portfolio])
    assert result.exit_code != 0 and message in str(result.exception)


def test_a_halt_is_not_lifted_while_a_cycle_holds_the_books(lab) -> None:
    assert CliRunner().invoke(app, ["trade", "cycle", "--as-of", "2023-03-01", "--in-process"]).exit_code == 0
    engine = connect(os.environ["LAB_DATABASE_URL"])
    set_halt(engine, "paper", True, "drawdown 21.0% from peak")
    with sole_writer(engine, "paper", what="the cycle"):
        result = CliRunner().invoke(app, ["trade", "lift-halt"])
    assert "portfolio 'paper' is busy" in str(result.exception) and "lifting its halt was not started" \
        in str(result.exception)
    assert "yes" in CliRunner().invoke(app, ["kill-switch", "status"]).output  # still halted


def test_a_cycle_without_a_running_prediction_service_names_its_url_and_the_ways_to_get_predictions(
        lab, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("LAB_SERVE_URL", url)
    result = CliRunner().invoke(app, ["trade", "cycle", "--as-of", "2023-03-01"])
    said = " ".join((result.output + str(result.exception)).split())

    assert result.exit_code != 0 and "answered 0" not in said
    assert f"could not reach the prediction service at {url}" in said
    assert "start it with `lab serve`, predict in this process with --in-process, or point LAB_SERVE_URL at a " \
           "running one" in said
