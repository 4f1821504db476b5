"""``lab features``: compute a feature set for stored bars (on Ray, cached) and write Parquet."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lab.cli._common import console, output_file, print_table
from lab.features import FEATURE_SETS, get_feature_set
from lab.featurestore import require_stored_bars, universe_features
from lab.runtime import ensure_ray, open_lab

__all__ = ["features_cmd"]


def features_cmd(
    symbols: list[str] | None = typer.Option(
        None, "--symbols", "-s", help="symbols (repeat or comma-separate); default: the configured universe"),
    feature_set: str = typer.Option("technical@1", "--feature-set", "-f",
                                    help=f"one of {', '.join(sorted(FEATURE_SETS))}"),
    out: Path | None = typer.Option(None, "--out",
                                    help="Parquet file (default: LAB_HOME/features/<set name>-v<version>.parquet)"),
    ray: bool = typer.Option(True, "--ray/--no-ray", help="fan out on Ray (RAY_ADDRESS or a local Ray)"),
) -> None:
    """Compute a feature set per symbol (cached per symbol) and write one long Parquet file."""
    fs = get_feature_set(feature_set)
    lab = open_lab()
    target = output_file("--out", out or lab.settings.home / "features" / f"{fs.name}-v{fs.version}.parquet")
    wanted = sorted({s.strip().upper() for item in symbols or [] for s in item.split(",") if s.strip()}) or None
    require_stored_bars(lab, wanted)  # before Ray's start-up: a symbol not stored is named in a moment
    if ray:
        ensure_ray(lab.settings)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks: dict[str, int] = {}

        def progress(label: str, done: int, total: int) -> None:
            if label not in tasks:  # one row per group (setdefault would add a row on every call)
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        run = universe_features(lab, fs.key, wanted, use_ray=ray, progress=progress)
    run.long_frame().to_parquet(target, index=False)
    if run.problems:
        print_table("Symbols with problems", ["symbol", "problem"], run.problems)
    console.print(f"{len(run.frames)} series ({run.computed} computed, {run.cached} from cache) x "
                  f"{len(fs.columns)} model columns -> {target}")
