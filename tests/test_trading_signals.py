"""The signal engine: EV and risk/reward, the strategy rules plus ML confidence, the filters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lab.config import load_config
from lab.strategy import get_strategy
from lab.trading.model import Fill, Intent, Side
from lab.trading.portfolio import PortfolioManager
from lab.trading.predictions import NoActiveModel, Payoff, Prediction
from lab.trading.signals import (
    SIGNAL_COLUMNS,
    TradeSignalEngine,
    calculate_ev,
    calculate_risk_reward,
    exit_decisions,
    kelly_odds,
    side_payoff,
)
from lab.trading.step import Candidate
from tests.fakes.trading import PAYOFF, utc, write_config

AS_OF = utc(2024, 1, 8)


class Table:
    """A FeatureSource over a hand-written table of latest rows."""

    def __init__(self, rows: dict[str, dict[str, float]]):
        self.frame = pd.DataFrame.from_dict(rows, orient="index")
        self.asked: list[tuple[str, list[str]]] = []

    def latest(self, feature_set, symbols, as_of):
        self.asked.append((feature_set, list(symbols)))
        return self.frame.loc[[s for s in symbols if s in self.frame.index]]


class ByColumn:
    """Confidence read from a column of the rows (a deterministic PredictionSource) of a model
    with ``payoff``."""

    def __init__(self, payoff: Payoff = PAYOFF):
        self.payoff = payoff

    def predict(self, strategy, rows):
        return Prediction(rows["confidence"].to_numpy(dtype=float), model_version=3, payoff=self.payoff)


class NoModel:
    def predict(self, strategy, rows):
        raise NoActiveModel(f"strategy {strategy!r} has no active model version")


MOMENTUM = {
    "AAPL": {"ret_20": 0.20, "volume_ratio_20": 1.5, "confidence": 0.80},
    "MSFT": {"ret_20": 0.15, "volume_ratio_20": 1.2, "confidence": 0.55},   # below 0.6
    "IBM": {"ret_20": 0.18, "volume_ratio_20": 0.2, "confidence": 0.95},    # no volume confirmation
    "GOOG": {"ret_20": -0.10, "volume_ratio_20": 2.0, "confidence": 0.99},  # not a top performer
}
PRICES = {"AAPL": 100.0, "MSFT": 200.0, "IBM": 50.0, "GOOG": 80.0}


@pytest.fixture
def config(tmp_path):
    return load_config(write_config(tmp_path / "c.json"))


def test_expected_value_and_risk_reward():
    assert calculate_ev(0.6, 0.10, 0.05) == pytest.approx(0.6 * 0.10 - 0.4 * 0.05)
    assert calculate_risk_reward(100.0, 95.0, 110.0) == pytest.approx(2.0)


@pytest.mark.parametrize("args", [(100.0, 100.0, 110.0), (float("nan"), 95.0, 110.0), (100.0, -1.0, 110.0)])
def test_risk_reward_rejects_impossible_levels(args):
    with pytest.raises(ValueError, match="risk/reward needs"):
        calculate_risk_reward(*args)


def test_ev_rejects_a_probability_outside_0_1():
    with pytest.raises(ValueError, match="probability"):
        calculate_ev(1.2, 0.1, 0.05)


def test_momentum_signals_pass_the_rule_and_the_confidence_filter_with_levels(config):
    engine = TradeSignalEngine(config, ByColumn(), Table(MOMENTUM), as_of=AS_OF, prices=PRICES)
    signals = engine.find_momentum_signals(list(MOMENTUM))
    assert list(signals.columns) == SIGNAL_COLUMNS
    assert signals["symbol"].tolist() == ["AAPL"]
    row = signals.iloc[0]
    assert (row.entry, row.stop_loss, row.take_profit) == pytest.approx((100.0, 95.0, 110.0))
    assert row.rr == pytest.approx(2.0) and row.model_version == 3
    assert row.ev == pytest.approx(calculate_ev(0.8, 0.10, 0.05))


def test_a_buy_is_priced_at_its_models_payoff_not_at_the_strategys_levels(config):
    """Momentum's model gives P(close higher in 10 bars), not P(take-profit before stop): its
    EV is what that event's training rows returned, +3% when up and -2% when not."""
    payoff = Payoff(win=0.03, loss=-0.02)
    engine = TradeSignalEngine(config, ByColumn(payoff), Table(MOMENTUM), as_of=AS_OF, prices=PRICES)
    row = engine.find_momentum_signals(list(MOMENTUM)).iloc[0]
    assert row.symbol == "AAPL" and row.confidence == pytest.approx(0.8)
    assert row.ev == pytest.approx(0.8 * 0.03 + 0.2 * -0.02)
    assert row.odds == pytest.approx(0.03 / 0.02)  # Kelly's: the win per unit of loss
    # the declared levels still place the orders and pass the risk/reward filter
    assert (row.stop_loss, row.take_profit, row.rr) == pytest.approx((95.0, 110.0, 2.0))
    assert Candidate.from_record(row.to_dict()).odds == pytest.approx(1.5)


