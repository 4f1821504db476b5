"""The signal engine: each strategy's ``entry_rule`` on the latest features, ML confidence from
a ``PredictionSource``, protective levels, expected value and risk/reward, then the filters.

Expected value and Kelly's odds are priced at the model's ``Payoff`` (the mean forward return
of each of its classes on its training rows), not at the strategy's take-profit and stop-loss:
a direction model's probability is of "the close is higher after h bars", not of "the target
is hit before the stop", and pricing it at the levels overstated momentum's EV about tenfold. One
formula for every label kind: a buy wins ``payoff.win`` with P(class 1) and gets
``payoff.loss`` otherwise; a sell gets the negatives. The levels still set the orders' stop
and target and the risk/reward filter.

Features arrive through a ``FeatureSource`` (latest row per symbol as of the engine's
``as_of``), so the engine never reads the clock or the database itself: the live cycle
computes them from stored bars, a backtest slices precomputed frames.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
import pandas as pd

from lab.config import TradingConfig
from lab.strategy import Strategy, get_strategy
from lab.trading.model import Intent, Order, Position
from lab.trading.portfolio import ExitDecision, PortfolioManager, strategy_levels
from lab.trading.predictions import NoActiveModel, Payoff, PredictionSource

__all__ = [
    "SIGNAL_COLUMNS",
    "MIN_RISK_REWARD",
    "FeatureSource",
    "Screening",
    "TradeSignalEngine",
    "calculate_ev",
    "calculate_risk_reward",
    "exit_decisions",
    "kelly_odds",
    "side_payoff",
]

#: ``hedge_ratio`` is a pair's (units of the second leg's value per unit of the first); NaN otherwise
#: ``odds`` is Kelly's: the side's expected win per unit of its expected loss, from the payoff
SIGNAL_COLUMNS = ["symbol", "strategy", "side", "confidence", "entry", "stop_loss", "take_profit",
                  "ev", "rr", "odds", "model_version", "hedge_ratio"]
#: reward must be at least twice the risk (1:2)
MIN_RISK_REWARD = 2.0


class FeatureSource(Protocol):
    def latest(self, feature_set: str, symbols: Sequence[str], as_of: datetime) -> pd.DataFrame:
        """The last feature row at or before ``as_of`` per symbol (index: symbol); symbols
        without enough history are left out. Pair sets take "AAA/BBB" symbols."""
        ...

    def held_spread_z(self, pair: str, hedge_ratio: float, as_of: datetime) -> float:
        """The z-score at ``as_of`` of the spread a position in ``pair`` holds: log AAA -
        ``hedge_ratio`` log BBB over the pair window (NaN without enough bars)."""
        ...


@dataclass
class Screening:
    """How far a strategy's symbols got at a decision: with a feature row (``screened``),
    firing its entry rule (``rule``), then past its confidence and risk/reward bars and with a
    positive expected value (``confident``), before its ``max_positions`` cap; ``best`` is the highest model
    confidence a rule hit got. Summed over a backtest, it says why a strategy traded as often
    as it did."""

    screened: int = 0
    rule: int = 0
    confident: int = 0
    best: float | None = None

    def __iadd__(self, other: Screening) -> Screening:
        self.screened += other.screened
        self.rule += other.rule
        self.confident += other.confident
        if other.best is not None and (self.best is None or other.best > self.best):
            self.best = other.best
        return self


def calculate_ev(probability: float, expected_return: float, risk: float) -> float:
    """Expected return of a trade: win ``expected_return`` with ``probability``, else lose ``risk``."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability!r}")
    return probability * expected_return - (1.0 - probability) * risk


def side_payoff(payoff: Payoff, side: str) -> tuple[float, float]:
    """(gain, loss) of ``side`` when it is right and when it is wrong, both as positive
    amounts when they are a gain and a loss: a buy is right on class 1 (gains ``win``) and
    wrong on class 0 (loses ``-loss``); a sell is right on class 0 (gains ``-loss``) and wrong
    on class 1 (loses ``win``)."""
    return (payoff.win, -payoff.loss) if side == "buy" else (-payoff.loss, payoff.win)


def kelly_odds(gain: float, loss: float) -> float:
    """Kelly's b, the gain per unit of loss: 0 where the side gains nothing when right (no
    bet), infinite where it loses nothing when wrong (the bet is its win probability)."""
    if gain <= 0:
        return 0.0
    return gain / loss if loss > 0 else math.inf


def calculate_risk_reward(entry: float, stop_loss: float, take_profit: float) -> float:
    """Reward per unit of risk: |take_profit - entry| / |entry - stop_loss|."""
    risk = abs(entry - stop_loss)
    if not all(math.isfinite(v) and v > 0 for v in (entry, stop_loss, take_profit)) or risk == 0:
        raise ValueError(f"risk/reward needs positive prices and a stop away from the entry, "
                         f"got entry={entry!r} stop={stop_loss!r} target={take_profit!r}")
    return abs(take_profit - entry) / risk


