"""Weekly training: features for the whole universe (cached; indicators stored for the boards),
tuning and promotion of every enabled strategy (the ``tune_strategies`` flow), then a
walk-forward backtest of the latest days per asset class (the ``run_backtest`` flow), whose
report is linked from the run."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import Field

from flows.backtest import backtest_flow
from flows.train import tune_strategies
from lab.errors import ConfigError, DataError
from lab.models.pipeline import TrialBudget
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
def run_trading_training(strategies: list[str] | None = None, trials: TrialBudget = None,
                         end: datetime | None = None, report_days: Annotated[int, Field(ge=0)] = 365) -> list[dict]:
    """Features, then tuning + promotion on data up to ``end``; then, unless ``report_days``
    is 0, a walk-forward backtest (models refitted before each window, so out of sample) of
    the last ``report_days`` per asset class, on that class's symbols, its report linked as an artifact; where the data
    cannot give one (too little history before the period), an artifact says why and the
    training still stands. Returns the leaderboard."""
    from lab.backtest.periods import latest_periods

    problems = compute_universe_features()
    if problems:
        create_table_artifact(key="feature-problems", table=problems,
                              description="symbols whose features are partly undefined")
    board = tune_strategies(strategies=strategies, trials=trials, end=end)
    if report_days:
        ctx = open_lab()
        names = strategies or list(ctx.config.enabled_strategies())
        for asset_class, period in latest_periods(ctx.engine, ctx.config, names, days=report_days, end=end).items():
            label = f"{asset_class}: the {report_days} days to {period.end} (weekly training)"
            try:
                backtest_flow(strategies=period.strategies, start=period.start, end=period.end,
                              walk_forward="retrain", name=label, symbols=period.symbols)
            except (ConfigError, DataError) as exc:  # the training stands; the note says why no report
                print(f"no backtest report for {label}: {exc}")
                create_markdown_artifact(key=f"no-report-{asset_class}", markdown=f"No backtest report for "
                                         f"{label}: {exc}", description="why the training run has no report")
    return board