def test_a_sell_under_a_direction_label_gains_the_down_moves_and_loses_the_up_moves(config):
    """A pair sold at a rich spread wins when the ratio does not rise (1 - P(up) = 0.8),
    gaining what such rows lost (2%), and otherwise loses what rising rows gained (3%)."""
    rows = {"AAPL/MSFT": {"pair_corr": 0.9, "spread_z": 2.5, "hedge_ratio": 0.5, "confidence": 0.2}}
    engine = TradeSignalEngine(config, ByColumn(Payoff(win=0.03, loss=-0.02)), Table(rows), as_of=AS_OF,
                               prices=PRICES)
    row = engine.find_pairs_signals(["AAPL", "MSFT"]).iloc[0]
    assert (row.side, row.confidence) == ("sell", pytest.approx(0.8))
    assert row.ev == pytest.approx(0.8 * 0.02 + 0.2 * -0.03)
    assert row.odds == pytest.approx(0.02 / 0.03)


def test_a_side_that_gains_nothing_when_right_gets_no_kelly_odds():
    assert kelly_odds(*side_payoff(Payoff(win=-0.01, loss=-0.03), "buy")) == 0.0


def test_a_confident_signal_without_a_positive_expected_value_is_not_taken(config):
    """P(up) = 0.8 but up moves paid 1% and the others lost 5%: EV -0.2%, no trade."""
    engine = TradeSignalEngine(config, ByColumn(Payoff(win=0.01, loss=-0.05)), Table(MOMENTUM), as_of=AS_OF,
                               prices=PRICES)
    assert engine.find_momentum_signals(list(MOMENTUM)).empty
    assert engine.screened["momentum"].rule == 1 and engine.screened["momentum"].confident == 0


def test_generate_skips_a_model_without_a_payoff_and_says_to_retrain_it(config):
    class Untrained:
        def predict(self, strategy, rows):
            return Prediction(np.full(len(rows), 0.9), 7, Payoff.of(None, strategy=strategy, version=7))

    engine = TradeSignalEngine(config, Untrained(), Table(MOMENTUM), as_of=AS_OF, prices=PRICES)
    assert engine.generate({"stocks": list(MOMENTUM)}).empty
    assert engine.skipped["momentum"].startswith("strategy 'momentum' model v7 has no payoff")
    assert "`lab tune --strategy momentum`" in engine.skipped["momentum"]


def test_max_positions_per_strategy_keeps_the_best_expected_value(config):
    rows = {f"S{i}": {"ret_20": 0.1 + i / 100, "volume_ratio_20": 2.0, "confidence": 0.6 + i / 100}
            for i in range(6)}
    engine = TradeSignalEngine(config, ByColumn(), Table(rows), as_of=AS_OF, prices={s: 10.0 for s in rows})
    signals = engine.signals_for("momentum", list(rows))
    assert signals["symbol"].tolist() == ["S5", "S4", "S3"][:len(signals)]
    assert len(signals) <= 3


def test_a_strategy_below_the_minimum_risk_reward_gives_no_signals(tmp_path):
    config = load_config(write_config(tmp_path / "c.json", strategies={
        "momentum": {"stop_loss": 0.08, "take_profit": 0.12, "params": {"top_quantile": 0.5}}}))
    engine = TradeSignalEngine(config, ByColumn(), Table(MOMENTUM), as_of=AS_OF, prices=PRICES)
    assert engine.find_momentum_signals(list(MOMENTUM)).empty


def test_generate_skips_a_strategy_without_a_model_and_says_why(config):
    engine = TradeSignalEngine(config, NoModel(), Table(MOMENTUM), as_of=AS_OF, prices=PRICES)
    assert engine.generate({"stocks": list(MOMENTUM)}).empty
    assert "no active model" in engine.skipped["momentum"]