def exit_decisions(config: TradingConfig, manager: PortfolioManager, features: FeatureSource, as_of: datetime,
                   pending: Sequence[Order]) -> list[ExitDecision]:
    """Every exit due at ``as_of``: the manager's stop-loss, take-profit and holding time, then
    each strategy's ``exit_rule`` on the latest features of the symbols it holds. A held pair's
    row also holds ``held_spread_z``: the z-score of the spread its legs hold (their hedge ratio,
    ``_held_hedge_ratio``), where the features' ``spread_z`` re-fits the hedge ratio every bar."""
    decisions = manager.exits(as_of, pending)
    taken = {(d.position.strategy, d.position.symbol) for d in decisions}
    taken |= {(o.strategy, o.symbol) for o in pending if o.status.is_open and o.intent is not Intent.ENTRY}
    held: dict[str, list] = {}
    for p in manager.open_positions():
        if (p.strategy, p.symbol) not in taken:
            held.setdefault(p.strategy, []).append(p)
    for name, positions in held.items():
        declared = get_strategy(name)
        if not declared.has_exit_rule():
            continue
        strategy_config = config.strategies.get(name)
        strategy = declared(**(strategy_config.params if strategy_config else {}))
        # a pair's legs are judged together, on the pair's features
        latest = features.latest(declared.feature_set, sorted({p.pair or p.symbol for p in positions}), as_of)
        if latest.empty:
            continue
        if any(p.pair for p in positions):
            latest = latest.assign(held_spread_z=[
                features.held_spread_z(s, _held_hedge_ratio(s, positions), as_of) if "/" in s else math.nan
                for s in latest.index])
        flagged = strategy.exit_rule(latest).reindex(latest.index).fillna(False).astype(bool)
        decisions.extend(ExitDecision(p, Intent.EXIT, f"{name} exit rule") for p in positions
                         if bool(flagged.get(p.pair or p.symbol, False)))
    return decisions


def _held_hedge_ratio(pair: str, positions: Sequence[Position]) -> float:
    """The hedge ratio the legs of ``pair`` hold: the second leg's value per unit of the
    first's at the prices they were filled at (``pair_entry`` sizes them so, in the signal's
    ratio); NaN unless both legs are held."""
    value = {p.symbol: abs(p.qty) * p.avg_price for p in positions if p.pair == pair and p.is_open}
    first, second = pair.split("/")
    return value[second] / value[first] if value.get(first, 0.0) > 0 and second in value else math.nan


