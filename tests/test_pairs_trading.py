"""Pairs as the engine trades them: one signal, two legs placed together in the hedge ratio,
exits judged on the pair (its P&L against its gross notional, the spread back at its mean,
a leg left alone), persisted on real SQLite and PostgreSQL through the trading cycle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from lab.config import load_config
from lab.db import models as db
from lab.features import compute_features, pair_bars
from lab.runtime import LabContext
from lab.settings import Settings
from lab.trading.cycle import run_trading_cycle
from lab.trading.market import FeatureFrames
from lab.trading.model import Fill, Intent, Order, Side
from lab.trading.paper import PaperTradingExecutor
from lab.trading.portfolio import PortfolioManager
from lab.trading.predictions import Prediction
from lab.trading.signals import TradeSignalEngine, exit_decisions
from lab.trading.store import replay_ledger
from tests.fakes.trading import PAYOFF, FixedPredictions, seed_bars, sessions, utc, write_config

DAYS = [d.to_pydatetime() for d in sessions("stocks", "2023-03-01", "2023-03-10")]
PAIRS_ONLY = {"pairs": {"asset_classes": ["stocks"], "min_confidence": 0.7, "max_positions": 1}}
SHORTS = {"max_positions": 6, "max_position_pct": 0.05, "cash_reserve_pct": 0.15, "allow_shorts": True}


class PairTable:
    """A FeatureSource whose pair rows the test sets (other sets: no rows)."""

    def __init__(self, **rows: dict[str, float]):
        self.rows = {k.replace("_", "/"): v for k, v in rows.items()}

    def latest(self, feature_set, symbols, as_of):
        if feature_set != "pairs@1":
            return pd.DataFrame()
        return pd.DataFrame.from_dict({s: self.rows[s] for s in symbols if s in self.rows}, orient="index")

    def held_spread_z(self, pair, hedge_ratio, as_of):
        """The spread a position holds is the one its row sets (the tests here do not re-fit it)."""
        return self.rows[pair]["spread_z"]


class OddsOfUp:
    """The model's probability that the hedged spread rises, per pair."""

    def __init__(self, odds: dict[str, float]):
        self.odds = odds

    def predict(self, strategy, rows):
        return Prediction(rows.index.map(self.odds).to_numpy(dtype=float), model_version=2, payoff=PAYOFF)


# --- signals: the side follows the spread, the confidence is the odds of reversion -----------------

def test_a_rich_spread_is_sold_and_a_cheap_one_bought_with_the_odds_of_reversion(tmp_path):
    config = load_config(write_config(tmp_path / "c.json", strategies={"pairs": PAIRS_ONLY["pairs"] | {"max_positions": 2}}))
    table = PairTable(AAPL_MSFT={"pair_corr": 0.9, "spread_z": 2.4, "hedge_ratio": 0.8},
                      AAPL_IBM={"pair_corr": 0.9, "spread_z": -2.2, "hedge_ratio": 1.1})
    engine = TradeSignalEngine(config, OddsOfUp({"AAPL/MSFT": 0.2, "AAPL/IBM": 0.75}), table, as_of=DAYS[0],
                               prices={"AAPL": 100.0, "MSFT": 200.0, "IBM": 50.0})
    signals = engine.find_pairs_signals(["AAPL", "MSFT", "IBM"]).set_index("symbol")
    assert signals.loc["AAPL/MSFT", ["side", "confidence", "hedge_ratio"]].tolist() == ["sell", pytest.approx(0.8), 0.8]
    assert signals.loc["AAPL/IBM", ["side", "confidence", "hedge_ratio"]].tolist() == ["buy", 0.75, 1.1]
    # a sold spread's levels are mirrored: stop above the entry ratio, target below
    rich = signals.loc["AAPL/MSFT"]
    assert rich.stop_loss > rich.entry > rich.take_profit


def test_a_strategy_giving_a_side_that_is_neither_buy_nor_sell_is_named(tmp_path, monkeypatch):
    from strategies.pairs import Pairs

    monkeypatch.setattr(Pairs, "sides", lambda self, latest: pd.Series("long", index=latest.index))
    config = load_config(write_config(tmp_path / "c.json", strategies=PAIRS_ONLY))
    engine = TradeSignalEngine(config, OddsOfUp({"AAPL/MSFT": 0.2}), PairTable(AAPL_MSFT=DIVERGED), as_of=DAYS[0],
                               prices={"AAPL": 100.0, "MSFT": 200.0})
    with pytest.raises(ValueError, match=r"strategy 'pairs': sides\(\) must give 'buy' or 'sell', got \[\"'long'\"\]"):
        engine.find_pairs_signals(["AAPL", "MSFT"])


