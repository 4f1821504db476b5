"""The historical clock skips the steps of accounts where nothing can happen; the result must
be exactly what stepping every holding account on every bar gives, drawdown halts, gaps,
partial fills and shared books included."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.backtest import load, signals
from lab.backtest import BacktestSpec, CrossoverDecisions, backtest_config, run_with_decisions
from lab.backtest.replay import Market
from lab.config import load_config

CONFIG = Path(__file__).resolve().parents[1] / "config" / "trading.json"
SYMBOLS = ["AAPL", "BA", "KO", "MSFT", "XOM", "JPM"]


class _EveryBar(CrossoverDecisions):
    """The same decisions without the exit mask: every holding account is stepped every bar."""

    def exit_mask(self, index, symbols):
        return None


def _run(bars: dict[str, pd.DataFrame], decisions_type: type[CrossoverDecisions], *, accounts: str,
         halt: float, volume_share: float):
    symbols = sorted(bars)
    index = bars[symbols[0]].index
    spec = BacktestSpec(strategies=["sma_cross"], start=index[0].date(), end=index[-1].date(), symbols=symbols,
                        benchmark=symbols[0], accounts=accounts, config_overrides={
                            "strategies": {},
                            "execution": {"initial_cash": 100_000.0, "slippage_bps": 5.0,
                                          "max_volume_share": volume_share,  # entries of 45% of the equity:
                                          "max_order_notional": 1e6, "max_daily_notional": 1e7},
                            "sizing": {"method": "percent", "percent_of_equity": 0.45},
                            "risk": {"max_positions": 100, "max_position_pct": 1.0, "cash_reserve_pct": 0.0,
                                     "max_drawdown_halt": halt}})
    asset_types = dict.fromkeys(symbols, "stocks")
    config = backtest_config(load_config(CONFIG), spec, asset_types)
    flags = {s: signals(b["close"]) for s, b in bars.items()}
    decisions = decisions_type("sma_cross", pd.DataFrame({s: f[0] for s, f in flags.items()}),
                               pd.DataFrame({s: f[1] for s, f in flags.items()}))
    return run_with_decisions(config, spec, bars, decisions, strategies=["sma_cross"], asset_types=asset_types)


@pytest.mark.parametrize(("accounts", "halt", "volume_share"), [
    ("per_symbol", 0.04, 1.0),  # drawdown halts start on bars the clock would otherwise skip
    ("per_symbol", 0.2, 1e-6),  # partial fills keep orders open across bars
    ("shared", 0.12, 1.0),
])
def test_skipping_idle_accounts_changes_nothing(shared_data, accounts, halt, volume_share):
    bars = {s: load(s, shared_data / "stocks").loc["2012-01-01":"2019-12-31"] for s in SYMBOLS}
    # symbols missing bars on different days (a held symbol without a bar keeps its last mark)
    bars = {s: b.iloc[[i for i in range(len(b)) if (i + 3 * j) % 11]] for j, (s, b) in enumerate(bars.items())}
    skipping = _run(bars, CrossoverDecisions, accounts=accounts, halt=halt, volume_share=volume_share)
    stepping = _run(bars, _EveryBar, accounts=accounts, halt=halt, volume_share=volume_share)
    for name in ("equity", "orders", "fills", "positions"):
        pd.testing.assert_frame_equal(getattr(skipping, name), getattr(stepping, name), check_exact=True)
    pd.testing.assert_frame_equal(skipping.strategy_equity, stepping.strategy_equity, check_exact=True)
    assert len(skipping.fills) > 10
    assert skipping.funnel == stepping.funnel
    unhalted = _run(bars, CrossoverDecisions, accounts=accounts, halt=1.0, volume_share=volume_share)
    if halt < 0.1:  # the halt did stop entries, so the skipped bars' equity peaks were needed
        assert len(skipping.orders) < len(unhalted.orders)
        assert any(reason.startswith("entries halted: drawdown") for reason in skipping.funnel["sma_cross"]["reasons"])


def test_the_funnel_of_given_entry_flags_counts_signals_only(shared_data):
    bars = {s: load(s, shared_data / "stocks").loc["2016-01-01":"2019-12-31"] for s in SYMBOLS[:3]}
    result = _run(bars, CrossoverDecisions, accounts="shared", halt=1.0, volume_share=1.0)
    funnel = result.funnel["sma_cross"]
    assert set(funnel) == {"signals", "ordered", "refused", "filled", "reasons"}  # no engine screening
    entries = result.orders[result.orders["intent"] == "entry"]
    assert funnel["signals"] == funnel["ordered"] + funnel["refused"] and funnel["ordered"] == len(entries) > 0


def test_market_places_each_symbols_bars_on_the_merged_clock():
    days = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")

    def frame(stamps, base: float) -> pd.DataFrame:
        n = len(stamps)
        return pd.DataFrame({c: [base + i for i in range(n)] for c in ("open", "high", "low", "close", "volume")},
                            index=pd.DatetimeIndex(stamps))

    # AAA and CCC share their stamps; BBB has others
    bars = {"AAA": frame(days[[0, 2]], 10.0), "BBB": frame(days[[1, 2, 3]], 20.0), "CCC": frame(days[[0, 2]], 30.0)}
    market = Market.from_bars(bars, ["AAA", "BBB", "CCC"], days[0], days[-1], dict.fromkeys(bars, "stocks"))
    assert list(market.index) == list(days)
    assert market.has_bar.tolist() == [[True, False, True], [False, True, False], [True, True, True],
                                       [False, True, False]]
    assert market.arrays["close"][2].tolist() == [11.0, 21.0, 31.0]
    bar = market.bar(3, 1)
    assert (bar.ts, bar.open, bar.volume) == (days[3], 22.0, 22.0)
    assert type(bar.open) is float

    bars["CCC"] = frame(days[[0, 2, 2]], 30.0)  # a repeated stamp
    with pytest.raises(ValueError, match="CCC: more than one bar"):
        Market.from_bars(bars, ["AAA", "BBB", "CCC"], days[0], days[-1], dict.fromkeys(bars, "stocks"))


def test_the_clock_hands_out_datetimes_unless_a_bar_has_nanoseconds():
    days = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    frame = pd.DataFrame(dict.fromkeys(("open", "high", "low", "close", "volume"), 1.0), index=days)
    market = Market.from_bars({"AAA": frame}, ["AAA"], days[0], days[-1], {"AAA": "stocks"})
    assert [type(s) for s in market.stamps] == [datetime] * 3
    assert market.stamps == list(days)

    odd = frame.set_axis(days + pd.Timedelta(nanoseconds=1))
    market = Market.from_bars({"AAA": odd}, ["AAA"], odd.index[0], odd.index[-1], {"AAA": "stocks"})
    assert market.stamps == list(odd.index) and market.stamps[0].nanosecond == 1


def test_result_frames_keep_their_columns_types(shared_data):
    bars = {s: load(s, shared_data / "stocks").loc["2018-01-01":"2019-12-31"] for s in SYMBOLS[:2]}
    result = _run(bars, CrossoverDecisions, accounts="per_symbol", halt=1.0, volume_share=1.0)
    assert len(result.orders) > 4 and len(result.fills) > 4
    for frame, texts, numbers in (
        (result.orders, ["client_order_id", "strategy", "symbol", "asset_type", "side", "order_type", "intent",
                         "status"], ["qty", "filled_qty", "avg_fill_price"]),
        (result.fills, ["fill_id", "client_order_id", "strategy", "symbol", "side"],
         ["qty", "price", "fee", "realized_pnl"]),
    ):
        assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
        assert all(frame[c].dtype == "str" for c in texts), frame.dtypes
        assert all(frame[c].dtype == "float64" for c in numbers), frame.dtypes
    assert set(result.orders["side"]) == {"buy", "sell"} and set(result.orders["intent"]) <= {"entry", "exit"}
    buys = result.fills[result.fills["side"] == "buy"]
    # an entry realizes only its fee (as the difference of running totals, so to rounding)
    assert buys["realized_pnl"].to_numpy() == pytest.approx(-buys["fee"].to_numpy(), abs=1e-6)


def test_a_crypto_entry_on_a_weekend_counts_the_stock_entry_pending_since_friday_at_the_stocks_price():
    stocks = pd.date_range("2024-01-01", "2024-01-31", freq="B", tz="UTC")
    days = pd.date_range("2024-01-01", "2024-01-31", freq="D", tz="UTC")
    bars = {"AAA": pd.DataFrame({"open": 10.0, "high": 10.0, "low": 10.0, "close": 10.0, "volume": 1e6}, index=stocks),
            "BTC": pd.DataFrame({"open": 30_000.0, "high": 30_000.0, "low": 30_000.0, "close": 30_000.0,
                                 "volume": 1e3}, index=days)}
    entries = pd.DataFrame(False, index=days, columns=["AAA", "BTC"])
    entries.loc["2024-01-05", "AAA"] = True  # a Friday: its order waits for Monday's open
    entries.loc["2024-01-06", "BTC"] = True  # the Saturday after
    spec = BacktestSpec(strategies=["sma_cross"], start=days[0].date(), end=days[-1].date(), symbols=["AAA", "BTC"],
                        benchmark="AAA", accounts="shared", config_overrides={
                            "strategies": {}, "sizing": {"method": "fixed", "fixed_amount": 20_000.0},
                            "risk": {"max_positions": 10, "max_position_pct": 1.0, "cash_reserve_pct": 0.15}})
    asset_types = {"AAA": "stocks", "BTC": "crypto"}
    config = backtest_config(load_config(CONFIG), spec, asset_types)
    decisions = CrossoverDecisions("sma_cross", entries, entries & False)
    result = run_with_decisions(config, spec, bars, decisions, strategies=["sma_cross"], asset_types=asset_types)
    funnel = result.funnel["sma_cross"]
    assert (funnel["signals"], funnel["ordered"]) == (2, 2), funnel["reasons"]  # 20,000 pending is not 60 million
    assert sorted(result.fills["symbol"]) == ["AAA", "BTC"]


def test_a_cash_sized_entry_spends_no_more_than_the_position_cap_when_rounding_hides_the_cut():
    days = pd.date_range("2024-01-02", periods=5, freq="B", tz="UTC")
    bars = {"AAA": pd.DataFrame({"open": [1000.0, 999.5, 999.5, 999.5, 999.5], "high": 1001.0, "low": 999.0,
                                 "close": 1000.0, "volume": 1e9}, index=days)}
    entries = pd.DataFrame(False, index=days, columns=["AAA"])
    entries.iloc[0] = True
    spec = BacktestSpec(strategies=["sma_cross"], start=days[0].date(), end=days[-1].date(), symbols=["AAA"],
                        benchmark="AAA", accounts="shared", config_overrides={
                            "strategies": {}, "execution": {"initial_cash": 100_000.0, "slippage_bps": 10.0,
                                                            "fee_bps": {"stocks": 1.0, "crypto": 1.0}},
                            # 5.004% of the equity is 5,004: 4 shares at 1,000 with the costs, as the 5% cap's 5,000
                            "sizing": {"method": "all_in", "all_in_fraction": 0.05004},
                            "risk": {"max_positions": 10, "max_position_pct": 0.05, "cash_reserve_pct": 0.15}})
    config = backtest_config(load_config(CONFIG), spec, {"AAA": "stocks"})
    result = run_with_decisions(config, spec, bars, CrossoverDecisions("sma_cross", entries, entries & False),
                                strategies=["sma_cross"], asset_types={"AAA": "stocks"})
    (fill,) = result.fills.itertuples()
    assert fill.qty * fill.price <= 0.05 * 100_000  # at the lower open the whole 5,004 bought a 5th share


def test_a_run_starting_on_a_stock_holiday_marks_the_benchmark_at_its_last_close_before_the_start():
    # a stocks and crypto run from New Year's Day: the crypto bar puts the holiday on the clock,
    # where the stock benchmark's value is its last close, on the Friday before
    stocks = pd.date_range("2023-12-27", "2024-01-12", freq="B", tz="UTC").drop(pd.Timestamp("2024-01-01", tz="UTC"))
    days = pd.date_range("2023-12-27", "2024-01-12", freq="D", tz="UTC")
    closes = pd.Series(range(100, 100 + len(stocks)), index=stocks, dtype=float)
    bars = {"AAA": pd.DataFrame({"open": closes, "high": closes, "low": closes, "close": closes, "volume": 1e6}),
            "BTC": pd.DataFrame({"open": 30_000.0, "high": 30_000.0, "low": 30_000.0, "close": 30_000.0,
                                 "volume": 1e3}, index=days)}
    entries = pd.DataFrame(False, index=days, columns=["AAA", "BTC"])
    spec = BacktestSpec(strategies=["sma_cross"], start=datetime(2024, 1, 1).date(), end=days[-1].date(),
                        symbols=["AAA", "BTC"], benchmark="AAA", config_overrides={"strategies": {}})
    asset_types = {"AAA": "stocks", "BTC": "crypto"}
    config = backtest_config(load_config(CONFIG), spec, asset_types)
    result = run_with_decisions(config, spec, bars, CrossoverDecisions("sma_cross", entries, entries & False),
                                strategies=["sma_cross"], asset_types=asset_types)
    first = result.equity.iloc[0]
    assert first["ts"] == pd.Timestamp("2024-01-01", tz="UTC")
    assert first["benchmark_close"] == closes["2023-12-29"]
