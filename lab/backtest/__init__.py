"""Backtests: the trading engine (signal engine, portfolio manager, paper executor) driven
by a historical clock, with walk-forward models, storage, export and parameter sweeps."""

from lab.backtest.decisions import CrossoverDecisions, EngineDecisions, WalkForwardPredictions
from lab.backtest.result import BacktestResult, ExportFormat
from lab.backtest.run import backtest_config, run_backtest, run_with_decisions
from lab.backtest.spec import BacktestSpec, WalkForward
from lab.backtest.store import delete_result, list_backtests, load_result, save_result

__all__ = [
    "BacktestResult",
    "BacktestSpec",
    "CrossoverDecisions",
    "EngineDecisions",
    "ExportFormat",
    "WalkForward",
    "WalkForwardPredictions",
    "backtest_config",
    "delete_result",
    "list_backtests",
    "load_result",
    "run_backtest",
    "run_with_decisions",
    "save_result",
]