def test_momentum_ranks_on_the_lookback_it_is_asked_for(tmp_path):
    config = load_config(write_config(tmp_path / "c.json"))
    rows = pd.DataFrame({"ret_20": [0.30, 0.01], "ret_60": [0.01, 0.40], "volume_ratio_20": [2.0, 2.0],
                         "confidence": [0.9, 0.9]}, index=["AAPL", "MSFT"])

    class Rows:
        def latest(self, feature_set, symbols, as_of):
            return rows.loc[list(symbols)]

    class Confidence:
        def predict(self, strategy, frame):
            return Prediction(frame["confidence"].to_numpy(), model_version=1, payoff=PAYOFF)

    engine = TradeSignalEngine(config, Confidence(), Rows(), as_of=DAYS[0], prices={"AAPL": 10.0, "MSFT": 10.0})
    assert engine.find_momentum_signals(["AAPL", "MSFT"], lookback_days=20)["symbol"].tolist() == ["AAPL"]
    assert engine.find_momentum_signals(["AAPL", "MSFT"], lookback_days=60)["symbol"].tolist() == ["MSFT"]
    with pytest.raises(ValueError, match="lookback_days: 30 is not one of 5, 20, 60"):
        engine.find_momentum_signals(["AAPL", "MSFT"], lookback_days=30)
    with pytest.raises(ValueError, match="timeframe must be '1d', got '1h'"):
        engine.find_swing_signals(["AAPL"], timeframe="1h")


# --- exits: the pair's legs are judged together -----------------------------------------------------

def pair_book(tmp_path, *, first: float, second: float, opened=DAYS[0]) -> PortfolioManager:
    """Long 10 AAPL at 100, short 8 MSFT at 125 (a pair entered at DAYS[0]), marked at the prices given."""
    config = load_config(write_config(tmp_path / "c.json", strategies=PAIRS_ONLY, risk=SHORTS))
    pm = PortfolioManager(config)
    for symbol, side, qty, price in (("AAPL", Side.BUY, 10, 100.0), ("MSFT", Side.SELL, 8, 125.0)):
        order = Order(client_order_id=f"c-{symbol}", portfolio="paper", strategy="pairs", symbol=symbol,
                      asset_type="stocks", side=side, qty=qty, created_at=opened, pair="AAPL/MSFT")
        pm.apply_fill(Fill(fill_id=f"f-{symbol}", client_order_id=order.client_order_id, portfolio="paper",
                           strategy="pairs", symbol=symbol, side=side, qty=qty, price=price, fee=0.0, ts=opened),
                      asset_type="stocks", order=order)
    pm.mark({"AAPL": first, "MSFT": second})
    return pm


@pytest.mark.parametrize(("first", "second", "intent"), [
    (95.0, 130.0, None),                 # -50 - 40 = -90 on 2,000 gross: -4.5%, inside the stop
    (92.0, 131.0, Intent.STOP_LOSS),     # -80 - 48 = -128: -6.4% <= -5%
    (112.0, 115.0, Intent.TAKE_PROFIT),  # +120 + 80 = +200: +10%
])
def test_both_legs_exit_on_the_pairs_pnl_against_its_gross_notional(tmp_path, first, second, intent):
    decisions = pair_book(tmp_path, first=first, second=second).exits(DAYS[1])
    if intent is None:
        assert decisions == []
    else:
        assert {(d.position.symbol, d.intent) for d in decisions} == {("AAPL", intent), ("MSFT", intent)}
        assert all("pair AAPL/MSFT" in d.reason for d in decisions)


