"""Performance metrics: checked against empyrical-reloaded, plus small hand-made tables."""

from __future__ import annotations

import dataclasses
import json
import math

import empyrical
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.performance import (
    Metrics,
    SuccessGate,
    buy_and_hold,
    compute_metrics,
    drawdown,
    monthly_returns,
    monthly_series,
    returns_of,
    round_trips,
)


def _equity(returns: np.ndarray, start: str = "2020-01-01", freq: str = "B") -> pd.Series:
    index = pd.date_range(start, periods=len(returns) + 1, freq=freq, tz="UTC")
    return pd.Series(100_000.0 * np.concatenate([[1.0], np.cumprod(1.0 + returns)]), index=index)


@pytest.fixture
def random_equity() -> pd.Series:
    rng = np.random.default_rng(7)
    return _equity(rng.normal(0.0005, 0.012, 600))


def _real_equity(shared_data) -> pd.Series:
    frame = pd.read_csv(shared_data / "stocks" / "KO.csv", parse_dates=["timestamp"])
    closes = frame.set_index("timestamp")["adjusted_close"].iloc[-1500:]
    closes.index = closes.index.tz_localize("UTC")
    return buy_and_hold(closes, 10_000.0)


def test_return_metrics_match_empyrical(random_equity):
    returns = returns_of(random_equity)
    metrics = compute_metrics(random_equity)
    assert metrics.sharpe == pytest.approx(empyrical.sharpe_ratio(returns), rel=1e-9)
    assert metrics.sortino == pytest.approx(empyrical.sortino_ratio(returns), rel=1e-9)
    assert metrics.cagr == pytest.approx(empyrical.annual_return(returns), rel=1e-9)
    assert metrics.volatility == pytest.approx(empyrical.annual_volatility(returns), rel=1e-9)
    assert metrics.max_drawdown == pytest.approx(-empyrical.max_drawdown(returns), rel=1e-9)


@pytest.mark.parametrize("values", [
    [100.0, 101.0, np.nan, 103.0, 102.0],  # a bar without a value: two NaN returns
    [100.0, 50.0, 0.0, 0.0],  # ruined: the last return is 0/0
    [100.0, 101.0],  # a single return
], ids=["unvalued bar", "ruined", "one return"])
def test_return_metrics_skip_nan_returns_and_need_one_return_as_empyricals(values):
    equity = pd.Series(values, index=pd.date_range("2021-01-04", periods=len(values), freq="B", tz="UTC"))
    returns = returns_of(equity)
    metrics = compute_metrics(equity)
    assert (metrics.cagr, metrics.volatility, metrics.sharpe, metrics.sortino) == (
        pytest.approx(empyrical.annual_return(returns), rel=1e-9, nan_ok=True),
        pytest.approx(empyrical.annual_volatility(returns), rel=1e-9, nan_ok=True),
        pytest.approx(empyrical.sharpe_ratio(returns), rel=1e-9, nan_ok=True),
        pytest.approx(empyrical.sortino_ratio(returns), rel=1e-9, nan_ok=True))


def test_real_buy_and_hold_metrics_match_empyrical(shared_data):
    equity = _real_equity(shared_data)
    returns = returns_of(equity)
    metrics = compute_metrics(equity)
    assert metrics.sharpe == pytest.approx(empyrical.sharpe_ratio(returns), rel=1e-9)
    assert metrics.sortino == pytest.approx(empyrical.sortino_ratio(returns), rel=1e-9)
    assert metrics.max_drawdown == pytest.approx(-empyrical.max_drawdown(returns), rel=1e-9)


def test_crypto_annualization_uses_365_periods():
    rng = np.random.default_rng(3)
    equity = _equity(rng.normal(0.001, 0.03, 400), freq="D")
    returns = returns_of(equity)
    metrics = compute_metrics(equity, periods_per_year=365)
    assert metrics.sharpe == pytest.approx(empyrical.sharpe_ratio(returns, annualization=365), rel=1e-9)
    assert metrics.cagr == pytest.approx(empyrical.annual_return(returns, annualization=365), rel=1e-9)


