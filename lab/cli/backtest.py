"""``lab backtest``, ``lab backtests`` and ``lab report``: run the engine over history (one run,
or a sweep), store, list, export, report."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from lab.cli._common import console, figure, output_dir, parse_assignment, print_table
from lab.errors import ConfigError

__all__ = ["backtest", "backtests", "report"]


def backtest(
    strategy: list[str] = typer.Option(..., "--strategy", "-s", help="strategy name; repeat for several"),
    start: datetime = typer.Option(..., formats=["%Y-%m-%d"], help="first day (inclusive)"),
    end: datetime = typer.Option(..., formats=["%Y-%m-%d"], help="last day (inclusive)"),
    symbol: list[str] = typer.Option(None, "--symbol", help="symbols (default: the config universe)"),
    benchmark: str | None = typer.Option(None, help="buy-and-hold benchmark (default: the config's)"),
    walk_forward: Literal["retrain", "pretrained"] = typer.Option(
        "retrain", help="retrain (per window, past data only) or pretrained"),
    window_days: int = typer.Option(182, min=7, max=3650, help="retrain every N days"),
    export: Path | None = typer.Option(None, help="also write equity/orders/trades/positions here"),
    fmt: str = typer.Option("parquet", "--format", help="file format of --export: parquet or csv"),
    setting: list[str] = typer.Option(
        [], "--set", help="KEY=VALUE: a config setting for this run; KEY is a dotted config path, e.g. "
                          "execution.slippage_bps=5 (VALUE as JSON when it parses); repeat for more"),
    sweep: list[str] = typer.Option(
        [], help="KEY=V1,V2,... (or a JSON list): one backtest per combination, run on Ray; KEY is a dotted "
                 "config path, e.g. strategies.momentum.params.top_quantile=0.6,0.8; repeat to add settings"),
) -> None:
    """Backtest strategies through the trading engine with a historical clock."""
    from lab.backtest import BacktestSpec, WalkForward, run_backtest, save_result
    from lab.report import report_dir, write_report
    from lab.runtime import open_lab

    fixed, grid = _settings(setting), _grid(sweep)
    _check_format(fmt)
    if export is not None:
        output_dir("--export", export)
    lab = open_lab()
    spec = BacktestSpec(strategies=strategy, start=start.date(), end=end.date(), symbols=symbol or None,
                        benchmark=benchmark, walk_forward=WalkForward(mode=walk_forward, window_days=window_days))
    if fixed:
        spec = spec.with_settings(fixed)
    if grid:
        _sweep(lab, spec, grid, export, fmt)
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} bars"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"backtest {spec.label}", total=None)
        result = run_backtest(lab.engine, lab.config, lab.registry, spec,
                              progress=lambda done, total: bar.update(task, completed=done, total=total))
    backtest_id = save_result(lab.engine, result)
    _summary(result)
    if export is not None:
        for path in result.export(export, fmt):
            console.print(f"wrote {path}")
    from lab.bars import bars_by_symbol, load_bars

    bars = bars_by_symbol(load_bars(lab.engine, result.symbols, end=result.end.to_pydatetime()))
    path = write_report(result, bars, report_dir(lab.settings.home, result.portfolio))
    console.print(f"backtest {backtest_id} stored as portfolio {result.portfolio}; report: {path}")


def backtests(
    delete: list[str] = typer.Option([], help="backtest id or portfolio to delete, with its report; repeatable"),
) -> None:
    """The stored backtests (sweep points included) with their headline figures; --delete removes some."""
    from lab.backtest import list_backtests
    from lab.runtime import open_lab

    lab = open_lab()
    stored = list_backtests(lab.engine)
    if delete:
        _delete(lab, stored, delete)
        return
    if not stored:
        console.print("no stored backtests yet; run `lab backtest --strategy ... --start ... --end ...`")
        return
    print_table("Stored backtests (out of sample, after fees and slippage)",
                ["id", "name", "period", "return", "sharpe", "max dd", "trades", "gate", "stored", "portfolio"],
                [(b["id"], b["name"], f"{b['start']}..{b['end']}", _pct(b["total_return"]), _num(b["sharpe"]),
                  _pct(b["max_drawdown"]), b["trades"], "PASS" if b["gate_passed"] else "FAIL",
                  f"{b['created_at']:%Y-%m-%d %H:%M}", b["portfolio"]) for b in stored])
    console.print("a run's books: `lab portfolio --portfolio <portfolio>`; the Grafana boards list runs by portfolio too",
                  markup=False, highlight=False)


def _delete(lab, stored: list[dict[str, Any]], chosen: list[str]) -> None:
    """Delete every chosen run, or none when any of them is not stored."""
    import shutil

    from lab.backtest import delete_result
    from lab.errors import DataError
    from lab.report import report_dir

    portfolio_of = {key: b["portfolio"] for b in stored for key in (str(b["id"]), b["portfolio"])}
    if unknown := [c for c in chosen if c not in portfolio_of]:
        raise DataError(f"no stored backtest {', '.join(map(repr, unknown))}; nothing deleted (`lab backtests` lists "
                        f"them)")
    for portfolio in dict.fromkeys(portfolio_of[c] for c in chosen):  # a run named twice is deleted once
        delete_result(lab.engine, portfolio)
        folder = report_dir(lab.settings.home, portfolio)
        shutil.rmtree(folder, ignore_errors=True)
        console.print(f"deleted backtest {portfolio}: its orders, trades, positions, equity and report {folder}",
                      markup=False, highlight=False)


def report(
    backtest_id: str | None = typer.Argument(None, help="backtest id or portfolio (default: the latest)"),
    out: Path | None = typer.Option(None, help="folder for report.html and the PNGs"),
    export: Path | None = typer.Option(None, help="also write its equity/orders/trades/positions here"),
    fmt: str = typer.Option("parquet", "--format", help="file format of --export: parquet or csv"),
) -> None:
    """Write the HTML report (with PNG charts) of a stored backtest and print its path."""
    from lab.backtest import list_backtests, load_result
    from lab.errors import DataError
    from lab.report import report_dir, write_stored_report
    from lab.runtime import open_lab

    _check_format(fmt)
    for option, directory in (("--out", out), ("--export", export)):
        if directory is not None:
            output_dir(option, directory)
    lab = open_lab()
    stored = list_backtests(lab.engine)
    if not stored:
        raise DataError("no stored backtests yet; run `lab backtest --strategy ... --start ... --end ...` first")
    result = load_result(lab.engine, backtest_id or str(stored[-1]["id"]))
    if export is not None:
        for written in result.export(export, fmt):
            console.print(f"wrote {written}")
    console.print(str(write_stored_report(lab.engine, result, out or report_dir(lab.settings.home, result.portfolio))))


def _check_format(fmt: str) -> None:
    from lab.backtest import ExportFormat

    if fmt not in ExportFormat.__members__.values():
        raise ConfigError([f"--format {fmt!r}: expected one of {', '.join(ExportFormat)}"])


def _by_key(option: str, items: list[str]) -> dict[str, tuple[Any, str]]:
    """An option's ``KEY=VALUE`` items, each key once: the value parsed (``parse_assignment``)
    and as written."""
    out: dict[str, tuple[Any, str]] = {}
    for item in items:
        key, value = parse_assignment(option, item)
        if key in out:
            raise ConfigError([f"{option} {key}: given twice"])
        out[key] = (value, item.partition("=")[2])
    return out


def _settings(items: list[str]) -> dict[str, Any]:
    """``--set`` options: one value each."""
    return {key: value for key, (value, _) in _by_key("--set", items).items()}


def _grid(items: list[str]) -> dict[str, list]:
    """``--sweep`` options as a grid: a value that is JSON is one value (a list: the values),
    other text is split on commas, each piece JSON when it parses."""
    grid = {}
    for key, (value, text) in _by_key("--sweep", items).items():
        if isinstance(value, list):
            grid[key] = value
        elif value == text:  # not JSON
            grid[key] = [parse_assignment("--sweep", f"{key}={piece.strip()}")[1] for piece in text.split(",")]
        else:
            grid[key] = [value]
    return grid


def _sweep(lab, spec, grid: dict[str, list], export: Path | None, fmt: str) -> None:
    """One row per stored run, and the best judged against the number tried."""
    from lab.backtest.spec import folder_name, setting_names
    from lab.backtest.sweep import no_best, run_stored_sweep

    comparison, results = run_stored_sweep(lab, spec, grid)
    if export is not None:
        for result in results:
            result.export(export / folder_name(result.portfolio), fmt)
        console.print(f"wrote each run's frames under {export}")
    print_table(f"Sweep of {spec.label} (each run out of sample, after fees and slippage)",
                [*setting_names(grid).values(), "id", *_FIGURES, "gate", ""],
                [(*row.settings.values(), row.backtest_id, *_figures(row.metrics),
                  "PASS" if row.gate_passed else "FAIL", "best" if i == comparison.best else "")
                 for i, row in enumerate(comparison.rows)])
    n = len(comparison.rows)
    if comparison.best is None:
        verdict = no_best(n)
        console.print(f"{verdict[0].upper()}{verdict[1:]}. `lab report ID` writes any run's report.", markup=False,
                      highlight=False)
        return
    console.print(f"The best Sharpe was picked from {n} runs over the same period, so the pick itself is in "
                  f"sample: its deflated Sharpe is {comparison.deflated_sharpe:.2f} (the probability that it beats "
                  f"what the best of {n} runs without skill would show; trust it above 0.95). `lab report ID` "
                  f"writes any run's report.")


_FIGURES = ("return", "sharpe", "max dd", "trades", "win rate", "profit factor")


def _figures(m) -> tuple:
    """A result's ``_FIGURES`` as table cells (``m``: its ``Metrics``)."""
    return (_pct(m.total_return), _num(m.sharpe), _pct(m.max_drawdown), m.trades, _pct(m.win_rate),
            _num(m.profit_factor))


def _summary(result) -> None:
    print_table(f"Backtest {result.name} (out of sample, after fees and slippage)", ["", *_FIGURES],
                [(name, *_figures(m)) for name, m in result.metrics().items()])
    print_table("Success gate", ["criterion", "measured", "required", "result"],
                [(c.name, figure(c.name, c.value), f"{c.op} {figure(c.name, c.threshold)}",
                  "PASS" if c.passed else "FAIL")
                 for c in result.gate()])
    from lab.backtest.funnel import funnel_table, refusals

    print_table("Signals: how far each strategy's got", *funnel_table(result.funnel))
    for line in refusals(result.funnel):
        console.print(line, markup=False, highlight=False)
    for note in result.gap_notes():
        console.print(f"data gap: {note}", markup=False, highlight=False)


def _pct(value) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def _num(value) -> str:
    """Two decimals (a count as it is); "-" where there is no figure, "inf" for a profit factor
    without a loss."""
    if isinstance(value, int):
        return str(value)
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"
