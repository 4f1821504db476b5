"""The scheduled paper-trading cycle, one asset class at a time, through the Serve endpoint."""

from __future__ import annotations

from datetime import datetime

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from lab.runtime import open_lab
from lab.trading.cycle import check_asset_classes, decision_time
from lab.trading.cycle import run_trading_cycle as cycle
from serving.client import ServePredictionClient

__all__ = ["run_trading_cycle"]


@task(name="trading-cycle", retries=1, retry_delay_seconds=30, timeout_seconds=900, tags={"trading-cycle"})
def _cycle(as_of: datetime, portfolio: str, asset_class: str, serve_url: str | None) -> dict:
    ctx = open_lab()
    url = serve_url or ctx.settings.serve_url
    token = ctx.settings.serve_token.get_secret_value() if ctx.settings.serve_token else None
    with ServePredictionClient(url, token) as predictions:
        result = cycle(ctx, as_of, portfolio=portfolio, predictions=predictions, asset_classes=[asset_class])
    for line in result.explain():
        print(f"  {line}")
    return result.summary()


@flow(name="run_trading_cycle", log_prints=True)
def run_trading_cycle(asset_class: str = "stocks", as_of: datetime | None = None, portfolio: str = "paper",
                      serve_url: str | None = None) -> dict:
    """One cycle at ``as_of`` (default now; without a zone, UTC). Re-running the same ``as_of`` is a no-op.
    An ``asset_class`` the universe lacks fails the flow before its task starts (and retries)."""
    when = decision_time(as_of)
    ctx = open_lab()
    check_asset_classes(ctx.config, [asset_class])
    summary = _cycle(when, portfolio, asset_class, serve_url)
    from lab.trading.reports import cycle_tables

    signals, orders = cycle_tables(ctx.engine, portfolio, when)
    create_table_artifact(key=f"signals-{asset_class}", table=signals or [{"signals": "none"}],
                          description=f"signals of the {asset_class} cycle at {when.isoformat()}")
    create_table_artifact(key=f"orders-{asset_class}", table=orders or [{"orders": "none"}],
                          description=f"orders of the {asset_class} cycle at {when.isoformat()}")
    print(f"{asset_class} cycle {when.isoformat()}: {summary['orders_placed']} orders, {summary['fills']} fills, "
          f"equity {summary['equity']:,.2f}")
    return summary