def test_a_leg_whose_partner_is_gone_is_closed_but_not_while_the_partner_is_being_entered(tmp_path):
    pm = pair_book(tmp_path, first=100.0, second=125.0)
    pm.apply_fill(Fill(fill_id="close", client_order_id="x", portfolio="paper", strategy="pairs", symbol="MSFT",
                       side=Side.BUY, qty=8, price=125.0, fee=0.0, ts=DAYS[1]), asset_type="stocks")
    [lone] = pm.exits(DAYS[1])
    assert (lone.position.symbol, lone.intent) == ("AAPL", Intent.EXIT) and "MSFT leg is not held" in lone.reason
    entering = Order(client_order_id="again", portfolio="paper", strategy="pairs", symbol="MSFT", asset_type="stocks",
                     side=Side.SELL, qty=8, created_at=DAYS[1], pair="AAPL/MSFT")
    assert pm.exits(DAYS[1], [entering]) == []


def test_a_pair_exits_after_its_holding_time(tmp_path):
    pm = pair_book(tmp_path, first=100.0, second=125.0, opened=utc(2023, 1, 3))
    assert {d.intent for d in pm.exits(utc(2023, 1, 24))} == {Intent.TIME_EXIT}  # 21 days > 20


def _legs_drifting_apart(n: int = 160, seed: int = 7) -> dict[str, pd.DataFrame]:
    """AAPL and MSFT whose log prices move together in a hedge ratio that drifts from 0.5 to 2."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2023-01-02", periods=n, freq="D", tz="UTC", name="ts")
    log_b = np.log(125.0) + np.cumsum(rng.normal(0, 0.02, n))
    log_a = np.log(100.0) + np.linspace(0.5, 2.0, n) * (log_b - log_b[0]) + rng.normal(0, 0.01, n)
    return {s: pd.DataFrame({"open": np.exp(x), "high": np.exp(x), "low": np.exp(x), "close": np.exp(x),
                             "volume": 1e6}, index=index) for s, x in (("AAPL", log_a), ("MSFT", log_b))}


def _held_z(bars: dict[str, pd.DataFrame], hedge: float, at: int) -> float:
    """The z of log AAPL - hedge log MSFT at bar ``at`` against its last 60 bars (sd as spread_z's: w - 2)."""
    spread = (np.log(bars["AAPL"]["close"]) - hedge * np.log(bars["MSFT"]["close"])).to_numpy()[at - 59:at + 1]
    return (spread[-1] - spread.mean()) / np.sqrt(((spread - spread.mean()) ** 2).sum() / 58)


def test_the_spread_exit_judges_the_spread_the_legs_hold_not_the_one_refitted_now(tmp_path):
    """The legs hold AAPL against the entry's hedge ratio x its value in MSFT; the rule's |z| <= exit_z
    is of that spread (its mean and sd over the pair window as of now), not of today's re-fitted one."""
    bars = _legs_drifting_apart()
    refit = compute_features(pair_bars(bars["AAPL"], bars["MSFT"]), "pairs@1")
    config = load_config(write_config(tmp_path / "c.json", strategies=PAIRS_ONLY, risk=SHORTS))
    now = next(t for t in range(100, len(refit)) if abs(refit["spread_z"].iloc[t]) <= 0.2
               and abs(_held_z(bars, refit["hedge_ratio"].iloc[t] / 2, t)) > 1.5)
    as_of, close = refit.index[now].to_pydatetime(), {s: f["close"].iloc[now] for s, f in bars.items()}

    def exits_holding(hedge: float) -> list:
        """Long 10 AAPL against ``hedge`` x their value in MSFT, entered at today's closes (no P&L yet)."""
        pm = PortfolioManager(config)
        qty = {"AAPL": 10.0, "MSFT": 10.0 * hedge * close["AAPL"] / close["MSFT"]}
        for symbol, side in (("AAPL", Side.BUY), ("MSFT", Side.SELL)):
            order = Order(client_order_id=f"c-{symbol}", portfolio="paper", strategy="pairs", symbol=symbol,
                          asset_type="stocks", side=side, qty=qty[symbol], created_at=as_of, pair="AAPL/MSFT")
            pm.apply_fill(Fill(fill_id=f"f-{symbol}", client_order_id=order.client_order_id, portfolio="paper",
                               strategy="pairs", symbol=symbol, side=side, qty=qty[symbol], price=close[symbol],
                               fee=0.0, ts=as_of), asset_type="stocks", order=order)
        pm.mark(close)
        return exit_decisions(config, pm, FeatureFrames(bars, benchmarks={}), as_of, [])

    # held in today's re-fitted hedge ratio, the held spread is the one spread_z measures: back at its mean
    assert _held_z(bars, refit["hedge_ratio"].iloc[now], now) == pytest.approx(refit["spread_z"].iloc[now])
    assert {(d.position.symbol, d.intent) for d in exits_holding(refit["hedge_ratio"].iloc[now])} == {
        ("AAPL", Intent.EXIT), ("MSFT", Intent.EXIT)}
    # held in half of it, the spread the legs hold is still > 1.5 sd away: no exit
    assert exits_holding(refit["hedge_ratio"].iloc[now] / 2) == []


# --- the cycle: placement, persistence and exits on both databases ----------------------------------

@pytest.fixture
def world(engine, tmp_path, monkeypatch):
    def make(**risk) -> LabContext:
        monkeypatch.setenv("LAB_CONFIG", str(write_config(tmp_path / "trading.json", strategies=PAIRS_ONLY,
                                                          risk=SHORTS | risk)))
        return LabContext(settings=Settings(), engine=engine)

    seed_bars(engine)
    return make


DIVERGED = {"pair_corr": 0.9, "spread_z": -2.5, "hedge_ratio": 0.8}


def closes_at(ctx, day) -> dict[str, float]:
    with ctx.engine.connect() as conn:
        return dict(conn.execute(select(db.PriceBar.symbol, db.PriceBar.close).where(db.PriceBar.ts == day)).all())


def orders_of(ctx) -> list[db.Order]:
    with ctx.engine.connect() as conn:
        return conn.execute(select(db.Order).order_by(db.Order.id)).all()


def test_a_pair_signal_places_both_legs_in_the_hedge_ratio_and_they_exit_together(world):
    ctx = world()
    table = PairTable(AAPL_MSFT=DIVERGED)
    first = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(0.9), features=table)
    assert first.orders_placed == 2
    legs = {o.symbol: o for o in orders_of(ctx)}
    assert {s: (o.side, o.pair, o.intent) for s, o in legs.items()} == {
        "AAPL": ("buy", "AAPL/MSFT", "entry"), "MSFT": ("sell", "AAPL/MSFT", "entry")}
    close = closes_at(ctx, DAYS[0])
    hedge_value = legs["MSFT"].qty * close["MSFT"]
    assert hedge_value == pytest.approx(0.8 * legs["AAPL"].qty * close["AAPL"], abs=close["MSFT"])
    # percent sizing: the pair's gross notional is 5% of equity
    gross = legs["AAPL"].qty * close["AAPL"] + hedge_value
    assert 0.05 * 100_000 - close["AAPL"] * 1.8 - close["MSFT"] <= gross <= 0.05 * 100_000

    run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions(0.9), features=table)
    with ctx.engine.connect() as conn:
        held = {r.symbol: (r.qty, r.pair) for r in conn.execute(select(db.Position)) if r.qty != 0}
    assert held == {"AAPL": (legs["AAPL"].qty, "AAPL/MSFT"), "MSFT": (-legs["MSFT"].qty, "AAPL/MSFT")}

    table.rows["AAPL/MSFT"] = {**DIVERGED, "spread_z": 0.2}  # back at the mean: the spread exit
    exits = run_trading_cycle(ctx, DAYS[2], predictions=FixedPredictions(0.9), features=table)
    assert exits.exits == 2
    run_trading_cycle(ctx, DAYS[3], predictions=FixedPredictions(0.9), features=table)
    ledger = replay_ledger(ctx.engine, "paper")
    assert all(p.qty == 0 for p in ledger.positions.values()) and len(ledger.positions) == 2
    with ctx.engine.connect() as conn:
        assert conn.execute(select(db.Account.cash)).scalar_one() == ledger.cash


