"""Settings from the command line: `lab backtest --set` for one run, `--sweep` for a grid
that is checked point by point before anything runs, fanned out on Ray, stored run by run,
and whose best is judged against the number tried."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lab.backtest import BacktestSpec, list_backtests, load_result
from lab.backtest.spec import folder_name, setting_names
from lab.backtest.sweep import SweepPoint, compare, expand_grid
from lab.cli.main import app
from lab.config import load_config
from lab.db import connect
from lab.errors import ConfigError, LabError
from lab.models.scoring import deflated_sharpe_ratio, sharpe_ratio
from lab.performance import returns_of
from tests.test_backtest import CONFIG, SYMBOLS, _adjusted, _store_bars
from tests.test_flows import _artifacts, _read

QUANTILE = "strategies.momentum.params.top_quantile"
PERIOD = ["-s", "momentum", "--start", "2019-01-01", "--end", "2019-03-29", "--window-days", "91",
          *(a for s in SYMBOLS for a in ("--symbol", s)), "--benchmark", "AAPL"]


def _lab_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> str:
    """A lab home with the test bars and a config that lets momentum trade on them."""
    raw = json.loads(CONFIG.read_text())
    raw["strategies"]["momentum"].update(min_confidence=0.5, max_positions=3)
    raw["sizing"].update(method="percent", percent_of_equity=0.2)
    raw["universe"]["stocks"] = {"symbols": SYMBOLS, "benchmark": "AAPL"}
    config = home / "trading.json"
    config.write_text(json.dumps(raw))
    url = f"sqlite:///{home / 'lab.db'}"
    monkeypatch.setenv("LAB_HOME", str(home))
    monkeypatch.setenv("LAB_DATABASE_URL", url)
    monkeypatch.setenv("LAB_CONFIG", str(config))
    return url


@pytest.fixture(scope="module")
def swept(ray_session, shared_data, tmp_path_factory):
    """One two-point sweep through the CLI: its output and database."""
    home = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        url = _lab_env(mp, home)
        mp.setenv("COLUMNS", "200")  # one line per table row
        engine = connect(url)
        _store_bars(engine, shared_data)
        outcome = CliRunner().invoke(app, ["backtest", *PERIOD, "--set", "execution.slippage_bps=2",
                                           "--sweep", f"{QUANTILE}=0.5,0.9", "--export", str(home / "export")])
    assert outcome.exit_code == 0, outcome.output
    return outcome.output, engine, url


def test_every_grid_point_is_stored_as_its_own_run_with_the_fixed_settings(swept):
    _, engine, _ = swept
    stored = list_backtests(engine)
    assert len({b["portfolio"] for b in stored}) == 2
    overrides = [load_result(engine, b["id"]).config["config_overrides"] for b in stored]
    assert [o["strategies"]["momentum"]["params"]["top_quantile"] for o in overrides] == [0.5, 0.9]
    assert [o["execution"]["slippage_bps"] for o in overrides] == [2, 2]
    assert [b["name"] for b in stored] == [f"momentum 2019-01-01..2019-03-29 [slippage_bps=2] [top_quantile={q}]"
                                           for q in (0.5, 0.9)]


def test_each_run_is_exported_in_its_own_folder(swept):
    _, engine, url = swept
    export = Path(url.removeprefix("sqlite:///")).parent / "export"
    for stored in list_backtests(engine):
        trades = pd.read_parquet(export / folder_name(stored["portfolio"]) / "trades.parquet")
        assert len(trades) == len(load_result(engine, stored["id"]).fills)


def test_the_table_shows_each_point_and_the_best_is_deflated_for_the_number_tried(swept):
    output, engine, _ = swept
    results = [load_result(engine, b["id"]) for b in list_backtests(engine)]
    returns = [returns_of(r.equity_curve).to_numpy() for r in results]
    sharpes = [sharpe_ratio(x) for x in returns]
    best = int(np.argmax(sharpes))
    assert any(len(r.fills) for r in results), "the sweep should trade on these bars"
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines() if "%" in line]
    assert [row[0] for row in rows] == ["0.5", "0.9"]
    assert [row[-1] for row in rows] == ["best" if i == best else "" for i in range(2)]
    deflated = deflated_sharpe_ratio(returns[best], np.array(sharpes), 2)
    assert deflated < deflated_sharpe_ratio(returns[best], np.array(sharpes[best:best + 1]), 1)  # luck of 2 tries
    assert f"deflated Sharpe is {deflated:.2f}" in " ".join(output.split())


def test_lab_backtests_lists_the_stored_runs_with_their_figures(swept, monkeypatch):
    _, engine, url = swept
    monkeypatch.setenv("LAB_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "250")  # one line per run
    listed = CliRunner().invoke(app, ["backtests"])
    assert listed.exit_code == 0, listed.output
    for stored in list_backtests(engine):
        row = next(line for line in listed.output.splitlines() if line.split()[1:2] == [str(stored["id"])])
        assert stored["name"] in row  # "... [top_quantile=0.5]" as written, not taken for markup
        assert f"{stored['sharpe']:.2f}" in row and ("PASS" if stored["gate_passed"] else "FAIL") in row
        assert stored["portfolio"] in row  # the name its books and boards go by


def test_the_sweep_flow_stores_every_run_and_compares_them_in_an_artifact(prefect_server, ray_session, shared_data,
                                                                           monkeypatch, tmp_path):
    from flows.backtest import sweep_flow

    engine = connect(_lab_env(monkeypatch, tmp_path))
    _store_bars(engine, shared_data)
    state = sweep_flow(strategies=["momentum"], start="2019-01-01", end="2019-03-29", grid={QUANTILE: [0.5, 0.9]},
                       symbols=SYMBOLS[:3], settings={"execution.slippage_bps": 2}, return_state=True)
    outcome = state.result()
    assert [run[QUANTILE] for run in outcome["runs"]] == [0.5, 0.9]
    assert [run["id"] for run in outcome["runs"]] == [b["id"] for b in list_backtests(engine)]
    for run in outcome["runs"]:
        stored = load_result(engine, run["id"])
        assert stored.symbols == SYMBOLS[:3] and stored.config["config_overrides"]["execution"]["slippage_bps"] == 2
    [artifact] = [a for a in _read(_artifacts(state.state_details.flow_run_id)) if a.key == "backtest-sweep"]
    assert [row[QUANTILE] for row in json.loads(artifact.data)] == [0.5, 0.9]
    assert f"deflated Sharpe of {outcome['deflated_sharpe']:.2f}" in artifact.description


def _msft_2018(shared_data: Path, enter: int | None, leave: int | None):
    """MSFT in 2018 through the engine, bought on session ``enter`` and sold on ``leave``
    (None: never traded, its equity flat)."""
    from benchmarks.backtest import lab_sma

    bars = _adjusted(shared_data, "MSFT").loc["2018-01-01":"2018-12-31"]
    buy, sell = pd.Series(False, index=bars.index), pd.Series(False, index=bars.index)
    if enter is not None:
        buy.iloc[enter], sell.iloc[leave] = True, True
    return lab_sma({"MSFT": bars}, {"method": "fixed", "fixed_amount": 20_000.0}, flags={"MSFT": (buy, sell)})


def _points(n: int) -> list[SweepPoint]:
    base = BacktestSpec(strategies=["momentum"], start=date(2018, 1, 1), end=date(2018, 12, 31))
    return [SweepPoint({QUANTILE: q}, base.with_settings({QUANTILE: q})) for q in (0.5, 0.6, 0.7)[:n]]


def test_a_run_that_never_traded_is_never_the_best_even_beside_a_losing_one(shared_data):
    lost = _msft_2018(shared_data, enter=190, leave=245)  # October to December 2018: MSFT fell
    idle = _msft_2018(shared_data, enter=None, leave=None)
    assert lost.metrics()["portfolio"].sharpe < 0 and idle.fills.empty
    comparison = compare(_points(2), [idle, lost], [1, 2])
    assert comparison.best == 1
    returns = [returns_of(r.equity_curve).to_numpy() for r in (idle, lost)]
    sharpes = np.array([sharpe_ratio(x) for x in returns])
    assert comparison.deflated_sharpe == deflated_sharpe_ratio(returns[1], sharpes, 2)  # both runs were tried


def test_when_no_run_has_a_sharpe_there_is_no_best_and_nothing_to_deflate(shared_data):
    idle = _msft_2018(shared_data, enter=None, leave=None)
    comparison = compare(_points(2), [idle, idle], [1, 2])
    assert math.isnan(comparison.rows[0].metrics.sharpe)
    assert comparison.best is None and comparison.deflated_sharpe is None


#: every entry refused by the pre-trade limits: a sweep whose runs make no trade at all
NO_TRADE = "execution.max_order_notional=1,2"


def test_a_sweep_where_no_run_has_a_sharpe_says_there_is_no_best(ray_session, shared_data, monkeypatch, tmp_path):
    engine = connect(_lab_env(monkeypatch, tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    _store_bars(engine, shared_data)
    outcome = CliRunner().invoke(app, ["backtest", *PERIOD, "--sweep", NO_TRADE])
    assert outcome.exit_code == 0, outcome.output
    stored = list_backtests(engine)
    assert len(stored) == 2 and all(load_result(engine, b["id"]).fills.empty for b in stored)
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in outcome.output.splitlines() if "%" in line]
    assert [row[-1] for row in rows] == ["", ""]
    text = " ".join(outcome.output.split())
    assert "None of the 2 runs has a Sharpe ratio" in text and "no best" in text
    assert "deflated Sharpe is" not in text


def test_the_sweep_flow_says_there_is_no_best_when_no_run_has_a_sharpe(prefect_server, ray_session, shared_data,
                                                                       monkeypatch, tmp_path):
    from flows.backtest import sweep_flow

    engine = connect(_lab_env(monkeypatch, tmp_path))
    _store_bars(engine, shared_data)
    key, values = NO_TRADE.split("=")
    state = sweep_flow(strategies=["momentum"], start="2019-01-01", end="2019-03-29",
                       grid={key: [float(v) for v in values.split(",")]}, symbols=SYMBOLS[:3], return_state=True)
    outcome = state.result()
    assert outcome["best"] is None and outcome["deflated_sharpe"] is None
    assert len(outcome["runs"]) == 2 and all(run["trades"] == 0 for run in outcome["runs"])
    [artifact] = [a for a in _read(_artifacts(state.state_details.flow_run_id)) if a.key == "backtest-sweep"]
    assert "none of the 2 runs has a Sharpe ratio" in artifact.description
    assert "has a deflated Sharpe of" not in artifact.description


@pytest.mark.parametrize(("sweep", "message"), [
    (["top_quantile"], "--sweep 'top_quantile': expected KEY=VALUE"),
    ([f"{QUANTILE}=0.5", f"{QUANTILE}=0.9"], f"--sweep {QUANTILE}: given twice"),
    ([f"{QUANTILE}=0.5,5"], f"sweep point top_quantile=5: config_overrides: {QUANTILE}: 5 is outside [0.5, 0.95]"),
    ([f"{QUANTILE}=[0.5, 7]"], "sweep point top_quantile=7: config_overrides"),
    (["strategies.momentum.params.top_quantil=0.5"], "unknown parameter (did you mean 'top_quantile'?)"),
    ([f"{QUANTILE}=0.5,0.5"], "sweep point top_quantile=0.5: the same backtest settings as top_quantile=0.5"),
    (["tuning.trials=2,3"], "sweep point trials=3: the same backtest settings as trials=2"),  # not read by a backtest
    (["risk.max_positions=3", "risk=1"], "risk: another setting given lies inside it"),
])
def test_a_bad_sweep_is_refused_before_anything_runs(sweep, message, monkeypatch, tmp_path):
    url = _lab_env(monkeypatch, tmp_path)
    outcome = CliRunner().invoke(app, ["backtest", *PERIOD, *(a for s in sweep for a in ("--sweep", s))])
    assert isinstance(outcome.exception, ConfigError) and message in str(outcome.exception)
    assert list_backtests(connect(url)) == []


def test_a_set_setting_changes_the_one_run_and_its_name(shared_data, monkeypatch, tmp_path):
    engine = connect(_lab_env(monkeypatch, tmp_path))
    _store_bars(engine, shared_data)
    outcome = CliRunner().invoke(app, ["backtest", *PERIOD, "--set", "execution.slippage_bps=0",
                                       "--set", f"{QUANTILE}=0.6"])
    assert outcome.exit_code == 0, outcome.output
    [stored] = list_backtests(engine)
    assert stored["name"] == "momentum 2019-01-01..2019-03-29 [slippage_bps=0, top_quantile=0.6]"
    assert load_result(engine, stored["id"]).config["config_overrides"] == {
        "execution": {"slippage_bps": 0}, "strategies": {"momentum": {"params": {"top_quantile": 0.6}}}}


@pytest.mark.parametrize(("options", "message"), [
    (["--set", "risk.nope=1"], "config_overrides: risk.nope: Extra inputs are not permitted"),
    (["--set", f"{QUANTILE}=2"], f"config_overrides: {QUANTILE}: 2 is outside [0.5, 0.95]"),
    (["--set", "risk.max_positions=3", "--set", "risk.max_positions=4"], "--set risk.max_positions: given twice"),
    (["--set", f"{QUANTILE}=0.6", "--sweep", f"{QUANTILE}=0.5,0.9"],
     f"sweep {QUANTILE}: the base run's overrides set it already"),
    (["--set", "risk.max_positions=3", "--sweep", "risk=[1]"], "sweep risk: the base run's overrides set it already"),
    (["--set", "risk=1", "--sweep", "risk.max_positions=[3]"],
     "sweep risk.max_positions: the base run's overrides set it already"),
    (["--set", "risk.max_positions=3", "--set", "risk=1"], "risk: another setting given lies inside it"),
])
def test_a_bad_setting_is_refused_before_anything_runs(options, message, monkeypatch, tmp_path, shared_data):
    engine = connect(_lab_env(monkeypatch, tmp_path))
    _store_bars(engine, shared_data)
    for symbols in (PERIOD, PERIOD[:PERIOD.index("--symbol")]):  # the symbols given, or the config's
        outcome = CliRunner().invoke(app, ["backtest", *symbols, *options])
        assert isinstance(outcome.exception, ConfigError) and message in str(outcome.exception), outcome.output
    assert list_backtests(engine) == []


def test_sweep_values_are_json_or_text_split_on_commas():
    from lab.cli.backtest import _grid

    assert _grid(["a.b=0.5,0.9", "c.d=[1, 2]", "e.f=true", 'g.h="x,y"', "i.j=abc,null"]) == {
        "a.b": [0.5, 0.9], "c.d": [1, 2], "e.f": [True], "g.h": ["x,y"], "i.j": ["abc", None]}


def test_runs_that_fail_are_named_once_with_their_reason_and_nothing_is_stored(ray_session, monkeypatch, tmp_path):
    url = _lab_env(monkeypatch, tmp_path)  # no bars stored
    outcome = CliRunner().invoke(app, ["backtest", *PERIOD, "--sweep", f"{QUANTILE}=0.5,0.9"])
    assert isinstance(outcome.exception, LabError)
    assert str(outcome.exception) == (
        f"sweep: no bars at all between 2019-01-01 and 2019-03-29 for {', '.join(SYMBOLS)} (in 2 of 2 runs: "
        "momentum 2019-01-01..2019-03-29 [top_quantile=0.5]; momentum 2019-01-01..2019-03-29 [top_quantile=0.9])")
    assert list_backtests(connect(url)) == []


def test_every_combination_of_the_settings_is_a_point():
    base = BacktestSpec(strategies=["momentum"], start=date(2019, 1, 1), end=date(2019, 3, 29), symbols=SYMBOLS)
    points = expand_grid(base, {QUANTILE: [0.5, 0.9], "risk.max_positions": [2]}, load_config(CONFIG))
    assert [p.settings for p in points] == [{QUANTILE: 0.5, "risk.max_positions": 2},
                                           {QUANTILE: 0.9, "risk.max_positions": 2}]


def test_settings_with_the_same_last_name_are_told_apart_by_the_shortest_path_that_differs():
    base = BacktestSpec(strategies=["momentum"], start=date(2019, 1, 1), end=date(2019, 3, 29), symbols=SYMBOLS)
    grid = {"risk.max_positions": [2], "strategies.momentum.max_positions": [3, 4], QUANTILE: [0.5]}
    points = expand_grid(base, grid, load_config(CONFIG))
    assert [p.spec.name for p in points] == [
        f"momentum 2019-01-01..2019-03-29 [risk.max_positions=2, momentum.max_positions={n}, top_quantile=0.5]"
        for n in (3, 4)]
    assert list(setting_names(grid).values()) == ["risk.max_positions", "momentum.max_positions", "top_quantile"]
