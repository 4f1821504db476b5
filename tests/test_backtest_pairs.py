"""Pairs in a backtest: the historical clock routes a pair signal to the account holding both
legs, and the engine's step enters and exits the two legs together, on real daily bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.backtest import load
from lab.backtest import BacktestSpec, EngineDecisions, backtest_config, load_result, run_with_decisions, save_result
from lab.config import load_config
from lab.db import connect
from lab.trading.market import FeatureFrames
from tests.fakes.trading import FixedPredictions

CONFIG = Path(__file__).resolve().parents[1] / "config" / "trading.json"
SYMBOLS = ["KO", "PEP", "XOM", "CVX"]


class Always:
    """Model confidence 0.9 that the ratio rises at every bar (so only cheap spreads are bought)."""

    def at(self, as_of):
        return FixedPredictions(0.9)


def run_pairs(shared_data: Path, accounts: str, *, shorts: bool = True):
    bars = {s: load(s, shared_data / "stocks").loc["2014-01-01":"2018-12-31"] for s in SYMBOLS}
    spec = BacktestSpec(strategies=["pairs"], start="2015-01-02", end="2018-12-31", symbols=SYMBOLS,
                        benchmark="KO", accounts=accounts, config_overrides={
                            "strategies": {"pairs": {"enabled": True, "asset_classes": ["stocks"],
                                                     "min_confidence": 0.7, "max_positions": 2,
                                                     "params": {"min_correlation": 0.5}}},
                            "sizing": {"method": "percent", "percent_of_equity": 0.2},
                            "risk": {"max_positions": 8, "max_position_pct": 0.2, "cash_reserve_pct": 0.1,
                                     "allow_shorts": shorts}})
    asset_types = dict.fromkeys(SYMBOLS, "stocks")
    config = backtest_config(load_config(CONFIG), spec, asset_types)
    decisions = EngineDecisions(config, Always(), FeatureFrames(bars, benchmarks=dict.fromkeys(SYMBOLS, "KO")),
                                {"stocks": SYMBOLS}, basis="a fixed confidence of 0.9")
    return run_with_decisions(config, spec, bars, decisions, strategies=["pairs"], asset_types=asset_types)


def test_pairs_enter_and_exit_as_two_opposite_legs_in_one_account(shared_data):
    result = run_pairs(shared_data, "shared")
    filled = result.orders[result.orders["status"] == "filled"]
    entries = filled[filled["intent"] == "entry"]
    assert len(entries) >= 4
    exits = filled[filled["intent"] != "entry"]
    assert set(exits["intent"]) >= {"exit", "time_exit"}  # the spread back at its mean; the holding time
    # every decision placed legs in opposite pairs: as many buys as sells, entering or leaving
    for _, legs in pd.concat([entries, exits]).groupby(["ts", "intent"]):
        assert (legs["side"] == "buy").sum() == (legs["side"] == "sell").sum() > 0
    # the books balance on every bar with short legs held
    equity = result.equity
    np.testing.assert_allclose(equity["cash"] + equity["positions_value"], equity["equity"], rtol=1e-12)
    shorts = result.positions[result.positions["qty"] < 0]
    assert not shorts.empty


def test_a_pair_is_one_trade_in_the_figures_and_keeps_its_legs_linked_when_stored(shared_data, tmp_path):
    result = run_pairs(shared_data, "shared")
    assert result.fills["pair"].notna().all()  # every fill is a leg
    exits = result.orders[(result.orders["status"] == "filled") & (result.orders["intent"] != "entry")]
    closed_pairs = exits.groupby(["ts", "pair"]).ngroups  # both legs leave in one decision
    assert closed_pairs > 0 and len(exits) == 2 * closed_pairs
    assert result.metrics()["pairs"].trades == closed_pairs
    engine = connect(f"sqlite:///{tmp_path / 'lab.db'}")
    save_result(engine, result)
    closes = pd.DataFrame({s: load(s, shared_data / "stocks")["close"] for s in SYMBOLS})
    stored = load_result(engine, result.portfolio, closes=closes)
    assert stored.fills["pair"].tolist() == result.fills["pair"].tolist()
    assert stored.metrics()["pairs"].trades == closed_pairs


def test_per_symbol_accounts_never_trade_a_pair_and_say_why(shared_data):
    result = run_pairs(shared_data, "per_symbol")
    assert result.orders.empty
    assert isinstance(result.equity, pd.DataFrame) and len(result.equity) > 0
    funnel = result.funnel["pairs"]
    assert funnel["signals"] == funnel["refused"] > 0
    assert funnel["reasons"] == {"its legs are in two accounts (per-symbol accounts)": funnel["refused"]}


def test_pairs_without_shorts_allowed_are_refused_and_the_funnel_says_so(shared_data):
    result = run_pairs(shared_data, "shared", shorts=False)
    assert result.orders.empty
    funnel = result.funnel["pairs"]
    assert funnel["signals"] == funnel["refused"] > 0 and funnel["ordered"] == 0
    # every pair the books could size was refused for its short leg (a negative hedge ratio sizes none)
    reasons = funnel["reasons"]
    assert all("short entries disabled (risk.allow_shorts is false)" in reason or "a positive hedge ratio" in reason
               for reason in reasons)
    assert sum(n for reason, n in reasons.items() if "short entries disabled" in reason) > 0
