"""The lab's deployments: each flow with its schedule from ``config/trading.json``.

``lab flows serve`` registers them against the Prefect server in ``PREFECT_API_URL`` (a
``prefect server start`` on SQLite by default, PostgreSQL via Prefect's own
``PREFECT_SERVER_DATABASE_CONNECTION_URL``) and runs them on schedule in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect.schedules import Cron

from flows.backtest import backtest_flow, sweep_flow
from flows.collection import run_crypto_collection, run_stock_collection
from flows.ingest import ingest_universe
from flows.trading import run_trading_cycle
from flows.train import tune_strategies
from flows.training import run_trading_training
from lab.config import TradingConfig
from lab.errors import ConfigError

__all__ = ["Deployment", "DEPLOYMENTS", "FLOWS", "build_deployments", "get_flow", "concurrency_limits",
           "ensure_concurrency_limits"]


@dataclass(frozen=True)
class Deployment:
    name: str
    flow: Callable[..., Any]
    schedule: str  # key in config.schedules
    parameters: dict[str, Any] = field(default_factory=dict)


DEPLOYMENTS = (
    Deployment("stock-collection", run_stock_collection, "stock_collection"),
    Deployment("crypto-collection", run_crypto_collection, "crypto_collection"),
    Deployment("trading-training", run_trading_training, "trading_training"),
    Deployment("stock-trading-cycle", run_trading_cycle, "stock_trading_cycle", {"asset_class": "stocks"}),
    Deployment("crypto-trading-cycle", run_trading_cycle, "crypto_trading_cycle", {"asset_class": "crypto"}),
)

#: every flow `lab flows run NAME` can start, by flow name
FLOWS: dict[str, Callable[..., Any]] = {
    f.name: f for f in (run_stock_collection, run_crypto_collection, run_trading_training, run_trading_cycle,
                        ingest_universe, tune_strategies, backtest_flow, sweep_flow)
}


def build_deployments(config: TradingConfig) -> list:
    """RunnerDeployments with their cron schedules and time zones."""
    out = []
    for d in DEPLOYMENTS:
        schedule = config.schedules.get(d.schedule)
        if schedule is None:
            raise ConfigError([f"schedules.{d.schedule}: missing (needed by deployment {d.name})"])
        out.append(d.flow.to_deployment(name=d.name, parameters=d.parameters,
                                        schedules=[Cron(schedule.cron, timezone=schedule.timezone)]))
    return out


def concurrency_limits(config: TradingConfig) -> dict[str, int]:
    """Prefect tag limits: two fetches in flight per provider (the rate budgets pace them
    further), and one trading cycle at a time (cycles of one portfolio must not interleave)."""
    return {f"provider:{name}": 2 for name in config.rate_limits} | {"trading-cycle": 1}


def ensure_concurrency_limits(config: TradingConfig) -> dict[str, int]:
    """Create or update the tag concurrency limits on the Prefect server (idempotent)."""
    from prefect.client.orchestration import get_client

    limits = concurrency_limits(config)
    with get_client(sync_client=True) as client:
        for tag, limit in limits.items():
            client.create_concurrency_limit(tag=tag, concurrency_limit=limit)
    return limits


def get_flow(name: str) -> Callable[..., Any]:
    if name not in FLOWS:
        import difflib

        hint = difflib.get_close_matches(name, list(FLOWS), n=1)
        raise ConfigError([f"unknown flow {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                           + f"; flows: {', '.join(sorted(FLOWS))}"])
    return FLOWS[name]
