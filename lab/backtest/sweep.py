"""A parameter sweep: a base spec and a grid of config settings expand into one spec per
grid point (each its own content hash and portfolio), every point checked before any runs;
the runs fan out as Ray tasks (workers only read the database and model files, so on a
cluster both must be reachable from every node; the caller stores the results); and the
comparison judges the best point against how many were tried, because picking it by its
result over the same period is a choice made in sample. Only a run with a Sharpe ratio can
be the best: one that never traded kept a flat equity, which has none (a Sharpe of 0 would
have put it above every run that lost), and a sweep where no run has one has no best."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lab.backtest.result import BacktestResult
from lab.backtest.run import checked_config
from lab.backtest.spec import BacktestSpec, nested_settings, run_settings, settings_label
from lab.backtest.store import save_result
from lab.config import TradingConfig
from lab.errors import ConfigError, LabError
from lab.models.scoring import deflated_sharpe_ratio, sharpe_ratio
from lab.performance import Metrics, returns_of
from lab.runtime import LabContext, ensure_ray

__all__ = ["SweepComparison", "SweepPoint", "SweepRow", "compare", "expand_grid", "no_best", "run_stored_sweep",
           "run_sweep"]


@dataclass(frozen=True)
class SweepPoint:
    settings: dict[str, Any]  # dotted config path -> the value of this point
    spec: BacktestSpec


def expand_grid(base: BacktestSpec, grid: Mapping[str, Sequence[Any]], config: TradingConfig) -> list[SweepPoint]:
    """One point per combination of ``grid``, which maps dotted config paths
    ("strategies.momentum.params.top_quantile") to the values to try. Every point must make
    a valid config for ``config`` and be a distinct run, or none is returned."""
    problems = [] if grid else ["sweep: no setting to vary"]
    problems += [f"sweep {key}: needs a non-empty list of values, got {values!r}" for key, values in grid.items()
                 if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values]
    try:
        nested_settings(dict.fromkeys(grid))
    except ConfigError as exc:
        problems += [f"sweep {problem}" for problem in exc.problems]
    problems += [f"sweep {key}: the base run's overrides set it already" for key in grid
                 if _set_at(base.config_overrides, key)]
    if problems:
        raise ConfigError(problems)
    points, seen = [], {}
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values, strict=True))
        label = settings_label(settings)
        try:
            spec = base.with_settings(settings)
            # what the backtest reads: a point that changes only what it does not is the same run
            run_config = json.dumps(run_settings(checked_config(config, spec), spec.strategies), sort_keys=True)
        except ConfigError as exc:
            problems.extend(f"sweep point {label}: {problem}" for problem in exc.problems)
            continue
        if run_config in seen:
            problems.append(f"sweep point {label}: the same backtest settings as {seen[run_config]}")
        seen[run_config] = label
        points.append(SweepPoint(settings, spec))
    if problems:
        raise ConfigError(problems)
    return points


def _set_at(overrides: Mapping[str, Any], path: str) -> bool:
    """Whether ``overrides`` set a dotted path, or a value on its way there."""
    node: Any = overrides
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return True
        if part not in node:
            return False
        node = node[part]
    return True


def _run_one(database_url: str, models_dir: str, base: TradingConfig, spec: BacktestSpec) -> BacktestResult:
    from lab.backtest.run import run_backtest
    from lab.db import connect
    from lab.registry import ModelRegistry

    engine = connect(database_url)
    return run_backtest(engine, base, ModelRegistry(engine, Path(models_dir)), spec)


def run_sweep(database_url: str, models_dir: Path, base: TradingConfig,
              specs: Sequence[BacktestSpec]) -> list[BacktestResult]:
    """Run every spec as a Ray task (Ray must be initialised); results in spec order. Runs
    that fail for a reason the lab reports (no bars, no model, ...) are gathered until every
    run has ended, then one error names each reason and its runs."""
    import ray
    from ray.exceptions import RayTaskError

    task = ray.remote(num_cpus=1)(_run_one)
    base_ref = ray.put(base)
    refs = [task.remote(database_url, str(models_dir), base_ref, spec) for spec in specs]
    results, failed = [], {}
    for spec, ref in zip(specs, refs, strict=True):
        try:
            results.append(ray.get(ref))
        except RayTaskError as exc:
            if not isinstance(exc.cause, LabError):
                raise
            failed.setdefault(str(exc.cause), []).append(spec.label)
    if failed:
        raise LabError("\n".join(f"sweep: {reason} (in {len(runs)} of {len(specs)} runs: {'; '.join(runs)})"
                                 for reason, runs in failed.items()))
    return results


@dataclass(frozen=True)
class SweepRow:
    settings: dict[str, Any]
    backtest_id: int
    portfolio: str
    metrics: Metrics  # the portfolio's
    gate_passed: bool


@dataclass(frozen=True)
class SweepComparison:
    rows: list[SweepRow]  # in grid order
    #: the row with the highest Sharpe among those that have one; None when none has
    best: int | None
    #: the probability that the best row's true Sharpe beats the best that ``len(rows)`` runs
    #: without skill would show by luck (Bailey and Lopez de Prado's deflated Sharpe ratio);
    #: None without a best
    deflated_sharpe: float | None


def no_best(runs: int) -> str:
    """Why a sweep of ``runs`` runs, none with a Sharpe ratio, names no best (the CLI and the
    flow say it alike)."""
    return (f"none of the {runs} runs has a Sharpe ratio (a run that never trades keeps a flat equity, which "
            f"has none), so there is no best to pick and no deflated Sharpe to give")


def run_stored_sweep(lab: LabContext, base: BacktestSpec,
                     grid: Mapping[str, Sequence[Any]]) -> tuple[SweepComparison, list[BacktestResult]]:
    """Every point checked, run on Ray (joined or started), stored; their comparison."""
    points = expand_grid(base, grid, lab.config)
    ensure_ray(lab.settings)
    results = run_sweep(lab.settings.database_url, lab.settings.models_dir, lab.config, [p.spec for p in points])
    ids = [save_result(lab.engine, result) for result in results]
    return compare(points, results, ids), results


def compare(points: Sequence[SweepPoint], results: Sequence[BacktestResult], ids: Sequence[int]) -> SweepComparison:
    """Each point's portfolio figures and success gate; the best by the Sharpe of those that
    have one (as the table shows it), deflated for every point tried: a run without a Sharpe
    was tried too, and its Sharpe counts as 0 in the spread of the trials' Sharpes (it earned
    nothing)."""
    returns = [returns_of(r.equity_curve).to_numpy() for r in results]
    sharpes = np.array([sharpe_ratio(x) for x in returns])
    rows = [SweepRow(p.settings, backtest_id, r.portfolio, r.metrics()["portfolio"], all(c.passed for c in r.gate()))
            for p, r, backtest_id in zip(points, results, ids, strict=True)]
    defined = [i for i, row in enumerate(rows) if math.isfinite(row.metrics.sharpe)]
    if not defined:
        return SweepComparison(rows, None, None)
    best = max(defined, key=lambda i: rows[i].metrics.sharpe)
    return SweepComparison(rows, best, deflated_sharpe_ratio(returns[best], sharpes, len(rows)))
