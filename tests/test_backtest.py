"""Backtests through the trading engine on real bars: walk-forward models, storage on both
databases, export, gaps and bad input (sweeps: ``test_backtest_sweep``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import delete, func, insert, select
from typer.testing import CliRunner

from benchmarks.backtest import lab_sma, load
from lab.backtest import (
    BacktestSpec,
    WalkForward,
    delete_result,
    list_backtests,
    load_result,
    run_backtest,
    save_result,
)
from lab.backtest.decisions import WalkForwardPredictions, pretrained_predictions
from lab.backtest.periods import latest_periods
from lab.backtest.result import EQUITY_COLUMNS, FILL_COLUMNS, ORDER_COLUMNS, POSITION_COLUMNS, BacktestResult
from lab.cli.main import app
from lab.config import TradingConfig, load_config
from lab.db import connect
from lab.db import models as db
from lab.errors import ConfigError, DataError
from lab.models import load_predictor
from lab.registry import ModelRegistry
from lab.report import report_dir
from lab.report.charts import return_curves
from lab.trading.predictions import ModelWithoutPayoff, NoActiveModel, RegistryPredictions
from lab.trading.store import load_books, replay_ledger
from universe.calendars import xnys

CONFIG = Path(__file__).resolve().parents[1] / "config" / "trading.json"
SYMBOLS = ["AAPL", "MSFT", "IBM", "KO"]
FIRST, LAST = "2014-01-01", "2019-09-30"


def _adjusted(shared_data: Path, symbol: str) -> pd.DataFrame:
    return load(symbol, shared_data / "stocks").loc[FIRST:LAST]


def _store_bars(engine, shared_data: Path, symbols=SYMBOLS) -> None:
    rows = [{"asset_type": "stocks", "symbol": s, "interval": "1d", "ts": ts.to_pydatetime(), "source": "test",
             "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
            for s in symbols for ts, r in _adjusted(shared_data, s).iterrows()]
    with engine.begin() as conn:
        conn.execute(insert(db.PriceBar), rows)


def _spec(**changes) -> BacktestSpec:
    fields = dict(strategies=["momentum"], start=date(2019, 1, 1), end=date(2019, 6, 28), symbols=SYMBOLS,
                  benchmark="AAPL", walk_forward=WalkForward(window_days=91, train_days=1095),
                  config_overrides={"strategies": {"momentum": {"min_confidence": 0.5, "max_positions": 3}},
                                    "sizing": {"method": "percent", "percent_of_equity": 0.2},
                                    "risk": {"max_position_pct": 0.25, "cash_reserve_pct": 0.05}})
    fields.update(changes)
    return BacktestSpec(**fields)


def _run(engine, spec: BacktestSpec, tmp_path: Path):
    return run_backtest(engine, load_config(CONFIG), ModelRegistry(engine, tmp_path / "models"), spec)


#: a hand-made run over two months and a day: strategy "a" swings, "b" creeps up, BEN is held
HAND_MADE = {"a": [50_000.0, 55_000.0, 49_500.0, 54_450.0, 50_094.0],
             "b": [50_000.0, 50_000.0, 50_500.0, 50_500.0, 51_005.0]}
HAND_MADE_DAYS = ["2021-01-29", "2021-02-01", "2021-02-26", "2021-03-01", "2021-03-31"]
HAND_MADE_BEN = [10.0, 11.0, 12.0, 12.0, 9.0]


def _hand_made_result(positions: pd.DataFrame | None = None) -> BacktestResult:
    """A run built by hand (no engine): its figures can be worked out on paper."""
    ts = pd.to_datetime(HAND_MADE_DAYS, utc=True)
    total = [a + b for a, b in zip(HAND_MADE["a"], HAND_MADE["b"], strict=True)]
    equity = pd.DataFrame({"ts": ts, "cash": total, "positions_value": 0.0, "equity": total, "realized_pnl": 0.0,
                           "unrealized_pnl": 0.0, "benchmark_close": HAND_MADE_BEN})[EQUITY_COLUMNS]
    return BacktestResult(
        portfolio="backtest:hand", name="hand made", start=ts[0], end=ts[-1], strategies=["a", "b"],
        symbols=["BEN"], benchmark="BEN", initial_cash=100_000.0, periods_per_year=252, equity=equity,
        strategy_equity=pd.DataFrame(HAND_MADE, index=pd.DatetimeIndex(ts, name="ts")),
        orders=pd.DataFrame(columns=ORDER_COLUMNS), fills=pd.DataFrame(columns=FILL_COLUMNS),
        positions=positions if positions is not None else pd.DataFrame(columns=POSITION_COLUMNS))


@pytest.fixture
def sqlite_bars(sqlite_url, shared_data):
    engine = connect(sqlite_url)
    _store_bars(engine, shared_data)
    return engine


@pytest.fixture(scope="module")
def momentum_run(tmp_path_factory, shared_data):
    """One walk-forward momentum run, read by several tests (it is not modified)."""
    home = tmp_path_factory.mktemp("momentum")
    engine = connect(f"sqlite:///{home / 'lab.db'}")
    _store_bars(engine, shared_data)
    return _run(engine, _spec(), home)


def test_books_balance_on_every_bar(momentum_run):
    equity = momentum_run.equity
    np.testing.assert_allclose(equity["equity"], equity["cash"] + equity["positions_value"], rtol=1e-12)
    np.testing.assert_allclose(momentum_run.strategy_equity.sum(axis=1), equity["equity"], rtol=1e-9)
    assert len(momentum_run.fills) > 0, "the engine traded"
    assert (equity["cash"] >= -1e-6).all()


def test_fills_happen_after_the_bar_that_decided_them(momentum_run):
    merged = momentum_run.fills.merge(momentum_run.orders[["client_order_id", "ts"]], on="client_order_id",
                                      suffixes=("", "_decided"))
    assert (merged["ts"] > merged["ts_decided"]).all()


def test_results_sit_beside_buy_and_hold_after_fees(momentum_run):
    metrics = momentum_run.metrics()
    assert set(metrics) == {"portfolio", "momentum", "buy&hold AAPL"}
    assert momentum_run.fills["fee"].gt(0).all()
    bench = momentum_run.benchmark_curve
    closes = momentum_run.equity["benchmark_close"].to_numpy()
    assert bench.iloc[-1] == pytest.approx(momentum_run.initial_cash * closes[-1] / closes[0])


def test_the_benchmark_given_changes_the_comparison_only_not_the_trades(sqlite_bars, momentum_run, tmp_path):
    # the features' relative strength is against the universe's configured benchmark (AAPL),
    # as training and the live cycle compute it: KO as the buy-and-hold line must not change it
    against_ko = _run(sqlite_bars, _spec(benchmark="KO"), tmp_path)
    for frame in ("orders", "fills"):
        ours, theirs = (getattr(r, frame).drop(columns=["client_order_id", "fill_id"], errors="ignore")
                        for r in (against_ko, momentum_run))
        pd.testing.assert_frame_equal(ours, theirs)
    pd.testing.assert_frame_equal(against_ko.equity.drop(columns="benchmark_close"),
                                  momentum_run.equity.drop(columns="benchmark_close"))
    assert against_ko.funnel == momentum_run.funnel
    assert (against_ko.benchmark, momentum_run.benchmark) == ("KO", "AAPL")
    assert not np.allclose(against_ko.equity["benchmark_close"], momentum_run.equity["benchmark_close"])
    assert against_ko.portfolio != momentum_run.portfolio  # stored beside it, not over it


def test_the_funnel_accounts_for_every_signal(momentum_run):
    funnel = momentum_run.funnel["momentum"]
    entries = momentum_run.orders[momentum_run.orders["intent"] == "entry"]
    assert funnel["screened"] >= funnel["rule"] >= funnel["confident"] >= funnel["signals"] > 0
    assert funnel["signals"] == funnel["ordered"] + funnel["refused"]
    assert funnel["ordered"] == len(entries) and funnel["filled"] == int((entries["filled_qty"] > 0).sum())
    assert sum(funnel["reasons"].values()) == funnel["refused"]  # (the reasons are few here)
    assert 0.5 <= funnel["best"] <= 1.0  # min_confidence 0.5 let signals through


def test_walk_forward_models_never_see_the_window_they_trade(shared_data):
    bars = {s: _adjusted(shared_data, s) for s in SYMBOLS}
    start, end = pd.Timestamp("2019-01-01", tz="UTC"), pd.Timestamp("2019-06-28", tz="UTC")
    kwargs = dict(symbols={"momentum": SYMBOLS}, asset_classes={s: "stocks" for s in SYMBOLS}, start=start,
                  end=end, window_days=91, train_days=1095, seed=7)
    full = WalkForwardPredictions.fit(["momentum"], bars, **kwargs)
    window = full.window("momentum", pd.Timestamp("2019-05-01", tz="UTC"))
    # poison everything from that window on: a model that peeked would change
    poisoned = {s: b.copy() for s, b in bars.items()}
    for frame in poisoned.values():
        frame.loc[window.start:] *= 3.0
    again = WalkForwardPredictions.fit(["momentum"], poisoned, **kwargs)
    rows = pd.DataFrame(np.random.default_rng(1).normal(size=(20, len(window.predictor.feature_names))),
                        columns=window.predictor.feature_names)
    same = again.window("momentum", pd.Timestamp("2019-05-01", tz="UTC"))
    np.testing.assert_array_equal(window.predictor.predict(rows), same.predictor.predict(rows))
    assert full.describe()["momentum"] == ["2019-01-01", "2019-04-02"]


def test_backtest_is_stored_under_its_portfolio_and_replays(engine, shared_data, tmp_path):
    _store_bars(engine, shared_data)
    result = _run(engine, _spec(), tmp_path)
    first = save_result(engine, result)
    assert save_result(engine, result) == first  # storing the same run again replaces it, under its id
    assert result.portfolio.startswith("backtest:")
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(db.Backtest)) == 1
        assert conn.scalar(select(func.count()).select_from(db.Trade)
                           .where(db.Trade.portfolio == result.portfolio)) == len(result.fills)
        assert conn.scalar(select(func.count()).select_from(db.PortfolioSnapshot)
                           .where(db.PortfolioSnapshot.portfolio == result.portfolio)) == len(result.equity)
    ledger = replay_ledger(engine, result.portfolio)
    assert ledger.cash == pytest.approx(result.equity["cash"].iloc[-1], rel=1e-12)
    loaded = load_result(engine, result.portfolio)
    np.testing.assert_allclose(loaded.equity["equity"], result.equity["equity"], rtol=1e-12)
    pd.testing.assert_frame_equal(loaded.positions.reset_index(drop=True),
                                  result.positions.reset_index(drop=True), check_dtype=False)
    assert loaded.metrics()["portfolio"] == result.metrics()["portfolio"]
    assert loaded.funnel == result.funnel and result.funnel["momentum"]["signals"] > 0
    assert [b["portfolio"] for b in list_backtests(engine)] == [result.portfolio]
    assert load_result(engine, str(save_result(engine, result))).name == result.name
    assert first >= 1


def test_the_same_backtest_after_a_config_edit_is_stored_beside_the_first_not_over_it(engine, shared_data, tmp_path):
    _store_bars(engine, shared_data)
    spec, registry = _spec(end=date(2019, 3, 29)), ModelRegistry(engine, tmp_path / "models")
    base = load_config(CONFIG)
    first = run_backtest(engine, base, registry, spec)
    second = run_backtest(engine, _edited(base, "execution", slippage_bps=40.0), registry, spec)
    ids = {save_result(engine, first), save_result(engine, second)}
    assert first.portfolio != second.portfolio and len(ids) == 2
    assert second.settings["execution"]["slippage_bps"] == 40.0
    assert len(first.fills) and not np.allclose(second.fills["price"], first.fills["price"])
    save_result(engine, run_backtest(engine, base, registry, spec))  # the same run again: in its own place
    stored = {b["portfolio"]: b for b in list_backtests(engine)}
    assert set(stored) == {first.portfolio, second.portfolio}
    assert list(stored)[-1] == first.portfolio  # the latest stored: what `lab report` shows by default
    assert load_result(engine, first.portfolio).settings == first.settings


def _edited(config, section: str, **change):
    """``config`` with some settings of one section (or of one strategy, ``strategies.NAME``) changed."""
    if section.startswith("strategies."):
        name = section.split(".", 1)[1]
        return config.model_copy(update={"strategies": {**config.strategies,
                                                        name: config.strategies[name].model_copy(update=change)}})
    return config.model_copy(update={section: getattr(config, section).model_copy(update=change)})


@pytest.mark.parametrize(("section", "change", "same_run"), [
    ("execution", {"slippage_bps": 40.0}, False),
    ("risk", {"max_positions": 3}, False),
    ("strategies.momentum", {"stop_loss": 0.05}, False),
    ("strategies.swing", {"stop_loss": 0.05}, True),  # a strategy the run does not trade
    ("execution", {"broker": "alpaca"}, True),  # a backtest fills on paper whatever the live broker
    ("tuning", {"trials": 3}, True),
])
def test_a_backtest_is_named_by_its_spec_and_the_settings_it_reads(section, change, same_run):
    base = load_config(CONFIG)
    assert (_spec().portfolio_for(_edited(base, section, **change)) == _spec().portfolio_for(base)) is same_run


def test_a_stored_run_keeps_its_books_as_the_live_cycle_does(sqlite_bars, momentum_run):
    save_result(sqlite_bars, momentum_run)
    books = load_books(sqlite_bars, load_config(CONFIG), momentum_run.portfolio)
    last = momentum_run.equity.iloc[-1]
    assert books.realized_pnl == pytest.approx(last["realized_pnl"], rel=1e-12)  # closed positions kept
    assert books.cash == pytest.approx(last["cash"], rel=1e-12)
    assert books.equity == pytest.approx(last["equity"], rel=1e-12)
    fills = momentum_run.fills
    for (strategy, symbol), position in books.positions.items():
        mine = fills[(fills["strategy"] == strategy) & (fills["symbol"] == symbol)]
        assert position.realized_pnl == pytest.approx(mine["realized_pnl"].sum(), abs=1e-9)
        if position.is_open:  # opened when it last left flat, not stamped with the last bar
            held = mine["qty"].where(mine["side"] == "buy", -mine["qty"]).cumsum()
            opened = mine["ts"][(held.shift(fill_value=0.0).abs() < 1e-9) & (held.abs() > 1e-9)].iloc[-1]
            assert position.opened_at == opened.to_pydatetime()


def _msft_run(shared_data: Path, year: str = "2016"):
    """MSFT bought on the 11th session of ``year`` and sold on the 201st: one round trip."""
    bars = _adjusted(shared_data, "MSFT").loc[f"{year}-01-01":f"{year}-12-31"]
    enter, leave = pd.Series(False, index=bars.index), pd.Series(False, index=bars.index)
    enter.iloc[10], leave.iloc[200] = True, True
    return lab_sma({"MSFT": bars}, {"method": "fixed", "fixed_amount": 20_000.0}, flags={"MSFT": (enter, leave)})


def test_a_run_without_a_losing_trade_is_stored_and_passes_the_profit_factor(engine, shared_data):
    result = _msft_run(shared_data)  # bought in January 2016, sold in October, higher
    assert result.metrics()["portfolio"].profit_factor == math.inf  # one trade, won
    _store_bars(engine, shared_data, ["MSFT"])
    save_result(engine, result)  # PostgreSQL's JSON has no Infinity: stored as null
    (check,) = [c for c in load_result(engine, result.portfolio).gate() if c.name == "profit_factor"]
    assert check.passed and check.value == math.inf
    with engine.connect() as conn:
        stored = conn.scalar(select(db.Backtest.metrics))
    assert {"name": "profit_factor", "value": None, "op": ">", "threshold": 1.5, "passed": True} in stored["gate"]


def test_the_stored_runs_list_judges_each_run_by_the_gate_its_report_applies(engine, shared_data):
    result = _msft_run(shared_data)
    _store_bars(engine, shared_data, ["MSFT"])
    backtest_id = save_result(engine, result)
    with engine.begin() as conn:  # as stored before the gate asked for enough trades: every check passed
        row = conn.execute(select(db.Backtest.metrics).where(db.Backtest.id == backtest_id)).scalar_one()
        row["gate"] = [dict(check, passed=True) for check in row["gate"]]
        conn.execute(db.Backtest.__table__.update().where(db.Backtest.id == backtest_id).values(metrics=row))
    [listed] = list_backtests(engine)
    failed = [c.name for c in load_result(engine, backtest_id).gate() if not c.passed]
    assert "trades" in failed and listed["gate_passed"] is False  # one round trip is too few to judge


def test_a_stored_run_whose_bars_are_gone_names_them_when_loaded(engine, shared_data):
    result = _msft_run(shared_data)
    save_result(engine, result)  # its bars were never stored here
    with pytest.raises(DataError, match="there are none of MSFT between 2016-01-04 and 2016-12-30 any more"):
        load_result(engine, result.portfolio)


def test_deleting_a_stored_run_removes_all_it_stored_and_nothing_else(engine, shared_data):
    gone, kept = _msft_run(shared_data, "2016"), _msft_run(shared_data, "2017")
    for run in (gone, kept):
        save_result(engine, run)
    assert delete_result(engine, str(list_backtests(engine)[0]["id"])) == gone.portfolio
    with engine.connect() as conn:
        for table in (db.Order, db.Trade, db.Position, db.PortfolioSnapshot, db.Account):
            def rows(portfolio, table=table):
                return conn.scalar(select(func.count()).select_from(table).where(table.portfolio == portfolio))
            assert rows(gone.portfolio) == 0 and rows(kept.portfolio) > 0, table.__tablename__
    assert [b["portfolio"] for b in list_backtests(engine)] == [kept.portfolio]
    with pytest.raises(DataError, match=f"no backtest '{gone.portfolio}'; stored: "):
        delete_result(engine, gone.portfolio)


def test_an_unknown_run_is_named_with_the_latest_stored_and_where_to_see_them_all(sqlite_url):
    engine = connect(sqlite_url)
    ids = [save_result(engine, dataclasses.replace(_hand_made_result(), portfolio=f"backtest:hand{i}"))
           for i in range(5)]
    with pytest.raises(DataError) as few:
        load_result(engine, "999")
    assert str(few.value) == (f"no backtest '999'; the latest 3 of the 5 stored: {ids[4]} (backtest:hand4), "
                              f"{ids[3]} (backtest:hand3), {ids[2]} (backtest:hand2); `lab backtests` lists them all")


def test_a_deleted_runs_id_never_names_another_run(engine, shared_data):
    first, second = _msft_run(shared_data, "2016"), _msft_run(shared_data, "2017")
    save_result(engine, first)
    deleted = save_result(engine, second)
    delete_result(engine, second.portfolio)
    assert save_result(engine, second) > deleted  # stored anew: a new id, as `lab report <old id>` must not find it


def test_lab_backtests_delete_removes_the_runs_and_their_reports_or_none_when_one_is_unknown(
        sqlite_url, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    engine = connect(sqlite_url)
    gone, kept = _msft_run(shared_data, "2016"), _msft_run(shared_data, "2017")
    for run in (gone, kept):
        save_result(engine, run)
        report_dir(tmp_path, run.portfolio).mkdir(parents=True)
    first = str(list_backtests(engine)[0]["id"])
    refused = CliRunner().invoke(app, ["backtests", "--delete", first, "--delete", "nope"])
    assert isinstance(refused.exception, DataError) and "no stored backtest 'nope'; nothing deleted" in str(
        refused.exception)
    assert len(list_backtests(engine)) == 2
    deleted = CliRunner().invoke(app, ["backtests", "--delete", first, "--delete", gone.portfolio])  # one run
    assert deleted.exit_code == 0, deleted.output
    assert deleted.output.count("deleted backtest") == 1
    assert [b["portfolio"] for b in list_backtests(engine)] == [kept.portfolio]
    assert not report_dir(tmp_path, gone.portfolio).exists() and report_dir(tmp_path, kept.portfolio).exists()


def test_monthly_returns_are_each_months_compounded_return_of_the_portfolio_each_strategy_and_buy_and_hold():
    table = _hand_made_result().monthly_returns()
    assert list(table.columns) == ["portfolio", "a", "b", "buy&hold BEN"]
    assert list(table.index) == ["2021-02", "2021-03"]  # January's one bar has no return
    portfolio = [a + b for a, b in zip(HAND_MADE["a"], HAND_MADE["b"], strict=True)]
    for name, values in {"portfolio": portfolio, **HAND_MADE, "buy&hold BEN": HAND_MADE_BEN}.items():
        # from the last bar of the month before to the month's last bar
        assert table[name].tolist() == pytest.approx([values[2] / values[0] - 1, values[4] / values[2] - 1]), name


def test_time_in_market_and_gross_exposure_of_the_portfolio_each_strategy_and_buy_and_hold():
    ts = pd.to_datetime(HAND_MADE_DAYS, utc=True)
    # "a" holds BEN worth 11,000 on the second bar and 24,000 on the third, "b" 5,050 on the third
    positions = pd.DataFrame([(ts[1], "a", "BEN", 1000.0, 10.0, 11.0, 11_000.0),
                              (ts[2], "a", "BEN", 2000.0, 10.0, 12.0, 24_000.0),
                              (ts[2], "b", "BEN", -420.0, 12.0, 12.0, -5_050.0)], columns=POSITION_COLUMNS)
    metrics = _hand_made_result(positions).metrics()
    portfolio = [a + b for a, b in zip(HAND_MADE["a"], HAND_MADE["b"], strict=True)]
    assert metrics["portfolio"].time_in_market == pytest.approx(2 / 5)
    assert metrics["portfolio"].avg_gross_exposure == pytest.approx(
        (11_000 / portfolio[1] + (24_000 + 5_050) / portfolio[2]) / 5)
    assert metrics["a"].avg_gross_exposure == pytest.approx((11_000 / 55_000 + 24_000 / 49_500) / 5)
    assert metrics["b"].time_in_market == pytest.approx(1 / 5)
    assert metrics["b"].avg_gross_exposure == pytest.approx(5_050 / 50_500 / 5)
    held = metrics["buy&hold BEN"]
    assert (held.time_in_market, held.avg_gross_exposure) == (1.0, pytest.approx(1.0))


def test_the_cli_gate_table_shows_fractions_in_percent_as_the_summary_above_it_and_a_dash_where_undefined():
    from lab.cli._common import console
    from lab.cli.backtest import _summary

    with console.capture() as shown:
        _summary(_hand_made_result())
    gate = [" ".join(line.split()) for line in shown.get().split("Success gate")[1].splitlines()]
    assert "│ max_drawdown │ 4.76% │ < 15.00% │ PASS │" in gate  # 105,000 down to 100,000
    assert "│ win_rate │ - │ > 50.00% │ FAIL │" in gate  # no trade: no win rate
    assert "│ trades │ 0 │ >= 30 │ FAIL │" in gate


def test_export_writes_every_frame_as_parquet_and_csv(momentum_run, tmp_path):
    for fmt in ("parquet", "csv"):
        paths = momentum_run.export(tmp_path / fmt, fmt)
        assert sorted(p.name for p in paths) == sorted(
            f"{n}.{fmt}" for n in ("equity", "strategy_equity", "orders", "trades", "positions", "monthly_returns"))
    monthly = pd.read_csv(tmp_path / "csv" / "monthly_returns.csv")
    assert list(monthly.columns) == ["month", "portfolio", "momentum", "buy&hold AAPL"]
    assert monthly["month"].tolist() == [f"2019-{m:02d}" for m in range(1, 7)]
    np.testing.assert_allclose(monthly["portfolio"], momentum_run.monthly_returns()["portfolio"], rtol=1e-12)
    back = pd.read_parquet(tmp_path / "parquet" / "trades.parquet")
    assert len(back) == len(momentum_run.fills)
    curve = pd.read_csv(tmp_path / "csv" / "equity.csv")
    assert {"equity", "drawdown", "benchmark_equity"} <= set(curve.columns)
    with pytest.raises(ValueError, match="export format 'xlsx': expected one of parquet, csv"):
        momentum_run.export(tmp_path / "xlsx", "xlsx")
    assert not (tmp_path / "xlsx").exists()


def test_a_symbol_with_gaps_runs_and_reports_them(sqlite_bars, tmp_path):
    holes = [pd.Timestamp(d, tz="UTC").to_pydatetime() for d in ("2019-02-04", "2019-02-05", "2019-03-12")]
    with sqlite_bars.begin() as conn:
        conn.execute(delete(db.PriceBar).where(db.PriceBar.symbol == "IBM", db.PriceBar.ts.in_(holes)))
    result = _run(sqlite_bars, _spec(), tmp_path)
    assert result.gaps == {"IBM": ["2019-02-04", "2019-02-05", "2019-03-12"]}
    assert result.gap_notes() == ["IBM: 3 missing sessions in 2 gaps: 2019-02-04 to 2019-02-05 (2 sessions), "
                                  "2019-03-12"]
    assert len(result.equity) == len(pd.bdate_range("2019-01-01", "2019-06-28")) - 5  # NYSE holidays


def test_each_gap_is_named_with_its_first_and_last_session_and_its_length():
    march = ["2018-03-05", "2018-03-06", "2018-03-07", "2018-03-08", "2018-03-09", "2018-03-12", "2018-03-13"]
    september = ["2018-09-10", "2018-09-11", "2018-09-12"]
    result = dataclasses.replace(_hand_made_result(), gaps={"GAPKO": march + september})
    # a weekend (no session) does not split a gap; sessions with bars between two holes do
    assert result.gap_notes() == ["GAPKO: 10 missing sessions in 2 gaps: 2018-03-05 to 2018-03-13 (7 sessions), "
                                  "2018-09-10 to 2018-09-12 (3 sessions)"]
    one = dataclasses.replace(result, gaps={"GAPKO": september})
    assert one.gap_notes() == ["GAPKO: 3 missing sessions: 2018-09-10 to 2018-09-12"]
    holes = ["2018-01-03", "2018-01-05", "2018-01-09", "2018-01-11", "2018-01-12", "2018-01-17"]
    many = dataclasses.replace(result, gaps={"GAPKO": holes})
    assert many.gap_notes() == ["GAPKO: 6 missing sessions in 5 gaps: 2018-01-03, 2018-01-05, 2018-01-09 and 2 more"]


def test_a_coins_gaps_are_counted_in_the_days_it_trades():
    universe = {"stocks": None, "crypto": {"symbols": ["BTC/USDT"], "benchmark": "BTC/USDT"}}
    result = dataclasses.replace(_hand_made_result(), settings={"universe": universe},
                                 gaps={"BTC/USDT": ["2021-03-05", "2021-03-08", "2021-03-13", "2021-03-14"]})
    # a coin trades at weekends: Friday and Monday are two gaps, Saturday and Sunday one
    assert result.gap_notes() == ["BTC/USDT: 4 missing sessions in 3 gaps: 2021-03-05, 2021-03-08, "
                                  "2021-03-13 to 2021-03-14 (2 sessions)"]


def test_no_entry_is_decided_on_a_symbol_without_a_bar_at_that_time(sqlite_bars, tmp_path):
    # the live cycle gives no entry to a symbol whose bars stop before the last complete
    # session; the backtest screened KO through its missing weeks on the row before them
    first, last = datetime(2019, 2, 1, tzinfo=UTC), datetime(2019, 3, 29, tzinfo=UTC)
    with sqlite_bars.begin() as conn:
        conn.execute(delete(db.PriceBar).where(db.PriceBar.symbol == "KO", db.PriceBar.ts.between(first, last)))
    result = _run(sqlite_bars, _spec(), tmp_path)
    sessions = len(result.equity)
    assert result.funnel["momentum"]["screened"] == len(SYMBOLS) * sessions - len(result.gaps["KO"])
    ko = result.orders.loc[(result.orders["symbol"] == "KO") & (result.orders["intent"] == "entry"), "ts"]
    assert not ko.between(pd.Timestamp(first), pd.Timestamp(last)).any()


def test_a_symbol_listed_after_the_start_reports_its_first_bar_apart_from_the_holes_after_it(sqlite_bars, tmp_path):
    listed, hole = datetime(2019, 1, 8, tzinfo=UTC), datetime(2019, 3, 12, tzinfo=UTC)
    with sqlite_bars.begin() as conn:
        conn.execute(delete(db.PriceBar).where(db.PriceBar.symbol == "IBM", (db.PriceBar.ts < listed) | (db.PriceBar.ts == hole)))
    result = _run(sqlite_bars, _spec(), tmp_path)
    assert result.gaps == {"IBM": ["2019-01-02", "2019-01-03", "2019-01-04", "2019-01-07", "2019-03-12"]}
    notes = ["IBM: first bar 2019-01-08, 4 sessions into the period; 1 missing session: 2019-03-12"]
    assert result.gap_notes() == notes
    save_result(sqlite_bars, result)
    assert load_result(sqlite_bars, result.portfolio).gap_notes() == notes
    assert not (result.orders["symbol"] == "IBM").any() or result.orders.loc[
        result.orders["symbol"] == "IBM", "ts"].min() >= pd.Timestamp("2019-01-08", tz="UTC")


def test_a_crypto_run_without_its_benchmark_among_its_symbols_holds_the_benchmark_of_its_class(sqlite_url, shared_data,
                                                                                              tmp_path):
    engine = connect(sqlite_url)
    with engine.begin() as conn:  # the config's crypto universe is BTC, its benchmark
        for symbol, path in (("BTC", "BTC-USD.csv"), ("ETH", "ETH-USD.csv")):
            raw = pd.read_csv(shared_data / "crypto" / path, parse_dates=["datetime"]).set_index("datetime")
            conn.execute(insert(db.PriceBar), [
                {"asset_type": "crypto", "symbol": symbol, "interval": "1d", "ts": ts.tz_localize("UTC").to_pydatetime(),
                 "source": "test", "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
                for ts, r in raw.loc["2019-06-01":"2021-03-31"].iterrows()])
    spec = BacktestSpec(strategies=["breakout"], start=date(2021, 1, 1), end=date(2021, 3, 31), symbols=["ETH"],
                        walk_forward=WalkForward(window_days=91, train_days=365))
    result = _run(engine, spec, tmp_path)
    assert result.benchmark == "BTC" and "buy&hold BTC" in result.metrics()


def test_a_backtest_refuses_what_the_cycles_pre_trade_limits_refuse(sqlite_bars, tmp_path):
    # entries of about 20,000 against a 30,000 daily budget: one a day; the backtest read the
    # limits as settings but applied none of them
    overrides = {**_spec().config_overrides, "execution": {"max_daily_notional": 30_000}}
    result = _run(sqlite_bars, _spec(config_overrides=overrides), tmp_path)
    orders, fills = result.orders, result.fills
    refused = orders[orders["status"] == "rejected"]
    assert len(refused) and refused["reason"].str.contains("would exceed max_daily_notional 30,000.00").all()
    entries = orders[(orders["intent"] == "entry") & (orders["status"] != "rejected")]
    assert entries.groupby("ts").size().max() == 1
    funnel = result.funnel["momentum"]  # a refused entry is no signal the books ordered
    assert funnel["ordered"] == len(entries)
    assert funnel["reasons"]["pre-trade: daily notional … would exceed max_daily_notional …"] == len(refused)
    by_day = fills[fills["client_order_id"].isin(entries["client_order_id"])].assign(
        notional=lambda f: f["qty"] * f["price"]).groupby("ts")["notional"].sum()
    assert by_day.max() <= 30_000 * 1.05  # decided on the close, filled at the next open


def _adjusted_btc(shared_data: Path) -> pd.DataFrame:
    """BTC's daily bars of 2016 to mid-2019 (the config's crypto universe and benchmark)."""
    raw = pd.read_csv(shared_data / "crypto" / "BTC-USD.csv", parse_dates=["datetime"]).set_index("datetime")
    return raw.tz_localize("UTC").loc["2016-01-01":"2019-06-30"]


def _store_btc(engine, shared_data: Path) -> None:
    with engine.begin() as conn:
        conn.execute(insert(db.PriceBar), [
            {"asset_type": "crypto", "symbol": "BTC", "interval": "1d", "ts": ts.to_pydatetime(), "source": "test",
             "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
            for ts, r in _adjusted_btc(shared_data).iterrows()])


def test_a_stock_and_crypto_run_decides_no_stock_order_while_the_stock_market_is_closed(sqlite_bars, shared_data,
                                                                                        tmp_path):
    # crypto bars put weekends and holidays on the clock; the live cycle places nothing in a
    # closed market, and neither may the backtest (it stored "market closed" rejections)
    _store_btc(sqlite_bars, shared_data)
    spec = _spec(strategies=["momentum", "breakout"], symbols=[*SYMBOLS, "BTC"],
                 config_overrides={**_spec().config_overrides, "strategies": {
                     "momentum": {"min_confidence": 0.5, "max_positions": 3, "max_holding_days": 3},  # due on weekends
                     "breakout": {"min_confidence": 0.5, "asset_classes": ["crypto"]}}})
    result = _run(sqlite_bars, spec, tmp_path)
    stock_orders = result.orders[result.orders["asset_type"] == "stocks"]
    nyse = xnys().sessions_in_range(spec.start.isoformat(), spec.end.isoformat()).tz_localize("UTC")
    assert not result.equity["ts"].isin(nyse).all()  # weekends and holidays are on the clock
    assert len(stock_orders) and stock_orders["ts"].isin(nyse).all(), stock_orders.loc[~stock_orders["ts"].isin(nyse)]
    assert not (result.orders["status"] == "rejected").any()
    assert result.funnel["momentum"]["screened"] <= len(nyse) * len(SYMBOLS)  # screened on sessions only


def test_each_strategy_of_a_stock_and_crypto_run_is_compared_with_its_own_asset_classs_benchmark(
        sqlite_bars, shared_data, tmp_path):
    _store_btc(sqlite_bars, shared_data)
    overrides = {**_spec().config_overrides, "strategies": {"momentum": {"min_confidence": 0.5},
                                                            "breakout": {"min_confidence": 0.5}}}
    spec = _spec(strategies=["momentum", "breakout"], symbols=[*SYMBOLS, "BTC"], benchmark=None,
                 end=date(2019, 3, 29), config_overrides=overrides)
    result = _run(sqlite_bars, spec, tmp_path)
    assert result.benchmark == "AAPL"  # the portfolio's: the first asset class of the config
    assert result.strategy_benchmarks == {"momentum": "AAPL", "breakout": "BTC"}
    btc = _adjusted_btc(shared_data).loc[:"2019-03-29", "close"]
    metrics = result.metrics()
    assert list(metrics) == ["portfolio", "momentum", "breakout", "buy&hold AAPL", "buy&hold BTC"]
    assert metrics["buy&hold BTC"].total_return == pytest.approx(btc.iloc[-1] / btc.asof(result.start) - 1)
    # the monthly table and the report's return chart show both too
    assert list(result.monthly_returns().columns)[-2:] == ["buy&hold AAPL", "buy&hold BTC"]
    assert list(return_curves(result).columns)[-2:] == ["buy & hold AAPL", "buy & hold BTC"]
    save_result(sqlite_bars, result)
    assert load_result(sqlite_bars, result.portfolio).metrics() == metrics


def test_a_benchmark_without_bars_is_refused_before_any_model_is_fitted(sqlite_bars, tmp_path, monkeypatch):
    def fit(*args, **kwargs):
        raise AssertionError("a model was fitted before the benchmark was checked")

    monkeypatch.setattr(WalkForwardPredictions, "fit", fit)
    with pytest.raises(DataError, match="no bars for the benchmark SPY between 2019-01-01 and 2019-06-28"):
        _run(sqlite_bars, _spec(benchmark="SPY"), tmp_path)


def test_pairs_without_shorts_allowed_is_refused_before_any_model_is_fitted(sqlite_bars, tmp_path, monkeypatch):
    def fit(*args, **kwargs):
        raise AssertionError("a model was fitted for a run that cannot trade")

    monkeypatch.setattr(WalkForwardPredictions, "fit", fit)
    with pytest.raises(ConfigError, match=r"pairs trades short on every signal \(a pair's other leg\), but "
                                          r"risk.allow_shorts is false.*--set risk.allow_shorts=true"):
        _run(sqlite_bars, _spec(strategies=["pairs"]), tmp_path)


def test_start_after_end_is_a_clear_error(sqlite_bars, tmp_path):
    with pytest.raises(DataError, match="start 2019-06-01 is after its end 2019-01-01"):
        _run(sqlite_bars, _spec(start=date(2019, 6, 1), end=date(2019, 1, 1)), tmp_path)


@pytest.mark.parametrize("crypto_stored", [False, True])  # BTC, the config's crypto benchmark, trades on weekends
@pytest.mark.parametrize(("start", "end"), [(date(2019, 1, 5), date(2019, 1, 6)),  # a weekend
                                            (date(2018, 12, 25), date(2018, 12, 25))])  # Christmas, a weekday
def test_a_period_without_a_session_of_the_symbols_classes_is_a_clear_error(start, end, crypto_stored, sqlite_bars,
                                                                            shared_data, tmp_path):
    if crypto_stored:
        _store_btc(sqlite_bars, shared_data)
    with pytest.raises(DataError, match=f"the period {start}..{end} is empty: it holds no trading day of stocks"):
        _run(sqlite_bars, _spec(start=start, end=end), tmp_path)


def test_a_crypto_run_over_a_weekend_is_no_empty_period(sqlite_bars, shared_data, tmp_path):
    _store_btc(sqlite_bars, shared_data)
    spec = _spec(strategies=["breakout"], symbols=["BTC"], benchmark=None, start=date(2019, 1, 5),
                 end=date(2019, 1, 6), walk_forward=WalkForward(window_days=91, train_days=365))
    assert len(_run(sqlite_bars, spec, tmp_path).equity) == 2


def test_a_benchmark_is_written_as_the_symbols_are():
    assert _spec(benchmark=" ko").benchmark == "KO"
    with pytest.raises(ConfigError, match="benchmark: Value error, expected a symbol, got an empty name"):
        _spec(benchmark=" ")


def test_a_symbol_without_data_in_the_range_is_named(sqlite_bars, tmp_path):
    with sqlite_bars.begin() as conn:
        conn.execute(delete(db.PriceBar).where(db.PriceBar.symbol == "KO",
                                               db.PriceBar.ts >= pd.Timestamp("2019-01-01", tz="UTC")))
    with pytest.raises(DataError, match="no bars between 2019-01-01 and 2019-06-28 for: KO"):
        _run(sqlite_bars, _spec(), tmp_path)


def test_a_symbol_whose_stored_bars_begin_after_the_period_is_named_with_when_they_begin(sqlite_bars, tmp_path):
    with sqlite_bars.begin() as conn:  # as if listed in July 2019
        conn.execute(delete(db.PriceBar).where(db.PriceBar.symbol == "KO",
                                               db.PriceBar.ts < pd.Timestamp("2019-07-01", tz="UTC")))
    with pytest.raises(DataError, match=r"no bars between 2019-01-01 and 2019-06-28 for: KO \(its bars are stored "
                                        r"from 2019-07-01 to 2019-09-30\)"):
        _run(sqlite_bars, _spec(symbols=["KO"]), tmp_path)


def test_a_strategy_without_an_active_model_is_a_clear_error(sqlite_bars, tmp_path):
    spec = _spec(walk_forward=WalkForward(mode="pretrained"))
    with pytest.raises(NoActiveModel, match="strategy 'momentum' has no active model version"):
        _run(sqlite_bars, spec, tmp_path)


def test_a_strategy_given_no_symbol_of_its_asset_class_is_a_clear_error(sqlite_bars, tmp_path, monkeypatch):
    fitted = []
    monkeypatch.setattr(WalkForwardPredictions, "fit", lambda *a, **k: fitted.append(a))
    with pytest.raises(DataError, match="breakout trades crypto: none of AAPL, MSFT, IBM, KO is one"):
        _run(sqlite_bars, _spec(strategies=["momentum", "breakout"]), tmp_path)
    assert fitted == []


def test_an_unknown_strategy_gets_a_hint(sqlite_bars, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'momentum'"):
        _run(sqlite_bars, _spec(strategies=["momentun"]), tmp_path)


@pytest.mark.parametrize(("params", "message"), [
    ({"top_quantil": 0.5}, "strategies.momentum.params.top_quantil: unknown parameter (did you mean 'top_quantile'?)"),
    ({"top_quantile": 5}, "strategies.momentum.params.top_quantile: 5 is outside [0.5, 0.95]"),
])
def test_strategy_parameters_in_the_overrides_are_checked_before_any_work(params, message, sqlite_bars, tmp_path,
                                                                          monkeypatch):
    fitted = []
    monkeypatch.setattr(WalkForwardPredictions, "fit", lambda *a, **k: fitted.append(a))
    overrides = {"strategies": {"momentum": {"params": params}}}
    with pytest.raises(ConfigError) as refused:
        _run(sqlite_bars, _spec(config_overrides=overrides), tmp_path)
    assert refused.value.problems == [f"config_overrides: {message}"]
    assert fitted == []  # refused before any walk-forward model was fitted


def test_several_strategies_share_one_book_and_are_judged_apart(sqlite_bars, tmp_path):
    spec = _spec(strategies=["momentum", "swing"], end=date(2019, 3, 29),
                 walk_forward=WalkForward(window_days=182, train_days=1095),
                 config_overrides={"strategies": {"momentum": {"min_confidence": 0.5},
                                                  "swing": {"min_confidence": 0.5}},
                                   "sizing": {"method": "percent", "percent_of_equity": 0.1}})
    result = _run(sqlite_bars, spec, tmp_path)
    assert set(result.metrics()) == {"portfolio", "momentum", "swing", "buy&hold AAPL"}
    np.testing.assert_allclose(result.strategy_equity.sum(axis=1), result.equity["equity"], rtol=1e-9)
    for strategy in ("momentum", "swing"):
        fills = result.fills[result.fills["strategy"] == strategy]
        pnl = result.strategy_equity[strategy].iloc[-1] - result.initial_cash / 2
        held = result.positions[(result.positions["ts"] == result.end) & (result.positions["strategy"] == strategy)]
        flows = -(np.where(fills["side"] == "buy", 1, -1) * fills["qty"] * fills["price"]).sum() - fills["fee"].sum()
        assert pnl == pytest.approx(flows + held["market_value"].sum(), abs=1e-6)


def _register_momentum(engine, shared_data: Path, tmp_path: Path, *, registered: str,
                       train_days: int = 1095, payoff: bool = True) -> ModelRegistry:
    """A momentum model fitted on the ``train_days`` before 2018 (2015-2017), registered (as
    far as the database says) then, and activated; with the payoff of its training rows unless
    ``payoff`` is False (a version stored before the lab measured it)."""
    bars = {s: _adjusted(shared_data, s) for s in SYMBOLS}
    start = pd.Timestamp("2018-01-01", tz="UTC")
    fitted = WalkForwardPredictions.fit(["momentum"], bars, symbols={"momentum": SYMBOLS},
                                        asset_classes=dict.fromkeys(SYMBOLS, "stocks"), start=start, end=start,
                                        window_days=365, train_days=train_days, seed=7)
    window = fitted.window("momentum", start)
    path = window.predictor.save(tmp_path / "momentum.ubj")
    registry = ModelRegistry(engine, tmp_path / "models")
    version = registry.save_version("trading", "momentum", path,
                                    metrics={"payoff": asdict(window.payoff)} if payoff else None)
    registry.activate(version.id)
    with engine.begin() as conn:
        conn.execute(db.ModelVersion.__table__.update().where(db.ModelVersion.id == version.id)
                     .values(created_at=pd.Timestamp(registered, tz="UTC").to_pydatetime()))
    return registry


def test_a_model_registered_before_the_start_runs_out_of_sample(sqlite_bars, shared_data, tmp_path):
    registry = _register_momentum(sqlite_bars, shared_data, tmp_path, registered="2018-01-02")
    spec = _spec(end=date(2019, 3, 29), walk_forward=WalkForward(mode="pretrained"))
    result = run_backtest(sqlite_bars, load_config(CONFIG), registry, spec)
    assert len(result.equity) > 50 and result.metrics()["portfolio"].months == 2  # Jan 2 to Mar 29


def test_a_pretrained_run_on_another_active_model_is_another_run_stored_beside_the_first(sqlite_bars, shared_data,
                                                                                        tmp_path):
    spec = _spec(end=date(2019, 3, 29), walk_forward=WalkForward(mode="pretrained"))
    runs = []
    for registered, train_days in (("2018-01-02", 1095), ("2018-01-03", 730)):  # v1, then v2 activated
        registry = _register_momentum(sqlite_bars, shared_data, tmp_path, registered=registered,
                                      train_days=train_days)
        active = registry.get_active_version("momentum")
        result = run_backtest(sqlite_bars, load_config(CONFIG), registry, spec)
        runs.append((active, result, save_result(sqlite_bars, result)))
    (v1, first, first_id), (v2, second, second_id) = runs
    assert (v1.version, v2.version) == (1, 2)
    assert first.portfolio != second.portfolio and first_id != second_id
    assert [b["portfolio"] for b in list_backtests(sqlite_bars)] == [first.portfolio, second.portfolio]
    for version, run, backtest_id in runs:  # the first is still stored as it ran, and each names its model
        stored = load_result(sqlite_bars, backtest_id)
        assert stored.models == {"momentum": {"id": version.id, "version": version.version}}
        assert f"momentum v{version.version}" in stored.decided_by
        pd.testing.assert_frame_equal(stored.fills.drop(columns="ts"), run.fills.drop(columns="ts"),
                                      check_dtype=False)


def test_a_pretrained_run_keeps_the_models_it_began_with_when_another_is_activated(sqlite_bars, shared_data,
                                                                                  tmp_path):
    registry = _register_momentum(sqlite_bars, shared_data, tmp_path, registered="2018-01-02")
    v1 = registry.get_active_version("momentum")
    start = pd.Timestamp("2019-01-01", tz="UTC")
    pinned = pretrained_predictions(registry, ["momentum"], start)
    _register_momentum(sqlite_bars, shared_data, tmp_path, registered="2018-01-03", train_days=730)  # v2 active
    names = load_predictor(registry.model_file(v1)).feature_names
    prediction = pinned.at(start.to_pydatetime()).predict("momentum", pd.DataFrame(np.zeros((1, len(names))),
                                                                                   columns=names))
    assert registry.get_active_version("momentum").version == 2 and prediction.model_version == 1
    assert pinned.models == {"momentum": {"id": v1.id, "version": 1}}


def test_a_model_stored_without_a_payoff_is_refused_naming_it(sqlite_bars, shared_data, tmp_path):
    """Its signals cannot be priced; a backtest without them would report a strategy that never traded."""
    registry = _register_momentum(sqlite_bars, shared_data, tmp_path, registered="2018-01-02", payoff=False)
    spec = _spec(end=date(2019, 3, 29), walk_forward=WalkForward(mode="pretrained"))
    with pytest.raises(ModelWithoutPayoff, match="'momentum' model v1 has no payoff.*`lab tune --strategy momentum`"):
        run_backtest(sqlite_bars, load_config(CONFIG), registry, spec)
    with pytest.raises(ModelWithoutPayoff, match="'momentum' model v1 has no payoff"):
        RegistryPredictions(registry).predict("momentum", pd.DataFrame())


def test_each_walk_forward_window_carries_the_payoff_of_its_training_rows(shared_data):
    """Momentum's label is "the close is higher 10 bars on": the window's payoff is the mean
    10-bar return of its training rows that rose and of those that did not."""
    bars = {s: _adjusted(shared_data, s) for s in SYMBOLS}
    start, first = pd.Timestamp("2018-01-01", tz="UTC"), pd.Timestamp("2018-01-01", tz="UTC") - pd.Timedelta(days=1095)
    fitted = WalkForwardPredictions.fit(["momentum"], bars, symbols={"momentum": SYMBOLS},
                                        asset_classes=dict.fromkeys(SYMBOLS, "stocks"), start=start, end=start,
                                        window_days=365, train_days=1095, seed=7)
    returns = []
    for frame in bars.values():
        close = frame["close"].loc[:start]
        forward = (close.shift(-10) / close - 1).to_numpy()
        label_end = close.index[10:].append(pd.DatetimeIndex([pd.NaT] * 10, tz="UTC"))
        returns.append(forward[(close.index >= first) & (label_end < start)])
    returns = np.concatenate(returns)
    payoff = fitted.at(start).predict("momentum", pd.DataFrame()).payoff
    assert payoff == fitted.window("momentum", start).payoff
    assert (payoff.win, payoff.loss) == pytest.approx((returns[returns > 0].mean(), returns[returns <= 0].mean()))


def test_a_model_registered_after_the_start_is_refused(sqlite_bars, shared_data, tmp_path):
    registry = _register_momentum(sqlite_bars, shared_data, tmp_path, registered="2019-02-01")
    spec = _spec(walk_forward=WalkForward(mode="pretrained"))
    with pytest.raises(DataError, match="registered 2019-02-01, not before the backtest start 2019-01-01"):
        run_backtest(sqlite_bars, load_config(CONFIG), registry, spec)


def _store_fundamentals(engine, facts: list[tuple[str, str, float]]) -> None:
    """(symbol, known from, P/E) rows with a P/B of 2."""
    with engine.begin() as conn:
        conn.execute(insert(db.Fundamental), [
            {"symbol": s, "known_at": pd.Timestamp(known, tz="UTC").to_pydatetime(), "pe_ratio": pe, "pb_ratio": 2.0,
             "market_cap": 1e11, "sector": "Technology", "source": "test"} for s, known, pe in facts])


def _value_spec(**changes) -> BacktestSpec:
    overrides = {"strategies": {"value": {"min_confidence": 0.01, "max_positions": 4}},  # a rule hit is a signal
                 "sizing": {"method": "percent", "percent_of_equity": 0.2},
                 "risk": {"max_position_pct": 0.25, "cash_reserve_pct": 0.05}}
    return _spec(strategies=["value"], config_overrides=overrides, **changes)


def test_value_trades_on_the_fundamentals_known_at_each_bar(sqlite_bars, tmp_path):
    _store_fundamentals(sqlite_bars, [("MSFT", "2015-01-02", 15.0),  # cheap all along
                                      ("IBM", "2015-01-02", 45.0),  # too dear for max_pe 20
                                      ("KO", "2015-01-02", 45.0), ("KO", "2019-03-01", 12.0)])  # cheap from March
    entries = _run(sqlite_bars, _value_spec(), tmp_path).orders.query("intent == 'entry'")
    assert set(entries["symbol"]) == {"MSFT", "KO"}  # AAPL has no fundamentals at all
    assert entries.loc[entries["symbol"] == "KO", "ts"].min() >= pd.Timestamp("2019-03-01", tz="UTC")


def test_value_without_fundamentals_known_before_the_start_is_a_clear_error(sqlite_bars, tmp_path, monkeypatch):
    _store_fundamentals(sqlite_bars, [("MSFT", "2019-02-01", 15.0)])
    fitted = []
    monkeypatch.setattr(WalkForwardPredictions, "fit", lambda *a, **k: fitted.append(a))
    with pytest.raises(DataError, match=r"value reads point-in-time fundamentals \(P/E, P/B\), but none of AAPL, "
                                        r"MSFT, IBM, KO has any known before 2019-01-01 \(the first is known from "
                                        r"2019-02-01\)"):
        _run(sqlite_bars, _value_spec(), tmp_path)
    assert fitted == []


def test_symbols_never_ingested_are_named_with_the_command_that_ingests_them(sqlite_bars, tmp_path):
    with pytest.raises(DataError, match=r"no stored bars at all for NVDA; ingest them first \(`lab ingest --symbols "
                                        r"NVDA`, with --asset-class stocks\|crypto for a symbol not in the universe "
                                        r"config, LAB_CONFIG\)"):
        _run(sqlite_bars, _spec(symbols=["NVDA"]), tmp_path)


def test_each_weekly_period_backtests_its_own_asset_classes_symbols(sqlite_bars):
    # a strategy trading stocks and crypto: the crypto period ran on every stock too, and
    # failed for want of their bars where crypto trades alone
    with sqlite_bars.begin() as conn:
        conn.execute(insert(db.PriceBar), [
            {"asset_type": "crypto", "symbol": "BTC", "interval": "1d", "ts": ts.to_pydatetime(), "source": "test",
             "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}
            for ts in pd.date_range("2019-01-01", "2019-06-30", freq="D", tz="UTC")])
    raw = load_config(CONFIG).model_dump(mode="json")
    raw["strategies"]["momentum"]["asset_classes"] = ["stocks", "crypto"]
    config = TradingConfig.model_validate(raw)
    periods = latest_periods(sqlite_bars, config, ["momentum"], days=30)
    assert {name: (p.strategies, p.symbols) for name, p in periods.items()} == {
        "stocks": (["momentum"], config.universe.stocks.symbols), "crypto": (["momentum"], ["BTC"])}
