"""Prefect flows ``run_backtest`` (a stored backtest with its report attached as a link
artifact) and ``run_backtest_sweep`` (one stored backtest per grid point, compared in a
table artifact)."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow
from prefect.artifacts import create_link_artifact, create_table_artifact

from lab.backtest import BacktestSpec, WalkForward, run_backtest, save_result
from lab.backtest.sweep import no_best, run_stored_sweep
from lab.bars import bars_by_symbol, load_bars
from lab.report import report_dir, write_report
from lab.runtime import open_lab

__all__ = ["backtest_flow", "sweep_flow"]


def _spec(strategies: list[str], start: date, end: date, walk_forward: str, name: str | None,
          symbols: list[str] | None, settings: dict[str, Any] | None) -> BacktestSpec:
    spec = BacktestSpec(strategies=strategies, start=start, end=end,
                        symbols=symbols, walk_forward=WalkForward(mode=walk_forward), name=name)
    return spec.with_settings(settings) if settings else spec


@flow(name="run_backtest", log_prints=True)
def backtest_flow(strategies: list[str], start: date, end: date, walk_forward: str = "retrain",
                  name: str | None = None, symbols: list[str] | None = None,
                  settings: dict[str, Any] | None = None) -> dict:
    """Backtest ``strategies`` over [start, end] (``settings``: dotted config paths -> values,
    as ``lab backtest --set``); returns the stored id, report path, metrics, gate and what decided
    the trades (``decided_by``: how the models stayed out of sample)."""
    lab = open_lab()
    spec = _spec(strategies, start, end, walk_forward, name, symbols, settings)
    result = run_backtest(lab.engine, lab.config, lab.registry, spec)
    backtest_id = save_result(lab.engine, result)
    bars = bars_by_symbol(load_bars(lab.engine, result.symbols, end=result.end.to_pydatetime()))
    report = write_report(result, bars, report_dir(lab.settings.home, result.portfolio))
    metrics = {name: m.as_dict() for name, m in result.metrics().items()}
    gate = [{"check": c.name, "value": c.value, "op": c.op, "threshold": c.threshold, "passed": c.passed}
            for c in result.gate()]
    create_link_artifact(key="backtest-report", link=report.as_uri(), link_text=f"report of {spec.label}",
                         description=f"backtest {backtest_id}: {spec.label}")
    create_table_artifact(key="backtest-gate", table=gate, description=f"success gate of {spec.label}")
    print(f"backtest {backtest_id} ({result.portfolio}): report {report}")
    return {"id": backtest_id, "portfolio": result.portfolio, "report": str(report), "metrics": metrics, "gate": gate,
            "decided_by": result.decided_by}


@flow(name="run_backtest_sweep", log_prints=True)
def sweep_flow(strategies: list[str], start: date, end: date, grid: dict[str, list], walk_forward: str = "retrain",
               name: str | None = None, symbols: list[str] | None = None,
               settings: dict[str, Any] | None = None) -> dict:
    """One backtest per combination of ``grid`` (dotted config path -> values; ``settings``
    fixed for all), run on Ray and stored; returns each run's figures and the best's id and
    deflated Sharpe (both None when no run has a Sharpe ratio)."""
    lab = open_lab()
    spec = _spec(strategies, start, end, walk_forward, name, symbols, settings)
    comparison, _ = run_stored_sweep(lab, spec, grid)
    runs = [{**row.settings, "id": row.backtest_id, "portfolio": row.portfolio, **row.metrics.as_dict(),
             "gate_passed": row.gate_passed} for row in comparison.rows]
    if comparison.best is None:
        best, verdict = None, no_best(len(runs))
    else:
        best = runs[comparison.best]["id"]
        verdict = f"the best Sharpe (id {best}) has a deflated Sharpe of {comparison.deflated_sharpe:.2f}"
    create_table_artifact(key="backtest-sweep", table=runs,
                          description=f"sweep of {spec.label}: {len(runs)} runs; {verdict}")
    print(f"sweep of {spec.label}: {len(runs)} runs stored; {verdict}")
    return {"runs": runs, "best": best, "deflated_sharpe": comparison.deflated_sharpe}