class TradeSignalEngine:
    """Signals for one decision time (``as_of``) from features, rules and model confidence."""

    def __init__(self, config: TradingConfig, predictions: PredictionSource, features: FeatureSource,
                 *, as_of: datetime, prices: Mapping[str, float]):
        self.config = config
        self.predictions = predictions
        self.features = features
        self.as_of = as_of
        self.prices = prices
        #: strategies ``generate`` left out, with the reason (e.g. no active model)
        self.skipped: dict[str, str] = {}
        #: per strategy asked, how far its symbols got
        self.screened: dict[str, Screening] = {}

    # --- the strategies, by name ---------------------------------------------------------------

    def find_momentum_signals(self, symbols: Sequence[str], lookback_days: int = 20) -> pd.DataFrame:
        """Top performers over ``lookback_days`` (5, 20 or 60) with volume confirmation; ML
        continuation odds."""
        return self.signals_for("momentum", symbols, lookback_days=lookback_days)

    def find_swing_signals(self, symbols: Sequence[str], timeframe: str = "1d") -> pd.DataFrame:
        """RSI oversold in an uptrend, MACD bullish cross or MA support; ML direction. The lab
        stores daily bars, so ``timeframe`` must be "1d"."""
        if timeframe != "1d":
            raise ValueError(f"swing signals need daily bars: timeframe must be '1d', got {timeframe!r}")
        return self.signals_for("swing", symbols)

    def find_breakout_signals(self, symbols: Sequence[str]) -> pd.DataFrame:
        """Bollinger squeeze with volume; ML breakout probability (crypto)."""
        return self.signals_for("breakout", symbols)

    def find_pairs_signals(self, symbols: Sequence[str]) -> pd.DataFrame:
        """Every pair of ``symbols`` whose spread diverged while correlated; ML reversion odds."""
        pairs = [f"{a}/{b}" for a, b in itertools.combinations(sorted(symbols), 2)]
        return self.signals_for("pairs", pairs)

    def find_value_signals(self, symbols: Sequence[str]) -> pd.DataFrame:
        """Low P/E and P/B; ML quality / forward-return odds."""
        return self.signals_for("value", symbols)

    def generate(self, universe: Mapping[str, Sequence[str]]) -> pd.DataFrame:
        """Signals of every enabled strategy over its asset classes' symbols (``universe``:
        asset class -> symbols), best expected value first."""
        frames = []
        for name, strategy_config in self.config.enabled_strategies().items():
            symbols = [s for ac in strategy_config.asset_classes for s in universe.get(ac, ())]
            if not symbols:
                continue
            try:
                frames.append(self.find_pairs_signals(symbols) if name == "pairs"
                              else self.signals_for(name, symbols))
            except NoActiveModel as exc:
                self.skipped[name] = str(exc)
        if not frames:
            return pd.DataFrame(columns=SIGNAL_COLUMNS)
        return pd.concat(frames, ignore_index=True).sort_values(["ev", "confidence"], ascending=False,
                                                                ignore_index=True)

    # --- the one pipeline every strategy goes through ----------------------------------------

    def signals_for(self, name: str, symbols: Sequence[str], **params: float | int) -> pd.DataFrame:
        """``params`` override the strategy's rule parameters from config for this call."""
        declared = get_strategy(name)
        strategy_config = self.config.strategies.get(name)
        strategy: Strategy = declared(**(strategy_config.params if strategy_config else {}) | params)
        latest = self.features.latest(declared.feature_set, list(symbols), self.as_of)
        screening = self.screened[name] = Screening(screened=len(latest))
        if latest.empty:
            return pd.DataFrame(columns=SIGNAL_COLUMNS)
        candidates = latest[strategy.entry_rule(latest).fillna(False).astype(bool)]
        screening.rule = len(candidates)
        if candidates.empty:
            return pd.DataFrame(columns=SIGNAL_COLUMNS)
        prediction = self.predictions.predict(name, candidates)
        stop_pct, take_pct, _ = strategy_levels(self.config, name)
        min_confidence = strategy_config.min_confidence if strategy_config else declared.min_confidence
        entries = np.array([self._entry(symbol, candidates.loc[symbol]) for symbol in candidates.index])
        sides = strategy.sides(candidates).to_numpy(dtype=object)
        if unknown := set(sides) - {"buy", "sell"}:
            raise ValueError(f"strategy {name!r}: sides() must give 'buy' or 'sell', got {sorted(map(repr, unknown))}")
        direction = np.where(sides == "buy", 1.0, -1.0)
        # the side is right on class 1 (buy) or class 0 (sell), and gets that class's payoff
        right = np.where(direction > 0, prediction.values, 1.0 - prediction.values)
        payoffs = [side_payoff(prediction.payoff, side) for side in sides]
        # a direction model gives the odds of "up": a sell is confident when "up" is unlikely
        confidence = right if declared.label.kind == "direction" else prediction.values
        frame = pd.DataFrame({
            "symbol": candidates.index.astype(str),
            "strategy": name,
            "side": sides,
            "confidence": confidence,
            "entry": entries,
            "stop_loss": entries * (1 - direction * stop_pct),
            "take_profit": entries * (1 + direction * take_pct),
            "ev": [calculate_ev(float(p), gain, loss) for p, (gain, loss) in zip(np.clip(right, 0, 1), payoffs,
                                                                                  strict=True)],
            "rr": take_pct / stop_pct,
            "odds": [kelly_odds(gain, loss) for gain, loss in payoffs],
            "model_version": prediction.model_version,
            "hedge_ratio": (candidates["hedge_ratio"].to_numpy(dtype=float) if "hedge_ratio" in candidates
                            else np.nan),
        })
        # a confident call on a move that pays less than the opposite move costs is no trade
        keep = (frame["confidence"] >= min_confidence) & (frame["ev"] > 0) & (frame["rr"] >= MIN_RISK_REWARD - 1e-9) \
            & np.isfinite(frame["entry"]) & (frame["entry"] > 0)
        screening.confident = int(keep.sum())
        if np.isfinite(confidence).any():
            screening.best = float(np.nanmax(confidence))
        frame = frame[keep].sort_values(["ev", "confidence"], ascending=False)
        cap = strategy_config.max_positions if strategy_config else None
        return frame.head(cap).reset_index(drop=True) if cap else frame.reset_index(drop=True)

    def _entry(self, symbol: str, row: pd.Series) -> float:
        """The decision price: the last close; for a pair, the price ratio of its legs."""
        if "/" in symbol:
            first, second = symbol.split("/")
            a, b = self.prices.get(first, math.nan), self.prices.get(second, math.nan)
            return a / b if b else math.nan
        return float(self.prices.get(symbol, row.get("close", math.nan)))