def test_monthly_table_matches_empyrical_aggregation(random_equity):
    table = monthly_returns(random_equity)
    expected = empyrical.aggregate_returns(returns_of(random_equity), "monthly")
    stacked = table.stack().dropna()
    assert list(stacked.index) == list(expected.index)
    np.testing.assert_allclose(stacked.to_numpy(), expected.to_numpy(), rtol=1e-9)
    assert list(table.columns) == list(range(1, 13))


def test_each_month_compounds_its_own_returns_on_a_hand_made_curve():
    index = pd.to_datetime(["2021-01-29", "2021-02-01", "2021-02-26", "2021-03-01", "2021-03-31"], utc=True)
    equity = pd.Series([100.0, 110.0, 99.0, 108.9, 100.188], index=index)
    monthly = monthly_series(equity)
    # the first bar has no return, so January has none; February runs from January's last close
    assert list(monthly.index) == [(2021, 2), (2021, 3)]
    assert monthly.tolist() == pytest.approx([99.0 / 100.0 - 1.0, 100.188 / 99.0 - 1.0])
    assert monthly_returns(equity).loc[2021, [2, 3]].tolist() == pytest.approx(monthly.tolist())


def test_drawdown_and_its_duration_on_a_hand_made_curve():
    index = pd.to_datetime(["2021-01-01", "2021-01-02", "2021-01-05", "2021-01-09", "2021-01-11"], utc=True)
    equity = pd.Series([100.0, 120.0, 90.0, 121.0, 110.0], index=index)
    assert drawdown(equity).tolist() == pytest.approx([0.0, 0.0, 0.25, 0.0, 1 - 110 / 121])
    metrics = compute_metrics(equity)
    assert metrics.max_drawdown == pytest.approx(0.25)
    assert metrics.max_drawdown_days == 7  # from the 01-02 peak until regained on 01-09


