"""Prefect flow ``tune_strategies``: one tuning task for all strategies, a leaderboard table artifact.

Scheduled weekly by ``flows/deployments.py`` (config schedule ``trading_training``).

The flow orchestrates only; tuning and promotion rules live in ``lab.models``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from lab.models.pipeline import TrainingOutcome, TrialBudget, leaderboard, train_and_promote_all

__all__ = ["tune_strategies"]


@task(name="tune-and-promote", task_run_name="tune {strategies}")
def tune_and_promote(strategies: list[str], trials: TrialBudget, end: datetime | None = None) -> list[TrainingOutcome]:
    from lab.runtime import open_lab

    return train_and_promote_all(open_lab(), strategies, trials, end=end)


@flow(name="tune_strategies", log_prints=True)
def tune_strategies(strategies: list[str] | None = None, trials: TrialBudget = None,
                    end: datetime | None = None) -> list[dict[str, Any]]:
    """Tune every enabled (or named) strategy on data up to ``end`` (default all) and
    publish the leaderboard."""
    from lab.runtime import open_lab

    names = strategies or list(open_lab().config.enabled_strategies())
    # one Tune run for all of them: the trial workers (and their start-up) are shared
    rows = leaderboard(tune_and_promote(names, trials, end))
    create_table_artifact(key="tuning-leaderboard", table=rows,
                          description="Out-of-sample walk-forward scores, deflated Sharpe, promotion decisions")
    for row in rows:
        print(f"{row['strategy']}: {'active' if row['active'] else 'kept as candidate'} ({row['reason']})")
    return rows
