"""``lab tune``: tune, register and (if earned) activate strategy models, with progress."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lab.cli._common import console, figure, print_table
from lab.runtime import open_lab


def tune_cmd(
    strategy: list[str] | None = typer.Option(None, "--strategy", "-s",
                                              help="strategy to tune (repeatable); all enabled when omitted"),
    trials: int | None = typer.Option(None, "--trials", "-n", min=1, help="trials per strategy (config: tuning.trials)"),
) -> None:
    """Walk-forward tuning on Ray Tune + Optuna; promote only models whose holdout passes the gate."""
    from lab.models.pipeline import leaderboard, train_and_promote_all

    lab = open_lab()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"tuning {name}", total=total)
            bar.update(tasks[name], completed=done)

        outcomes = train_and_promote_all(lab, strategy or None, trials, progress)
    print_leaderboard("Tuning leaderboard", leaderboard(outcomes))
    if any(o.error for o in outcomes) and not any(o.result for o in outcomes):
        raise typer.Exit(1)


def print_leaderboard(title: str, rows: list[dict]) -> None:
    """``lab.models.pipeline.leaderboard``'s rows as ``lab tune`` and ``lab demo`` both show them,
    then each strategy's reason (the gate's verdict, or why a version was reused)."""
    columns = ("oos_score", "sharpe", "deflated_sharpe")
    print_table(title, ["strategy", "metric", "oos score", "Sharpe", "deflated Sharpe", "trials", "version", "active"],
                [(r["strategy"], r["metric"], *(figure(c, r[c]) for c in columns), r["trials"],
                  "-" if r["version"] is None else r["version"], "yes" if r["active"] else "no") for r in rows])
    for r in rows:
        console.print(f"  {r['strategy']}: {r['reason']}", highlight=False)
