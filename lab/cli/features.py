"""``lab features``: compute a feature set for stored bars (on Ray, cached) and write Parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lab.bars import bars_by_symbol, load_bars
from lab.cli._common import console, print_table
from lab.errors import DataError
from lab.features import FEATURE_SETS, compute_universe_features, get_feature_set, load_fundamentals
from lab.runtime import ensure_ray, open_lab

__all__ = ["features_cmd"]


def features_cmd(
    symbols: list[str] | None = typer.Option(
        None, "--symbols", "-s", help="symbols (repeat or comma-separate); default: the configured universe"),
    feature_set: str = typer.Option("technical@1", "--feature-set", "-f",
                                    help=f"one of {', '.join(sorted(FEATURE_SETS))}"),
    out: Path | None = typer.Option(None, "--out", help="Parquet file [default: LAB_HOME/features/<set>.parquet]"),
    ray: bool = typer.Option(True, "--ray/--no-ray", help="fan out on Ray (RAY_ADDRESS or a local Ray)"),
) -> None:
    """Compute a feature set per symbol (cached per symbol) and write one long Parquet file."""
    fs = get_feature_set(feature_set)
    lab = open_lab()
    classes = lab.config.universe.asset_classes()
    wanted = sorted({s.strip().upper() for item in symbols or [] for s in item.split(",") if s.strip()}) or \
        sorted({s for u in classes.values() for s in u.symbols})
    benchmarks = {s: u.benchmark for u in classes.values() for s in u.symbols}
    stored = bars_by_symbol(load_bars(lab.engine, sorted(set(wanted) | {benchmarks[s] for s in wanted if s in benchmarks})))
    missing = [s for s in wanted if s not in stored]
    if len(missing) == len(wanted):
        raise DataError(f"no stored bars for {', '.join(missing)} (run the ingestion first)")
    fundamentals = load_fundamentals(lab.engine, wanted) if fs.kind == "fundamental" else None
    if ray:
        ensure_ray(lab.settings)
    groups: dict[str | None, list[str]] = {}
    for symbol in wanted:
        if symbol in stored:
            groups.setdefault(None if fs.kind == "pair" else benchmarks.get(symbol), []).append(symbol)
    frames, lines = [], [[s, "no stored bars"] for s in missing]
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        for bench, members in groups.items():
            task = bar.add_task(f"{fs.key} (benchmark {bench or '-'})", total=None)
            result = compute_universe_features(
                {s: stored[s] for s in members}, fs.key, benchmark=stored.get(bench) if bench else None,
                fundamentals=fundamentals, cache_dir=lab.settings.cache_dir / "features", use_ray=ray,
                progress=lambda done, total, task=task: bar.update(task, completed=done, total=total))
            frames += [f.assign(symbol=name).rename_axis("ts").reset_index() for name, f in result.items()]
            lines += [line.split(": ", 1) for line in result.report.lines()]
    target = out or lab.settings.home / "features" / f"{fs.name}-v{fs.version}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    table.to_parquet(target, index=False)
    if lines:
        print_table("Symbols with problems", ["symbol", "problem"], lines)
    console.print(f"{len(frames)} series x {len(fs.columns)} model columns -> {target}")