def test_swing_uses_technical_confluence_in_an_uptrend(config):
    rows = {
        "AAPL": {"close_to_sma_200": 0.1, "rsi_14": 30, "macd_cross_up": 0, "close_to_sma_50": 0.1, "confidence": 0.9},
        "MSFT": {"close_to_sma_200": -0.1, "rsi_14": 30, "macd_cross_up": 1, "close_to_sma_50": 0.0, "confidence": 0.9},
    }
    engine = TradeSignalEngine(config, ByColumn(), Table(rows), as_of=AS_OF, prices=PRICES)
    assert engine.find_swing_signals(list(rows))["symbol"].tolist() == ["AAPL"]


def test_pairs_are_one_signal_per_pair_of_symbols(config):
    rows = {"AAPL/MSFT": {"pair_corr": 0.9, "spread_z": -2.5, "confidence": 0.8},
            "AAPL/IBM": {"pair_corr": 0.4, "spread_z": 3.0, "confidence": 0.9}}
    table = Table(rows)
    engine = TradeSignalEngine(config, ByColumn(), table, as_of=AS_OF, prices=PRICES)
    signals = engine.find_pairs_signals(["MSFT", "AAPL", "IBM"])
    assert table.asked == [("pairs@1", ["AAPL/IBM", "AAPL/MSFT", "IBM/MSFT"])]
    assert signals["symbol"].tolist() == ["AAPL/MSFT"]
    assert signals["entry"].iloc[0] == pytest.approx(100.0 / 200.0)
    assert np.isfinite(signals["ev"]).all()


# --- exits: the manager's levels and the strategies' exit rules ----------------------------------

def held(config, *symbols: str) -> PortfolioManager:
    pm = PortfolioManager(config)
    for n, symbol in enumerate(symbols):
        pm.apply_fill(Fill(fill_id=f"f{n}", client_order_id=f"c{n}", portfolio="paper", strategy="momentum",
                           symbol=symbol, side=Side.BUY, qty=10, price=PRICES[symbol], fee=0.0, ts=AS_OF),
                      asset_type="stocks")
    pm.mark(PRICES)
    return pm


def test_a_strategy_without_an_exit_rule_never_exits_by_rule_nor_reads_features(config):
    table = Table(MOMENTUM)
    assert exit_decisions(config, held(config, "AAPL", "MSFT"), table, AS_OF, []) == []
    assert table.asked == []


def test_an_exit_rule_closes_the_flagged_positions(config, monkeypatch):
    momentum = get_strategy("momentum")
    monkeypatch.setattr(momentum, "exit_rule", lambda self, latest: latest["ret_20"] < 0.17)
    decisions = exit_decisions(config, held(config, "AAPL", "MSFT"), Table(MOMENTUM), AS_OF, [])
    assert [(d.position.symbol, d.intent) for d in decisions] == [("MSFT", Intent.EXIT)]
    assert decisions[0].reason == "momentum exit rule"


def test_a_stop_comes_before_the_exit_rule_and_a_position_exits_once(config, monkeypatch):
    momentum = get_strategy("momentum")
    monkeypatch.setattr(momentum, "exit_rule", lambda self, latest: latest["ret_20"] > -1)
    pm = held(config, "AAPL")
    pm.positions[("momentum", "AAPL")].stop_loss = 101.0
    decisions = exit_decisions(config, pm, Table(MOMENTUM), AS_OF, [])
    assert [(d.position.symbol, d.intent) for d in decisions] == [("AAPL", Intent.STOP_LOSS)]


def test_every_strategys_declared_and_configured_exits_can_pass_the_risk_reward_filter():
    """An exit pair below 1:2 would silently stop a strategy from ever signalling."""
    from pathlib import Path

    from lab.config import load_config
    from lab.strategy import available_strategies
    from lab.trading.signals import MIN_RISK_REWARD

    config = load_config(Path(__file__).resolve().parents[1] / "config" / "trading.json")
    for name, declared in available_strategies().items():
        assert declared.take_profit / declared.stop_loss >= MIN_RISK_REWARD - 1e-9, name
        configured = config.strategies.get(name)
        if configured and configured.stop_loss and configured.take_profit:
            assert configured.take_profit / configured.stop_loss >= MIN_RISK_REWARD - 1e-9, name
