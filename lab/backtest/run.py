"""``run_backtest``: load and check the bars, build the decisions, replay, attach gaps.

Every figure it produces is out of sample: models are refitted per window on bars before
the window (or come from a registry version registered before the start), fees and
slippage come from the configured executor, and the benchmark's buy-and-hold runs on the
same bars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import pandas as pd
from pydantic import ValidationError

from lab.backtest.data import (
    check_period,
    first_day,
    missing_sessions,
    require_bars,
    require_fundamentals,
    require_sessions,
    span,
)
from lab.backtest.decisions import (
    Decisions,
    EngineDecisions,
    WalkForwardPredictions,
    pretrained_predictions,
)
from lab.backtest.replay import Market, replay
from lab.backtest.result import BacktestResult
from lab.backtest.spec import BacktestSpec, run_settings
from lab.bars import bars_by_symbol, load_bars, stored_spans
from lab.config import TradingConfig, check_strategies
from lab.errors import ConfigError, DataError
from lab.features import get_feature_set, load_fundamentals
from lab.registry import ModelRegistry
from lab.strategy import get_strategy
from lab.trading.market import HISTORY_DAYS, FeatureFrames

__all__ = ["backtest_config", "checked_config", "run_backtest", "run_with_decisions"]

Progress = Callable[[int, int], None]


def backtest_config(base: TradingConfig, spec: BacktestSpec, asset_types: Mapping[str, str]) -> TradingConfig:
    """The run's config: overrides applied, only the run's strategies enabled, and the
    universe narrowed to the run's symbols. Each class keeps its configured benchmark, whatever
    ``spec.benchmark`` says: that benchmark feeds the symbols' relative-strength features, as it
    does in training and in the live cycle, while the spec's is only the buy-and-hold line the
    run is compared with (a benchmark chosen for the comparison changed the trades)."""
    config = checked_config(base, spec)
    raw = config.model_dump(mode="json")
    symbols = spec.symbols or _config_symbols(config, spec.strategies)
    universe = {}
    for asset_class, current in config.universe.asset_classes().items():
        chosen = [s for s in symbols if asset_types.get(s, asset_class_guess(config, s)) == asset_class]
        if chosen:
            universe[asset_class] = {"symbols": chosen, "benchmark": current.benchmark}
    if not universe:
        raise ConfigError([f"none of {', '.join(symbols)} belongs to a configured asset class"])
    raw["universe"] = universe
    strategies = raw.get("strategies", {})
    for name in list(strategies):
        strategies[name]["enabled"] = name in spec.strategies
    return TradingConfig.model_validate(raw)


def checked_config(base: TradingConfig, spec: BacktestSpec) -> TradingConfig:
    """The base config with the spec's overrides, validated like the file itself, strategy
    parameters included: before any work, not when the signal engine first builds the
    strategy mid-run."""
    try:
        config = spec.trading_config(base)
    except ValidationError as exc:
        raise ConfigError([f"config_overrides: {'.'.join(map(str, e['loc']))}: {e['msg']}"
                           for e in exc.errors()]) from None
    if problems := check_strategies(spec.config_overrides.get("strategies") or {}):  # a dict: it validated
        raise ConfigError([f"config_overrides: {problem}" for problem in problems])
    return config


def asset_class_guess(config: TradingConfig, symbol: str) -> str:
    return config.asset_class_of(symbol) or "stocks"


def _config_symbols(config: TradingConfig, strategies: list[str]) -> list[str]:
    universes = config.universe.asset_classes()
    out: list[str] = []
    for name in strategies:
        out.extend(s for ac in config.strategy_asset_classes(name) if ac in universes
                   for s in universes[ac].symbols if s not in out)
    return out


def _benchmark_of(config: TradingConfig, spec: BacktestSpec) -> str:
    """The portfolio's buy-and-hold benchmark: the spec's, else the configured benchmark of the
    first asset class the run trades, in the order the config lists them (stocks, then crypto).
    A book holding several classes still gets one line: a blend of benchmarks would be a
    portfolio nobody holds, and a fixed rule keeps the line of a stock run when a crypto
    strategy joins it; each strategy is set beside its own class's (``_strategy_benchmarks``)."""
    if spec.benchmark:
        return spec.benchmark
    return next(iter(config.universe.asset_classes().values())).benchmark


