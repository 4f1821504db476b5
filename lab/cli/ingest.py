"""``lab ingest``: fetch the universe's daily bars into the database, with a progress bar."""

from __future__ import annotations

from datetime import date

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lab.cli._common import console, err_console, print_table
from lab.errors import ConfigError

__all__ = ["ingest"]


def ingest(
    source: str = typer.Option("offline", "--source", help="offline | live | files"),
    symbols: list[str] = typer.Option(None, "--symbols", help="symbols (repeat or comma-separate); default: universe"),
    since: str = typer.Option(None, "--since", help="re-fetch from this date (YYYY-MM-DD)"),
    path: str = typer.Option(None, "--path", help="folder of <SYMBOL>.csv/.parquet files (--source files)"),
    asset_class: str = typer.Option(None, "--asset-class", help="stocks | crypto (for symbols not in config)"),
) -> None:
    """Ingest daily bars: validate, store idempotently, quarantine rejects, summarise quality.
    Exits 1 when any symbol failed, after the summary (the others' bars stay stored)."""
    from lab.runtime import open_lab
    from universe.ingest import ingest_universe, plan_symbols

    if since is not None:
        try:
            date.fromisoformat(since)
        except ValueError:
            raise ConfigError([f"--since {since!r}: expected a date like 2024-01-31"]) from None
    if asset_class not in (None, "stocks", "crypto"):
        raise ConfigError([f"--asset-class {asset_class!r}: expected stocks or crypto"])
    wanted = [s for item in symbols or [] for s in item.split(",") if s.strip()] or None
    lab = open_lab()
    total = len(plan_symbols(lab.config, source, symbols=wanted, asset_class=asset_class, path=path))
    with Progress(TextColumn("[bold]ingest[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        job = bar.add_task(source, total=total)
        summary = ingest_universe(
            lab, lab.config, source=source, symbols=wanted, since=since, path=path, asset_class=asset_class,
            progress=lambda result, done, _total: bar.update(job, completed=done, description=result.symbol))
    rows = summary.table()
    print_table(f"Ingestion ({source})", list(rows[0]) if rows else ["symbol"], [list(r.values()) for r in rows])
    for line in [*summary.validation_lines(), *(f"note: {note}" for note in summary.notes)]:
        console.print(line, markup=False, highlight=False)
    console.print(f"{summary.stored} rows stored, {summary.quarantined} quarantined, "
                  f"{len(summary.failed)} symbol(s) failed")
    if (failure := summary.failure()) is not None:  # a script or CI job must see a partial failure too
        err_console.print(f"error: {failure}", markup=False, highlight=False)
        raise typer.Exit(1)