def _fills(rows):
    frame = pd.DataFrame(rows, columns=["ts", "strategy", "symbol", "side", "qty", "price", "fee"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def test_round_trips_are_net_of_fees_and_skip_open_positions():
    fills = _fills([
        ("2021-01-04", "s", "AAA", "buy", 10, 100.0, 1.0),
        ("2021-01-05", "s", "AAA", "sell", 4, 110.0, 1.0),
        ("2021-01-06", "s", "AAA", "sell", 6, 90.0, 1.0),   # net: 40 - 60 - 3 = -23
        ("2021-01-07", "s", "BBB", "buy", 5, 20.0, 0.5),
        ("2021-01-08", "s", "BBB", "sell", 5, 30.0, 0.5),   # net: 50 - 1 = 49
        ("2021-01-08", "s", "CCC", "buy", 1, 50.0, 0.0),    # still open
    ])
    trips = round_trips(fills)
    assert trips[["symbol", "pnl", "fees"]].values.tolist() == [["AAA", -23.0, 3.0], ["BBB", 49.0, 1.0]]


def test_a_pairs_two_legs_are_one_round_trip_won_or_lost_as_a_whole():
    fills = _fills([
        ("2021-01-04", "s", "AAA", "buy", 10, 10.0, 0.5),
        ("2021-01-04", "s", "BBB", "sell", 5, 20.0, 0.5),
        ("2021-01-05", "s", "AAA", "sell", 10, 9.0, 0.5),   # this leg lost 10
        ("2021-01-06", "s", "CCC", "buy", 1, 50.0, 0.0),    # a single symbol beside it, still open
        ("2021-01-07", "s", "BBB", "buy", 5, 17.0, 0.5),    # this one won 15: the pair, 5 less 2 of fees
    ]).assign(pair=["AAA/BBB", "AAA/BBB", "AAA/BBB", None, "AAA/BBB"])
    trips = round_trips(fills)
    assert trips[["symbol", "pnl", "fees"]].values.tolist() == [["AAA/BBB", 3.0, 2.0]]
    assert (trips["entry_ts"].iloc[0].day, trips["exit_ts"].iloc[0].day) == (4, 7)
    assert len(round_trips(fills.iloc[:3])) == 0  # one leg flat, the other still held: not a trade yet


def test_trade_statistics():
    fills = _fills([
        ("2021-01-04", "s", "AAA", "buy", 1, 100.0, 0.0), ("2021-01-05", "s", "AAA", "sell", 1, 130.0, 0.0),
        ("2021-01-06", "s", "AAA", "buy", 1, 100.0, 0.0), ("2021-01-07", "s", "AAA", "sell", 1, 90.0, 0.0),
        ("2021-01-08", "s", "AAA", "buy", 1, 100.0, 0.0), ("2021-01-11", "s", "AAA", "sell", 1, 120.0, 0.0),
    ])
    equity = pd.Series([1000.0, 1030.0, 1020.0, 1040.0],
                       index=pd.to_datetime(["2021-01-04", "2021-01-05", "2021-01-07", "2021-01-11"], utc=True))
    metrics = compute_metrics(equity, fills=fills, exposure=pd.Series([100.0, 0.0, 0.0, 120.0], index=equity.index))
    assert metrics.trades == 3
    assert metrics.win_rate == pytest.approx(2 / 3)
    assert metrics.profit_factor == pytest.approx(50 / 10)
    assert metrics.avg_win == pytest.approx(25.0)
    assert metrics.avg_loss == pytest.approx(-10.0)
    assert metrics.turnover == pytest.approx(640.0 / (3 / 252) / 1022.5)


def test_time_in_market_counts_bars_with_a_position_and_gross_exposure_weighs_them_by_equity():
    index = pd.to_datetime(["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-07"], utc=True)
    equity = pd.Series([1000.0, 1030.0, 1020.0, 1040.0], index=index)
    held = pd.Series([100.0, 0.0, 0.0, 520.0], index=index)  # gross value of the open positions
    metrics = compute_metrics(equity, exposure=held)
    assert metrics.time_in_market == pytest.approx(2 / 4)
    assert metrics.avg_gross_exposure == pytest.approx((100 / 1000 + 0 + 0 + 520 / 1040) / 4)
    unknown = compute_metrics(equity)
    assert math.isnan(unknown.time_in_market) and math.isnan(unknown.avg_gross_exposure)


def test_a_run_stored_before_time_in_market_was_named_so_reads_its_exposure_as_time_in_market(random_equity):
    stored = compute_metrics(random_equity).as_dict()
    del stored["time_in_market"], stored["avg_gross_exposure"]
    older = Metrics.from_dict(stored | {"exposure": 0.75})
    assert older.time_in_market == 0.75 and math.isnan(older.avg_gross_exposure)


def test_no_trades_leaves_trade_statistics_undefined(random_equity):
    metrics = compute_metrics(random_equity)
    assert metrics.trades == 0
    assert math.isnan(metrics.win_rate) and math.isnan(metrics.profit_factor)
    assert metrics.as_dict()["win_rate"] is None


def test_metrics_round_trip_through_json_dict(random_equity):
    metrics = compute_metrics(random_equity)
    again = Metrics.from_dict(metrics.as_dict())
    assert again.sharpe == metrics.sharpe and math.isnan(again.win_rate)


def test_an_infinite_profit_factor_and_sortino_survive_the_json_dict_and_still_pass_the_gate():
    winning = Metrics(total_return=0.3, cagr=0.2, volatility=0.1, sharpe=1.4, sortino=math.inf, max_drawdown=0.0,
                      max_drawdown_days=0, trades=40, win_rate=1.0, profit_factor=math.inf, avg_win=10,
                      avg_loss=math.nan, time_in_market=0.5, avg_gross_exposure=0.2, turnover=3.0, positive_months=1.0, months=24)
    stored = json.loads(json.dumps(winning.as_dict(), allow_nan=False))
    again = Metrics.from_dict(stored)
    assert (again.profit_factor, again.sortino) == (math.inf, math.inf) and math.isnan(again.avg_loss)
    assert all(c.passed for c in SuccessGate().evaluate(again))


def test_sortino_without_a_losing_period_is_infinite_as_empyricals():
    equity = pd.Series([100.0, 101.0, 103.02, 103.54, 104.57],
                       index=pd.date_range("2024-01-02", periods=5, freq="B", tz="UTC"))
    assert compute_metrics(equity).sortino == empyrical.sortino_ratio(returns_of(equity)) == math.inf


def test_success_gate_reports_each_criterion_with_its_value():
    good = Metrics(total_return=0.3, cagr=0.2, volatility=0.1, sharpe=1.4, sortino=2.0, max_drawdown=0.08,
                   max_drawdown_days=30, trades=40, win_rate=0.55, profit_factor=1.8, avg_win=10, avg_loss=-5,
                   time_in_market=0.5, avg_gross_exposure=0.2, turnover=3.0, positive_months=0.7, months=24)
    checks = SuccessGate().evaluate(good)
    assert [c.name for c in checks] == ["sharpe", "win_rate", "profit_factor", "max_drawdown", "positive_months",
                                        "trades", "months"]
    assert all(c.passed for c in checks)
    bad = Metrics.from_dict(good.as_dict() | {"sharpe": 0.9, "max_drawdown": 0.2, "win_rate": None})
    failed = {c.name for c in SuccessGate().evaluate(bad) if not c.passed}
    assert failed == {"sharpe", "max_drawdown", "win_rate"}
    assert "sharpe 0.9 > 1: FAIL" == SuccessGate().evaluate(bad)[0].describe()


def test_success_gate_fails_a_run_too_short_to_judge_however_good_its_figures():
    good = Metrics(total_return=0.3, cagr=0.2, volatility=0.1, sharpe=2.9, sortino=4.0, max_drawdown=0.01,
                   max_drawdown_days=5, trades=40, win_rate=0.8, profit_factor=3.0, avg_win=10, avg_loss=-5,
                   time_in_market=0.5, avg_gross_exposure=0.2, turnover=3.0, positive_months=1.0, months=24)
    assert all(c.passed for c in SuccessGate().evaluate(good))
    thin = dataclasses.replace(good, trades=6, months=2)
    failed = [c.describe() for c in SuccessGate().evaluate(thin) if not c.passed]
    assert failed == ["trades 6 >= 30: FAIL", "months 2 >= 6: FAIL"]


@pytest.mark.parametrize(("start", "end", "months"), [
    ("2021-01-28", "2021-06-01", 4),  # 124 days touching six calendar months
    ("2021-01-15", "2021-07-14", 5),
    ("2021-01-15", "2021-07-15", 6),
    ("2021-01-31", "2021-02-28", 1),  # a month on from the 31st ends on the month's last day
])
def test_the_gate_counts_whole_months_from_the_first_bar_to_the_last(start, end, months):
    index = pd.date_range(start, end, freq="D", tz="UTC")
    equity = pd.Series(np.linspace(100_000.0, 120_000.0, len(index)), index=index)
    assert compute_metrics(equity, periods_per_year=365).months == months


def test_a_profit_factor_without_a_losing_trade_passes_and_none_without_trades_fails():
    base = Metrics(total_return=0.3, cagr=0.2, volatility=0.1, sharpe=1.4, sortino=2.0, max_drawdown=0.08,
                   max_drawdown_days=30, trades=40, win_rate=1.0, profit_factor=math.inf, avg_win=10,
                   avg_loss=math.nan, time_in_market=0.5, avg_gross_exposure=0.2, turnover=3.0, positive_months=0.7, months=24)
    no_trades = dataclasses.replace(base, trades=0, win_rate=math.nan, profit_factor=math.nan)
    assert {c.name: c.passed for c in SuccessGate().evaluate(base)}["profit_factor"]
    assert not {c.name: c.passed for c in SuccessGate().evaluate(no_trades)}["profit_factor"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-0.2, max_value=0.2, allow_nan=False), min_size=3, max_size=200))
def test_drawdown_is_a_fraction_and_matches_empyrical(returns):
    equity = _equity(np.asarray(returns))
    dd = drawdown(equity)
    assert ((dd >= -1e-12) & (dd < 1.0)).all()
    assert compute_metrics(equity).max_drawdown == pytest.approx(-empyrical.max_drawdown(returns_of(equity)),
                                                               abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-0.2, max_value=0.2, allow_nan=False), min_size=3, max_size=200))
def test_compounded_months_reproduce_the_total_return(returns):
    equity = _equity(np.asarray(returns))
    months = monthly_returns(equity).stack().dropna()
    assert float(np.prod(1.0 + months) - 1.0) == pytest.approx(compute_metrics(equity).total_return, abs=1e-9)
