"""Promotion: a tuned model is registered always, activated only when it earns it.

It must pass the gate (AUC above 0.5 by a margin, deflated Sharpe significant, both on the
holdout that its tuning never saw) and beat the active version re-scored on the *same*
holdout of the *same* data: the active version's hyper-parameters are fit and scored again
here, because its stored scores came from other data and its file was fit on rows that are
now holdout rows. The tuning folds' scores judge nothing: the best trial was chosen on
them. Every decision is recorded in ``tuning_runs`` and as a registry event with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from lab.config import TuningConfig
from lab.db import session_scope
from lab.db.models import TuningRun
from lab.models.problem import TUNABLE
from lab.models.tuning import TuningResult
from lab.registry import ModelRegistry, VersionInfo

__all__ = ["Gate", "PromotionDecision", "promote"]

DOMAIN = "trading"


@dataclass(frozen=True, kw_only=True)
class Gate:
    min_auc_margin: float = 0.02
    #: the deflated Sharpe is a probability; 0.95 = significant at 5%
    min_deflated_sharpe: float = 0.95

    @classmethod
    def from_config(cls, tuning: TuningConfig) -> Gate:
        return cls(min_auc_margin=tuning.min_auc_margin)

    def failures(self, result: TuningResult) -> list[str]:
        reasons = []
        if result.task == "classification" and not result.oos_score > 0.5 + self.min_auc_margin:
            reasons.append(f"OOS AUC {result.oos_score:.3f} on the holdout is not above "
                           f"{0.5 + self.min_auc_margin:.3f} (0.5 + margin {self.min_auc_margin})")
        if not result.deflated_sharpe >= self.min_deflated_sharpe:
            reasons.append(f"deflated Sharpe {result.deflated_sharpe:.2f} on the holdout < {self.min_deflated_sharpe} "
                           f"(raw Sharpe {result.sharpe:.3f} per period, {result.n_trials} trials)")
        return reasons


@dataclass(frozen=True)
class PromotionDecision:
    strategy: str
    version_id: int
    version: int
    promoted: bool
    reason: str
    score: float
    active_score: float | None


def _active_score(result: TuningResult, active: VersionInfo) -> float | None:
    """The active version's hyper-parameters fit and scored on this run's holdout."""
    params = {k: v for k, v in active.params.items() if k in TUNABLE and isinstance(v, int | float)}
    if not params:  # not a version this module tuned: only its stored score is known
        stored = active.metrics.get("oos_score")
        return float(stored) if isinstance(stored, int | float) else None
    return float(result.problem.score_holdout(params).metrics[result.metric])


def promote(registry: ModelRegistry, engine: Engine, result: TuningResult, *, gate: Gate,
            extra_metrics: dict[str, Any] | None = None) -> PromotionDecision:
    """Register ``result``'s model; activate it only if it passes ``gate`` and beats the active one.

    ``extra_metrics`` are stored with the version's metrics: the pipeline records the run's
    input digest (``run_key``, so an unchanged re-run reuses the version) and the last bar
    the model learned from (``train_end``, so backtests can prove they are out of sample).
    """
    problem = result.problem
    version = registry.save_version(
        DOMAIN, result.strategy, result.model_path, params=result.best_params,
        metrics=result.metrics | (extra_metrics or {}),
        data_fingerprint=problem.data_fingerprint, feature_fingerprint=problem.feature_fingerprint,
        code_version=result.code_version)
    reasons = gate.failures(result)
    active = registry.get_active_version(result.strategy, DOMAIN)
    active_score = None
    if active is not None and not reasons:
        active_score = _active_score(result, active)
        if active_score is not None and not result.oos_score > active_score:
            reasons.append(f"OOS {result.metric} {result.oos_score:.4f} does not beat active v{active.version} "
                           f"({active_score:.4f} on the same holdout)")
    promoted = not reasons
    reason = (f"passed the gate (OOS {result.metric} {result.oos_score:.3f} on the holdout, deflated Sharpe "
              f"{result.deflated_sharpe:.2f})" + (f", beats active v{active.version}" if active else "")
              if promoted else "; ".join(reasons))
    if promoted:
        registry.activate(version.id, reason=reason)
    else:
        registry.reject(version.id, reason)
    with session_scope(engine) as session:
        session.add(TuningRun(
            strategy=result.strategy, asset_class=result.asset_class, started_at=result.started_at,
            finished_at=result.finished_at, trials=result.n_trials, metric=result.metric,
            best_score=result.oos_score, sharpe=result.sharpe, deflated_sharpe=result.deflated_sharpe,
            best_params=result.best_params, fold_metrics=result.fold_metrics, version_id=version.id,
            promoted=promoted, reason=reason, storage_path=str(result.storage_path)))
    return PromotionDecision(result.strategy, version.id, version.version, promoted, reason,
                             result.oos_score, active_score)
