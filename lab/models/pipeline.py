"""Tune, register and (maybe) activate every enabled strategy: what ``lab tune``, ``lab demo``
and the weekly ``tune_strategies`` flow run.

One model per strategy, trained on the symbols of every asset class the config enables for
it (the registry holds one active version per strategy). The realised forward return that
scores trading comes from the stored bars over the strategy's label horizon; costs are the
configured fees plus slippage, paid on entry and exit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lab.bars import load_bars
from lab.errors import ConfigError, DataError, LabError
from lab.models.problem import RETURN_COLUMN
from lab.models.promotion import Gate, PromotionDecision, promote
from lab.models.tuning import TuningResult, tune_strategy
from lab.runtime import LabContext
from lab.strategy import Strategy, get_strategy

__all__ = ["TrainingOutcome", "train_and_promote_all", "leaderboard", "with_forward_returns"]

#: progress(strategy, trials_done, trials_total)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainingOutcome:
    strategy: str
    result: TuningResult | None = None
    decision: PromotionDecision | None = None
    error: str | None = None


def with_forward_returns(data: pd.DataFrame, bars: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Add ``forward_return`` (close at t+horizon / close at t - 1) from long-format bars."""
    if RETURN_COLUMN in data.columns:
        return data
    closes = bars.sort_values(["symbol", "ts"])
    forward = closes.groupby("symbol")["close"].shift(-horizon) / closes["close"] - 1
    table = pd.DataFrame({"symbol": closes["symbol"], "timestamp": pd.to_datetime(closes["ts"], utc=True),
                          RETURN_COLUMN: forward.to_numpy()})
    merged = data.assign(timestamp=pd.to_datetime(data["timestamp"], utc=True)).merge(
        table, on=["symbol", "timestamp"], how="left")
    return merged.dropna(subset=[RETURN_COLUMN]).reset_index(drop=True)


def _training_data(ctx: LabContext, strategy: type[Strategy], asset_classes: list[str]) -> pd.DataFrame:
    from lab.features import create_training_data, get_feature_set

    universes = ctx.config.universe.asset_classes()
    symbols = sorted({s for ac in asset_classes if ac in universes for s in universes[ac].symbols})
    if not symbols:
        raise ConfigError([f"strategies.{strategy.name}: no symbols configured for {', '.join(asset_classes)}"])
    start = pd.Timestamp(ctx.config.data.history_start, tz="UTC")
    bars = load_bars(ctx.engine, symbols, start=start.to_pydatetime())
    if bars.empty:
        raise DataError(f"no stored bars for {', '.join(symbols)}; ingest prices first")
    columns = list(get_feature_set(strategy.feature_set).columns)
    data = create_training_data(symbols, strategy.feature_set, strategy.label, start, bars["ts"].max(),
                                engine=ctx.engine, bars=bars)
    return with_forward_returns(data, bars, strategy.label.horizon)[["symbol", "timestamp", *columns, "label",
                                                                    RETURN_COLUMN]]


def train_and_promote_all(ctx: LabContext, strategies: list[str] | None = None, trials: int | None = None,
                          progress: Progress | None = None) -> list[TrainingOutcome]:
    """Tune and promote each strategy in turn; one failing strategy does not stop the others."""
    from lab.features import get_feature_set

    config = ctx.config
    enabled = config.enabled_strategies()
    names = strategies if strategies is not None else list(enabled)
    gate = Gate.from_config(config.tuning)
    outcomes = []
    for name in names:
        strategy = get_strategy(name)
        asset_classes = list(config.strategies[name].asset_classes) if name in config.strategies \
            else list(strategy.asset_classes)
        fees = max(config.execution.fee_bps.get(ac, 0.0) for ac in asset_classes)
        budget = trials or config.tuning.trials
        try:
            data = _training_data(ctx, strategy, asset_classes)
            result = tune_strategy(
                name, data, trials=budget, time_budget_s=config.tuning.time_budget_s, seed=config.tuning.seed,
                folds=config.tuning.folds, storage_dir=ctx.settings.home / "tuning",
                asset_class=asset_classes[0] if len(asset_classes) == 1 else None,
                features=list(get_feature_set(strategy.feature_set).columns),
                feature_fingerprint=get_feature_set(strategy.feature_set).fingerprint,
                cost=2 * (fees + config.execution.slippage_bps) / 1e4,
                progress=(lambda done, total, n=name: progress(n, done, total)) if progress else None)
            decision = promote(ctx.registry, ctx.engine, result, gate=gate)
            outcomes.append(TrainingOutcome(name, result, decision))
        except LabError as exc:
            outcomes.append(TrainingOutcome(name, error=str(exc)))
    return outcomes


def leaderboard(outcomes: list[TrainingOutcome]) -> list[dict[str, Any]]:
    """One row per strategy, best first: what the CLI prints and the flow publishes."""
    rows = []
    for o in outcomes:
        r, d = o.result, o.decision
        rows.append({
            "strategy": o.strategy, "metric": r.metric if r else "", "oos_score": round(r.best_score, 4) if r else None,
            "sharpe": round(r.sharpe, 3) if r else None, "deflated_sharpe": round(r.deflated_sharpe, 3) if r else None,
            "trials": r.n_trials if r else 0, "version": d.version if d else None,
            "promoted": bool(d and d.promoted), "reason": d.reason if d else o.error,
        })
    return sorted(rows, key=lambda row: -(row["oos_score"] if row["oos_score"] is not None else float("-inf")))
