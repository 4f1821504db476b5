"""A parameter sweep: one base spec expands into one spec per grid point (each its own
content hash and portfolio), and the runs fan out as Ray tasks. Workers only read the
database; the caller stores the results."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lab.backtest.result import BacktestResult
from lab.backtest.spec import BacktestSpec
from lab.config import TradingConfig

__all__ = ["expand_grid", "run_sweep"]


def expand_grid(base: BacktestSpec, grid: Mapping[str, Sequence[Any]]) -> list[BacktestSpec]:
    """``grid`` maps dotted config paths ("strategies.momentum.params.top_quantile") to values."""
    specs = []
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = _nested(dict(zip(keys, values, strict=True)))
        merged = _merge(base.config_overrides, overrides)
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, values, strict=True))
        specs.append(base.model_copy(update={"config_overrides": merged,
                                             "name": f"{base.label} [{label}]"}))
    return specs


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _run_one(database_url: str, models_dir: str, base: TradingConfig, spec: BacktestSpec) -> BacktestResult:
    from lab.backtest.run import run_backtest
    from lab.db import connect
    from lab.registry import ModelRegistry

    engine = connect(database_url)
    return run_backtest(engine, base, ModelRegistry(engine, Path(models_dir)), spec)


def run_sweep(database_url: str, models_dir: Path, base: TradingConfig,
              specs: Sequence[BacktestSpec]) -> list[BacktestResult]:
    """Run every spec as a Ray task (Ray must be initialised); results in spec order."""
    import ray

    task = ray.remote(num_cpus=1)(_run_one)
    base_ref = ray.put(base)
    return ray.get([task.remote(database_url, str(models_dir), base_ref, spec) for spec in specs])