def _strategy_benchmarks(config: TradingConfig, spec: BacktestSpec, classes: Mapping[str, list[str]],
                         asset_types: Mapping[str, str]) -> dict[str, str]:
    """Each strategy's buy-and-hold benchmark: the configured benchmark of the first of its
    asset classes (``classes``) the run trades, or the spec's where the spec's is of that class:
    a crypto strategy is judged against a coin, not against the stocks' benchmark."""
    universes = config.universe.asset_classes()
    out = {}
    for name in spec.strategies:
        asset_class = next(ac for ac in classes[name] if ac in universes)
        out[name] = spec.benchmark if spec.benchmark and asset_types.get(spec.benchmark) == asset_class \
            else universes[asset_class].benchmark
    return out


def _require_benchmarks(spec: BacktestSpec, bars: Mapping[str, pd.DataFrame], benchmarks: Iterable[str]) -> None:
    """Every buy-and-hold benchmark of the run must have bars in the period."""
    for benchmark in dict.fromkeys(benchmarks):
        if benchmark not in bars or not len(bars[benchmark].index[span(bars[benchmark].index, spec.start_ts,
                                                                       spec.end_ts)]):
            raise DataError(f"no bars for the benchmark {benchmark} between {spec.start} and {spec.end}")


def run_with_decisions(config: TradingConfig, spec: BacktestSpec, bars: Mapping[str, pd.DataFrame],
                       decisions: Decisions, *, strategies: list[str], asset_types: Mapping[str, str],
                       models: Mapping[str, dict[str, int]] | None = None,
                       compared_with: Mapping[str, str] | None = None,
                       progress: Progress | None = None) -> BacktestResult:
    """Replay ``decisions`` over the spec's period and symbols (bars already checked);
    ``models``: the registry versions the decisions predict with, which name the run too;
    ``compared_with``: each strategy's buy-and-hold benchmark (default: the portfolio's)."""
    symbols = [s for ac in config.universe.asset_classes().values() for s in ac.symbols]
    start, end = spec.start_ts, spec.end_ts
    market = Market.from_bars(bars, symbols, start, end, asset_types)
    benchmark = _benchmark_of(config, spec)
    compared = {name: (compared_with or {}).get(name, benchmark) for name in strategies}
    _require_benchmarks(spec, bars, [benchmark, *compared.values()])
    # each one's last close at or before each bar, read from its own history: reindexed onto
    # the run's bars first, a run opening on a day without a benchmark bar (a stock holiday
    # with crypto on the clock) lost the close before the start and began with none
    closes = {s: bars[s]["close"].asof(market.index).to_numpy(dtype=float) for s in {benchmark, *compared.values()}}
    result = replay(config, market, decisions, portfolio=spec.portfolio_for(config, models), name=spec.label,
                    strategies=strategies, benchmark_close=closes[benchmark],
                    per_symbol_accounts=spec.accounts == "per_symbol", progress=progress)
    result.benchmark = benchmark
    result.strategy_benchmarks = compared
    result.benchmark_closes = pd.DataFrame({s: closes[s] for s in dict.fromkeys(compared.values()) if s != benchmark},
                                           index=result.strategy_equity.index)
    result.config = spec.model_dump(mode="json")
    result.settings = run_settings(config, spec.strategies)
    result.decided_by = decisions.basis
    result.models = dict(models or {})
    result.gaps = {s: gaps for s in symbols
                   if (gaps := missing_sessions(bars[s], asset_types.get(s, "stocks"), start, end))}
    result.first_bars = {s: first for s, gaps in result.gaps.items() if gaps[0] < (first := first_day(bars[s], start, end))}
    return result


