"""Tune, register and (maybe) activate every enabled strategy: what ``lab tune``, ``lab demo``
and the weekly ``tune_strategies`` flow run.

One model per strategy, trained on the symbols of every asset class the config enables for
it (the registry holds one active version per strategy). The realised forward return that
scores trading comes from the stored bars over the strategy's label horizon; costs are the
configured fees plus slippage, paid on entry and exit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import pandas as pd
from pydantic import Field

from lab.bars import bars_by_symbol, load_bars
from lab.errors import ConfigError, DataError, LabError
from lab.models.problem import LABEL_END_COLUMN, RETURN_COLUMN
from lab.models.promotion import Gate, PromotionDecision, promote
from lab.models.tuning import TuneJob, TuningResult, code_version, tune_strategies
from lab.registry import ModelRegistry, VersionInfo
from lab.runtime import LabContext
from lab.strategy import Strategy, get_strategy

__all__ = ["TrainingOutcome", "TrialBudget", "train_and_promote_all", "leaderboard"]

#: trials per strategy; None means the config's ``tuning.trials`` (flows declare their
#: parameter so, and Prefect refuses 0 before a run starts, as ``lab tune --trials 0`` is)
TrialBudget = Annotated[int, Field(ge=1)] | None

#: progress(strategy, trials_done, trials_total)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainingOutcome:
    strategy: str
    result: TuningResult | None = None
    decision: PromotionDecision | None = None
    error: str | None = None
    #: a version registered by an earlier run with exactly the same inputs (nothing was tuned)
    reused: VersionInfo | None = None


def run_key(data: pd.DataFrame, **inputs: Any) -> str:
    """Digest of the training rows and every tuning input (budget, seed, folds, space, code)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(pd.util.hash_pandas_object(data, index=False).to_numpy().tobytes())
    digest.update(json.dumps(inputs, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _reusable(registry: ModelRegistry, strategy: str, key: str) -> VersionInfo | None:
    matches = [v for v in registry.list_versions("trading", strategy) if v.metrics.get("run_key") == key]
    return matches[-1] if matches else None


def _training_data(ctx: LabContext, strategy: type[Strategy], asset_classes: list[str],
                   end: datetime | None = None) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Training rows of every configured symbol of ``asset_classes``, each symbol's features
    against its own class's benchmark, and the last bar used; nothing after ``end`` (labels
    included) is used."""
    from lab.features import create_training_data, get_feature_set, load_fundamentals

    universes = ctx.config.universe.asset_classes()
    classes = [ac for ac in asset_classes if ac in universes and universes[ac].symbols]
    if not classes:
        raise ConfigError([f"strategies.{strategy.name}: no symbols configured for {', '.join(asset_classes)}"])
    fs = get_feature_set(strategy.feature_set)
    start = pd.Timestamp(ctx.config.data.history_start, tz="UTC")
    parts, last_bar = [], pd.Timestamp.min.tz_localize("UTC")
    for ac in classes:
        symbols = sorted(universes[ac].symbols)
        bars = load_bars(ctx.engine, sorted({*symbols, universes[ac].benchmark}), start=start.to_pydatetime(), end=end)
        if bars.empty:
            raise DataError(f"no stored bars for {', '.join(symbols)}; ingest prices first")
        by_symbol = bars_by_symbol(bars)
        last_bar = max(last_bar, bars["ts"].max())
        stored = [s for s in symbols if s in by_symbol]
        data = create_training_data(
            stored, strategy.feature_set, strategy.label, start, bars["ts"].max(), bars=by_symbol,
            benchmark=by_symbol.get(universes[ac].benchmark),
            fundamentals=load_fundamentals(ctx.engine, stored) if fs.kind == "fundamental" else None,
            cache_dir=ctx.settings.cache_dir / "features")
        parts.append(data.dropna(subset=[RETURN_COLUMN]))  # what a row's position earns: its score
    columns = ["symbol", "timestamp", *fs.columns, "label", LABEL_END_COLUMN, RETURN_COLUMN]
    data = pd.concat(parts, ignore_index=True)[columns].sort_values(["timestamp", "symbol"], ignore_index=True)
    return data, last_bar


def train_and_promote_all(ctx: LabContext, strategies: list[str] | None = None, trials: TrialBudget = None,
                          progress: Progress | None = None, end: datetime | None = None) -> list[TrainingOutcome]:
    """Tune every strategy (in one Ray Tune run) and promote each; one failing strategy does not stop the others.

    ``trials`` None tunes the config's ``tuning.trials``; 0 or fewer is refused (it once meant
    "the config" too, silently). ``end`` trains strictly on data up to then (so a later paper
    window stays out of sample).
    """
    if trials is not None and trials < 1:
        raise ConfigError([f"trials: Input should be greater than or equal to 1, got {trials}"])
    from lab.features import get_feature_set

    config = ctx.config
    enabled = config.enabled_strategies()
    names = list(dict.fromkeys(strategies if strategies is not None else enabled))  # each once
    gate = Gate.from_config(config.tuning)
    budget = config.tuning.trials if trials is None else trials
    outcomes: dict[str, TrainingOutcome] = {}
    jobs: list[tuple[TuneJob, str, pd.Timestamp]] = []
    for name in names:
        strategy = get_strategy(name)
        asset_classes = config.strategy_asset_classes(name)
        fees = max(config.execution.fee_bps.get(ac, 0.0) for ac in asset_classes)
        try:
            data, last_bar = _training_data(ctx, strategy, asset_classes, end)
        except LabError as exc:
            outcomes[name] = TrainingOutcome(name, error=str(exc))
            continue
        key = run_key(data, trials=budget, seed=config.tuning.seed, folds=config.tuning.folds,
                      time_budget_s=config.tuning.time_budget_s, space=strategy.search_space,
                      fees=fees, slippage=config.execution.slippage_bps, gate=gate, code=code_version())
        previous = _reusable(ctx.registry, name, key)
        if previous is not None:
            outcomes[name] = TrainingOutcome(name, reused=previous)
            continue
        feature_set = get_feature_set(strategy.feature_set)
        job = TuneJob(strategy=name, data=data, asset_class=asset_classes[0] if len(asset_classes) == 1 else None,
                      features=list(feature_set.columns), feature_fingerprint=feature_set.fingerprint,
                      cost=2 * (fees + config.execution.slippage_bps) / 1e4)
        jobs.append((job, key, last_bar))
    if jobs:
        results = tune_strategies([job for job, _, _ in jobs], trials=budget,
                                  time_budget_s=config.tuning.time_budget_s, seed=config.tuning.seed,
                                  folds=config.tuning.folds, storage_dir=ctx.settings.home / "tuning",
                                  progress=progress)
        for (job, key, last_bar), result in zip(jobs, results, strict=True):
            if isinstance(result, LabError):
                outcomes[job.strategy] = TrainingOutcome(job.strategy, error=str(result))
                continue
            try:
                decision = promote(ctx.registry, ctx.engine, result, gate=gate,
                                   extra_metrics={"run_key": key, "train_end": last_bar.isoformat()})
                outcomes[job.strategy] = TrainingOutcome(job.strategy, result, decision)
            except LabError as exc:
                outcomes[job.strategy] = TrainingOutcome(job.strategy, error=str(exc))
    return [outcomes[name] for name in names]


def _rounded(value: Any, digits: int) -> float | None:
    return round(value, digits) if isinstance(value, int | float) else None


def leaderboard(outcomes: list[TrainingOutcome]) -> list[dict[str, Any]]:
    """One row per strategy, best first: what the CLI prints and the flow publishes. ``active``:
    the version is the one Serve answers with now (a reused version may have been activated by
    hand after the gate refused it: ``reason`` says what the gate said)."""
    rows = []
    for o in outcomes:
        r, d = o.result, o.decision
        if o.reused is not None:
            m, v = o.reused.metrics, o.reused
            rows.append({
                "strategy": o.strategy, "metric": m.get("metric", ""), "oos_score": _rounded(m.get("oos_score"), 4),
                "sharpe": _rounded(m.get("sharpe"), 3), "deflated_sharpe": _rounded(m.get("deflated_sharpe"), 3),
                "trials": m.get("n_trials", 0), "version": v.version, "active": v.is_active,
                "reason": f"inputs unchanged: reused v{v.version} ({v.status}) without tuning again",
            })
            continue
        rows.append({
            "strategy": o.strategy, "metric": r.metric if r else "", "oos_score": round(r.oos_score, 4) if r else None,
            "sharpe": round(r.sharpe, 3) if r else None, "deflated_sharpe": round(r.deflated_sharpe, 3) if r else None,
            "trials": r.n_trials if r else 0, "version": d.version if d else None,
            "active": bool(d and d.promoted), "reason": d.reason if d else o.error,
        })
    return sorted(rows, key=lambda row: -(row["oos_score"] if row["oos_score"] is not None else float("-inf")))
