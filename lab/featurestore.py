"""The universe's features from stored bars: grouped by benchmark, computed on Ray with the
per-symbol Parquet cache, and the indicators the boards plot stored in ``indicators``.

The one path the CLI (``lab features``), the training flow and ``lab demo`` share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from lab.bars import bars_by_symbol, load_bars, stored_spans
from lab.errors import DataError
from lab.features import compute_universe_features, get_feature_set, load_fundamentals, store_indicators
from lab.runtime import LabContext

__all__ = ["UniverseFeatureRun", "universe_features", "refresh_universe_features", "require_stored_bars"]

#: progress(label, done, total)
Progress = Callable[[str, int, int], None]


@dataclass
class UniverseFeatureRun:
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (symbol, problem)
    computed: int = 0
    cached: int = 0

    def long_frame(self) -> pd.DataFrame:
        parts = [f.assign(symbol=name).rename_axis("ts").reset_index() for name, f in self.frames.items()]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _wanted(ctx: LabContext, symbols: list[str] | None) -> list[str]:
    classes = ctx.config.universe.asset_classes()
    return sorted(set(symbols)) if symbols else sorted({s for u in classes.values() for s in u.symbols})


def require_stored_bars(ctx: LabContext, symbols: list[str] | None = None) -> None:
    """Refuse, before any work (a Ray start-up included), ``symbols`` (default: the universe)
    none of which has stored bars; some stored computes those, the rest as problem rows."""
    wanted = _wanted(ctx, symbols)
    if not stored_spans(ctx.engine, wanted):
        raise DataError(_no_bars(ctx, wanted))


def _no_bars(ctx: LabContext, symbols: list[str]) -> str:
    """Why ``symbols`` have no stored bars, and what stores them: ``lab ingest`` refuses a
    symbol outside the universe config unless told its asset class."""
    outside = [s for s in symbols if ctx.config.asset_class_of(s) is None]
    inside = [s for s in symbols if s not in outside]
    parts = [f"{', '.join(inside)} (ingest first: `lab ingest`)"] if inside else []
    if outside:
        them = "it" if len(outside) == 1 else "them"
        parts.append(f"{', '.join(outside)}: not in the universe ({ctx.settings.lab_config}); add {them} there, or "
                     f"`lab ingest --symbols {','.join(outside)} --asset-class stocks|crypto` stores "
                     f"{'its' if len(outside) == 1 else 'their'} bars")
    return "no stored bars for " + "; ".join(parts)


def universe_features(ctx: LabContext, feature_set: str, symbols: list[str] | None = None, *,
                      use_ray: bool = True, progress: Progress | None = None) -> UniverseFeatureRun:
    """``feature_set`` for ``symbols`` (default: the configured universe), each symbol against
    its asset class's benchmark and its gaps on its class's calendar; a benchmark without
    stored bars is a problem row of its own."""
    fs = get_feature_set(feature_set)
    classes = ctx.config.universe.asset_classes()
    wanted = _wanted(ctx, symbols)
    benchmarks = {s: u.benchmark for u in classes.values() for s in u.symbols}
    needed = set(wanted) | {benchmarks[s] for s in wanted if s in benchmarks}
    stored = bars_by_symbol(load_bars(ctx.engine, sorted(needed)))
    run = UniverseFeatureRun(problems=[(s, "no stored bars") for s in wanted if s not in stored])
    if len(run.problems) == len(wanted):
        raise DataError(_no_bars(ctx, wanted))
    fundamentals = load_fundamentals(ctx.engine, wanted) if fs.kind == "fundamental" else None
    groups: dict[str | None, list[str]] = {}
    for symbol in wanted:
        if symbol in stored:
            groups.setdefault(None if fs.kind == "pair" else benchmarks.get(symbol), []).append(symbol)
    for bench, members in groups.items():
        if bench is not None and bench not in stored:  # computed without it, as a partial gap is
            run.problems.append((bench, f"benchmark with no stored bars: rel_strength_20 is NaN for "
                                        f"{', '.join(members)}"))
        label = f"{fs.key} (benchmark {bench or '-'})"
        result = compute_universe_features(
            {s: stored[s] for s in members}, fs.key, benchmark=stored.get(bench) if bench else None,
            fundamentals=fundamentals, asset_classes={s: c for s in members if (c := ctx.config.asset_class_of(s))},
            cache_dir=ctx.settings.cache_dir / "features", use_ray=use_ray,
            progress=(lambda done, total, label=label: progress(label, done, total)) if progress else None)
        run.frames.update(result)
        run.computed += len(result.report.computed)
        run.cached += len(result.report.cached)
        run.problems += [tuple(line.split(": ", 1)) for line in result.report.lines()]  # type: ignore[misc]
    return run


def refresh_universe_features(ctx: LabContext, *, use_ray: bool = True,
                              progress: Progress | None = None) -> list[dict[str, str]]:
    """Features of every enabled strategy's set (warming the cache the tuning reads), and the
    board indicators of every symbol. Returns the problem symbols as rows."""
    sets = {get_feature_set(s.feature_set).key for s in _enabled_strategies(ctx)} | {"technical@1"}
    problems: dict[tuple[str, str], str] = {}
    for key in sorted(sets):
        run = universe_features(ctx, key, use_ray=use_ray, progress=progress)
        problems.update({(symbol, problem): key for symbol, problem in run.problems})
        if key == "technical@1":
            for symbol, frame in run.frames.items():
                store_indicators(ctx.engine, symbol, frame)
    return [{"feature_set": key, "symbol": symbol, "problem": problem} for (symbol, problem), key in problems.items()]


def _enabled_strategies(ctx: LabContext):
    from lab.strategy import get_strategy

    return [get_strategy(name) for name in ctx.config.enabled_strategies()]