def test_without_shorts_a_pair_is_skipped_with_the_reason_and_nothing_is_placed(world):
    ctx = world(allow_shorts=False)
    run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(0.9), features=PairTable(AAPL_MSFT=DIVERGED))
    assert orders_of(ctx) == []
    with ctx.engine.connect() as conn:
        status, reason = conn.execute(select(db.Signal.status, db.Signal.reason)).one()
    assert status == "skipped" and "MSFT leg" in reason and "allow_shorts" in reason


def test_a_refused_leg_refuses_the_pair_and_both_legs_are_recorded_rejected(world):
    ctx = world()
    refuse_msft = lambda order: "MSFT is not on the allow-list" if order.symbol == "MSFT" else None  # noqa: E731
    result = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(0.9), features=PairTable(AAPL_MSFT=DIVERGED),
                               pre_trade_checks=[refuse_msft])
    assert result.orders_placed == 0 and result.rejected == 2
    assert {(o.symbol, o.status) for o in orders_of(ctx)} == {("AAPL", "rejected"), ("MSFT", "rejected")}
    assert all("MSFT is not on the allow-list" in o.reason for o in orders_of(ctx))


class Rejects(PaperTradingExecutor):
    """The paper broker, refusing one symbol as a real broker might (nothing to borrow)."""

    refused = ""

    def submit(self, order):
        if order.symbol == self.refused:
            return order.rejected("no shares to borrow")
        return super().submit(order)