def run_backtest(engine, base: TradingConfig, registry: ModelRegistry, spec: BacktestSpec, *,
                 progress: Progress | None = None) -> BacktestResult:
    """Backtest the spec's strategies with the engine's signal engine, books and executor."""
    start, end = spec.start_ts, spec.end_ts
    check_period(start, end)
    for name in spec.strategies:
        get_strategy(name)  # an unknown name fails with a did-you-mean hint
    overridden = checked_config(base, spec)  # bad overrides fail before any bar is read
    if short := overridden.short_only_strategies(spec.strategies):
        raise ConfigError([f"{name} trades short on every signal (a pair's other leg), but risk.allow_shorts is "
                           f"false: the books would refuse all of them; allow shorts for this run "
                           f"(--set risk.allow_shorts=true) or leave {name} out" for name in short])
    wanted = spec.symbols or _config_symbols(overridden, spec.strategies)
    # every asset class's benchmark: the buy-and-hold line, and the relative-strength features
    # of the symbols of its class
    benchmark_symbols = {u.benchmark for u in overridden.universe.asset_classes().values()} | {spec.benchmark} - {None}
    history_start = start - pd.Timedelta(days=max(HISTORY_DAYS, spec.walk_forward.train_days + HISTORY_DAYS))
    frame = load_bars(engine, sorted({*wanted, *benchmark_symbols}), start=history_start.to_pydatetime(),
                      end=end.to_pydatetime())
    asset_types = dict(zip(frame["symbol"], frame["asset_type"], strict=False))
    bars = bars_by_symbol(frame)
    # the classes of the symbols traded, not of every series read (a crypto benchmark's bars)
    require_sessions({asset_types.get(s) or asset_class_guess(overridden, s) for s in wanted}, start, end)
    if not any(len(b.loc[start:end]) for b in bars.values()):
        raise DataError(f"no bars at all between {spec.start} and {spec.end} for {', '.join(wanted)}")
    require_bars(bars, wanted, start, end, stored_spans(engine, wanted))
    config = backtest_config(base, spec, asset_types)
    universe = {name: list(u.symbols) for name, u in config.universe.asset_classes().items()}
    benchmarks = {s: u.benchmark for u in config.universe.asset_classes().values() for s in u.symbols}
    classes = {name: config.strategy_asset_classes(name) for name in spec.strategies}
    per_strategy = {name: [s for ac in classes[name] for s in universe.get(ac, [])] for name in spec.strategies}
    if idle := [name for name, symbols in per_strategy.items() if not symbols]:
        raise DataError("; ".join(f"{name} trades {' and '.join(classes[name])}: none of {', '.join(wanted)} is one"
                                  for name in idle))
    compared_with = _strategy_benchmarks(config, spec, classes, asset_types)
    _require_benchmarks(spec, bars, [_benchmark_of(config, spec), *compared_with.values()])  # before any fit
    pretrained = spec.walk_forward.mode == "pretrained"
    fundamentals = None
    if on_fundamentals := [n for n in spec.strategies
                           if get_feature_set(get_strategy(n).feature_set).kind == "fundamental"]:
        fundamentals = load_fundamentals(engine, sorted({s for n in on_fundamentals for s in per_strategy[n]}))
        fundamentals = fundamentals[fundamentals["known_at"] <= end]
        for name in on_fundamentals:
            require_fundamentals(fundamentals, name, per_strategy[name], end if pretrained else start)
    walk = spec.walk_forward
    models = None
    if pretrained:
        predictions = pretrained_predictions(registry, spec.strategies, start)
        models = predictions.models
        named = ", ".join(f"{name} v{model['version']}" for name, model in models.items())
        basis = f"the registry's models {named} (active when the run began), each trained on bars before the start"
    else:
        basis = f"models retrained every {walk.window_days} days on the {walk.train_days} days before each window"
        predictions = WalkForwardPredictions.fit(
            spec.strategies, bars, symbols=per_strategy, asset_classes=asset_types, start=start, end=end,
            window_days=walk.window_days, train_days=walk.train_days, seed=spec.seed,
            benchmarks=benchmarks, fundamentals=fundamentals)
    features = FeatureFrames(bars, benchmarks=benchmarks, fundamentals=fundamentals)
    decisions = EngineDecisions(config, predictions, features, universe, basis=basis)
    return run_with_decisions(config, spec, bars, decisions, strategies=list(spec.strategies),
                              asset_types=asset_types, models=models, compared_with=compared_with,
                              progress=progress)
