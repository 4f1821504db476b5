"""``lab demo``: the main job on the embedded default, with progress and a summary of where to look."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lab.cli._common import console, figure, free_port, print_table

if TYPE_CHECKING:
    from lab.trading.cycle import CycleResult

__all__ = ["demo"]


def demo(
    trials: int | None = typer.Option(None, min=1, help="tuning trials per strategy (default: config tuning.trials)"),
    paper_days: int = typer.Option(10, min=1, max=60, help="paper-trading days through Serve per asset class"),
    port: int = typer.Option(8000, min=1, max=65535, help="Serve HTTP port"),
    dashboard: bool = typer.Option(True, help="start the Ray dashboard"),
    verbose: bool = typer.Option(False, help="show Prefect's flow and task logs"),
) -> None:
    """Run the whole pipeline on the embedded default (SQLite, local Ray, offline data, no keys)."""
    free_port("127.0.0.1", port)
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.demo import run_demo_pipeline

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("starting", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        outcome = run_demo_pipeline(trials=trials, paper_days=paper_days, serve_port=port, dashboard=dashboard,
                                    progress=progress)
    from lab.settings import get_settings

    _print_summary(outcome, dashboard=_ray_dashboard(), on_cluster=bool(get_settings().ray_address))


def _print_summary(outcome, *, dashboard: str | None = None, on_cluster: bool = False) -> None:
    """The demo's tables and where to look. ``dashboard``: the Ray dashboard's URL, if one ran;
    ``on_cluster``: the demo joined RAY_ADDRESS, whose Serve and dashboard outlive it (a private
    local Ray, and the Serve and dashboard on it, stop when the demo exits)."""
    ingest = outcome.ingest
    console.print(f"ingested: {ingest['stored']} rows stored, {ingest['quarantined']} quarantined, "
                  f"{len(ingest['failed'])} symbols failed")
    from lab.cli.tune import print_leaderboard

    print_leaderboard("Tuning leaderboard (walk-forward, out of sample)", outcome.leaderboard)
    rows = []
    for asset_class, bt in outcome.backtests.items():
        for name, m in bt["metrics"].items():
            rows.append((asset_class, name, *(figure(f, m[f]) for f in (
                "total_return", "sharpe", "max_drawdown", "win_rate", "profit_factor", "trades"))))
    decided_by = "; ".join(dict.fromkeys(bt["decided_by"] for bt in outcome.backtests.values()))
    print_table(f"Out-of-sample backtest after fees and slippage ({decided_by})",
                ["asset class", "strategy", "return", "Sharpe", "max DD", "win rate", "profit factor", "trades"],
                rows)
    print_table("Success gate (portfolio, out of sample)", ["asset class", "check", "value", "threshold", "result"], [
        (ac, c["check"], figure(c["check"], c["value"]), f"{c['op']} {figure(c['check'], c['threshold'])}",
         "PASS" if c["passed"] else "FAIL")
        for ac, bt in outcome.backtests.items() for c in bt["gate"]])
    print_table("Paper trading through Serve", ["asset class", "days", "orders", "fills", "rejected", "equity"], [
        (ac, len(cycles), sum(c["orders_placed"] for c in cycles), sum(c["fills"] for c in cycles),
         sum(c["rejected"] for c in cycles), f"{cycles[-1]['equity']:,.2f}")
        for ac, cycles in outcome.paper.items() if cycles])
    from lab.trading.cycle import CycleResult  # (pandas: not loaded for every command)

    for ac, cycles in outcome.paper.items():
        results = [CycleResult.from_summary(c) for c in cycles]
        reused = [r for r in results if r.already_completed]
        if reused:
            console.print(f"  {ac}: {_reused(ac, reused)}", highlight=False)
        for line in dict.fromkeys(line for r in results for line in r.explain()):  # as `lab trade cycle`
            console.print(f"  {ac}: {line}", highlight=False)
    console.print("\n[bold]Where to look[/]")
    for ac, bt in outcome.backtests.items():
        console.print(f"  report ({ac}):   {bt['report']}")
    if on_cluster:
        console.print(f"  Serve endpoint:   {outcome.serve_url}  (POST /predict, GET /models, /docs), on the "
                      "Ray cluster at RAY_ADDRESS")
    else:
        console.print(f"  Serve endpoint:   ran at {outcome.serve_url} during the demo and stopped with it; "
                      "`lab serve` serves the active models there again (POST /predict, GET /models, /docs)")
    api = os.environ.get("PREFECT_API_URL")
    ui = api.removesuffix("/api") if api else \
        "not running (start `prefect server start` and set PREFECT_API_URL to keep the runs)"
    console.print(f"  Prefect UI:       {ui}")
    if dashboard is None:
        console.print("  Ray dashboard:    not started")
    elif on_cluster:
        console.print(f"  Ray dashboard:    {dashboard}  (the cluster's)")
    else:
        console.print(f"  Ray dashboard:    ran at {dashboard} during the demo and stopped with it (`lab serve` "
                      "starts none); a Ray started with `ray start --head` keeps one: join it with RAY_ADDRESS")
    console.print("  portfolios:       `lab portfolio --portfolio demo-stocks`, `lab portfolio --portfolio demo-crypto`")


def _reused(asset_class: str, reused: list[CycleResult]) -> str:
    """Why a re-run's paper-trading figures and notes are an earlier run's: its cycles had
    completed then, and a portfolio's cycle runs once per decision time (no second trade)."""
    days = f"{reused[0].as_of.date()}" + (f" to {reused[-1].as_of.date()}" if len(reused) > 1 else "")
    done = max(r.completed_at for r in reused if r.completed_at)
    return (f"the {len(reused)} cycles of {days} ran before (completed by {done:%Y-%m-%d %H:%M} UTC) and were not "
            f"run again: a portfolio's cycle runs once per decision time, so the figures and notes are from "
            f"then; `lab trade cycle --portfolio demo-{asset_class} --as-of <later date>` runs a new one once "
            f"that date's bars are ingested")


def _ray_dashboard() -> str | None:
    import ray

    if not ray.is_initialized():
        return None
    # Ray 2.60 has no public accessor after init; the node's webui_url is empty without a dashboard
    url = getattr(ray._private.worker.global_worker.node, "webui_url", "")
    return f"http://{url}" if url else None
