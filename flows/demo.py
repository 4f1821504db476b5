"""The main job: ingest, features, tuning and promotion, a backtest and a report, Serve, and
paper-trading days through the Serve endpoint — each step a Prefect flow run of its own, so
they show in the Prefect UI when a server is up. Orchestration only; the rules live in lab."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows.backtest import backtest_flow
from flows.ingest import ingest_universe
from flows.trading import run_trading_cycle
from flows.training import run_trading_training
from lab.demo import DemoPlan, plan_demo
from lab.runtime import ensure_ray, open_lab

__all__ = ["DemoOutcome", "run_demo_pipeline"]

#: progress(stage, done, total)
Progress = Callable[[str, int, int], None]


@dataclass
class DemoOutcome:
    plan: DemoPlan
    ingest: dict[str, Any]
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    backtests: dict[str, dict[str, Any]] = field(default_factory=dict)  # asset class -> backtest_flow result
    paper: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # asset class -> cycle summaries
    serve_url: str = ""


def run_demo_pipeline(*, trials: int | None = None, paper_days: int = 10, serve_port: int = 8000,
                      dashboard: bool = True, progress: Progress | None = None) -> DemoOutcome:
    step = progress or (lambda stage, done, total: None)
    ctx = open_lab()
    _ = ctx.config  # a missing or invalid config is named now, not after Ray and Prefect have started
    ensure_ray(ctx.settings, include_dashboard=dashboard)

    step("ingest the offline universe", 0, 1)
    outcome = DemoOutcome(plan=None, ingest=ingest_universe(source="offline"))  # type: ignore[arg-type]
    plan = outcome.plan = plan_demo(ctx, paper_days=paper_days)

    names = [name for name in plan.training_end]
    for i, name in enumerate(names):
        step(f"features + tuning: {name}", i, len(names))
        # its out-of-sample backtest comes below, over the window the plan keeps for it
        outcome.leaderboard += run_trading_training(strategies=[name], trials=trials,
                                                    end=plan.training_end[name].isoformat(), report_days=0)

    classes = list(plan.strategies)
    for i, asset_class in enumerate(classes):
        step(f"out-of-sample backtest: {asset_class}", i, len(classes))
        # walk-forward retraining on past bars only: out of sample whatever the gate decided
        outcome.backtests[asset_class] = backtest_flow(
            strategies=plan.strategies[asset_class], start=plan.oos_start[asset_class].date().isoformat(),
            end=plan.last_bar[asset_class].date().isoformat(), walk_forward="retrain",
            name=f"demo {asset_class} out of sample")

    step("start Ray Serve", 0, 1)
    from serving.launch import start_service, wait_until_serving

    outcome.serve_url = start_service(ctx.settings, port=serve_port)
    token = ctx.settings.serve_token.get_secret_value() if ctx.settings.serve_token else None
    # strategies the gate kept as candidates have no active model: Serve answers 503 for them
    # and the cycles skip them, saying why
    active = [name for name in names if ctx.registry.get_active_version(name) is not None]
    wait_until_serving(outcome.serve_url, active, token=token)

    cycles = [(ac, when) for ac in classes for when in plan.paper_sessions[ac]]
    for i, (asset_class, when) in enumerate(cycles):
        step(f"paper trading through Serve: {asset_class} {when.date()}", i, len(cycles))
        outcome.paper.setdefault(asset_class, []).append(run_trading_cycle(
            asset_class=asset_class, as_of=when.isoformat(), portfolio=f"demo-{asset_class}",
            serve_url=outcome.serve_url))
    step("done", 1, 1)
    return outcome
