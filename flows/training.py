"""Weekly training: features for the whole universe (cached; indicators stored for the boards),
then tuning and promotion of every enabled strategy (the ``tune_strategies`` flow)."""

from __future__ import annotations

from datetime import datetime

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from flows.train import tune_strategies
from lab.runtime import ensure_ray, open_lab

__all__ = ["run_trading_training", "compute_universe_features"]


@task(name="compute-features", retries=1, retry_delay_seconds=30, timeout_seconds=3600)
def compute_universe_features() -> list[dict]:
    """Every symbol's features on Ray (cache hits are free); problem symbols are reported."""
    from lab.featurestore import refresh_universe_features

    ctx = open_lab()
    ensure_ray(ctx.settings)
    return refresh_universe_features(ctx)


@flow(name="run_trading_training", log_prints=True)
def run_trading_training(strategies: list[str] | None = None, trials: int | None = None,
                         end: datetime | None = None) -> list[dict]:
    """Features, then tuning + promotion on data up to ``end``; returns the leaderboard."""
    problems = compute_universe_features()
    if problems:
        create_table_artifact(key="feature-problems", table=problems,
                              description="symbols whose features are partly undefined")
    return tune_strategies(strategies=strategies, trials=trials, end=end)