@pytest.mark.parametrize(("refused", "statuses", "reason"), [
    ("MSFT", {"AAPL": "cancelled", "MSFT": "rejected"}, "pair AAPL/MSFT: the MSFT leg was rejected; AAPL cancelled"),
    ("AAPL", {"AAPL": "rejected"}, "pair AAPL/MSFT: the AAPL leg was rejected: no shares to borrow"),
])
def test_a_broker_rejection_of_either_leg_leaves_no_lone_leg(world, refused, statuses, reason):
    """The hedge rejected: the first leg is cancelled; the first rejected: no hedge is placed."""
    ctx = world()
    broker = Rejects.from_config(ctx.config, cash=100_000.0, last_prices=closes_at(ctx, DAYS[0]))
    broker.refused = refused
    run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(0.9), features=PairTable(AAPL_MSFT=DIVERGED),
                      broker=broker)
    assert {o.symbol: o.status for o in orders_of(ctx)} == statuses
    with ctx.engine.connect() as conn:
        assert conn.execute(select(db.Signal.status, db.Signal.reason)).one() == ("skipped", reason)


def test_a_cycle_that_dies_between_the_legs_finishes_the_pair_once_on_the_rerun(world):
    ctx = world()
    table = PairTable(AAPL_MSFT=DIVERGED)

    def die_after_the_first_leg(stage: str) -> None:
        if stage == "order_stored":
            raise KeyboardInterrupt("killed between the legs")

    with pytest.raises(KeyboardInterrupt):
        run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(0.9), features=table,
                          hook=die_after_the_first_leg)
    assert [o.symbol for o in orders_of(ctx)] == ["AAPL"]  # stored, never submitted
    run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(0.9), features=table)
    legs = {o.symbol: o for o in orders_of(ctx)}
    assert sorted(legs) == ["AAPL", "MSFT"] and len(orders_of(ctx)) == 2
    close = closes_at(ctx, DAYS[0])
    assert legs["MSFT"].qty * close["MSFT"] == pytest.approx(0.8 * legs["AAPL"].qty * close["AAPL"], abs=close["MSFT"])
    run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions(0.9), features=table)
    held = {p.symbol: p.qty for p in replay_ledger(ctx.engine, "paper").positions.values() if p.qty}
    assert held == {"AAPL": legs["AAPL"].qty, "MSFT": -legs["MSFT"].qty}


def test_a_leg_cut_by_a_risk_limit_scales_the_whole_pair_once(world):
    ctx = world(max_position_pct=0.01)  # 1,000 of 100,000 per leg; the sizing asks for 5,000 gross
    result = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(0.9), features=PairTable(AAPL_MSFT=DIVERGED))
    assert result.orders_placed == 2
    legs, close = {o.symbol: o for o in orders_of(ctx)}, closes_at(ctx, DAYS[0])
    first, hedge = legs["AAPL"].qty * close["AAPL"], legs["MSFT"].qty * close["MSFT"]
    assert 1_000 - close["AAPL"] < first <= 1_000  # the largest pair the 1% cap allows
    assert hedge == pytest.approx(0.8 * first, abs=close["MSFT"])
    with ctx.engine.connect() as conn:
        status, reason = conn.execute(select(db.Signal.status, db.Signal.reason)).one()
    assert status == "ordered" and "max 1% of equity per position" in reason
