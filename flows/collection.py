"""Scheduled data collection: stocks after the close on trading days, crypto every few hours.

Thin wrappers over the ``ingest_universe`` flow, one asset class each, with the source from
``config/trading.json`` (``data.source``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from flows.ingest import ingest_universe
from lab.runtime import open_lab
from lab.trading.calendar import market_clock

__all__ = ["run_stock_collection", "run_crypto_collection"]


def _is_trading_day(now: datetime) -> bool:
    """An NYSE session today (the midnight-UTC label stands for the whole session)."""
    return market_clock("stocks", now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)).is_open


@flow(name="run_stock_collection", log_prints=True)
def run_stock_collection(source: str | None = None, force: bool = False) -> dict:
    """Collect daily stock bars; skipped (and said so) on days the NYSE is closed."""
    if not force and not _is_trading_day(datetime.now(UTC)):
        print("not an NYSE trading day: nothing to collect")
        return {"skipped": "not an NYSE trading day"}
    return ingest_universe(source=source or open_lab().config.data.source, asset_class="stocks")


@flow(name="run_crypto_collection", log_prints=True)
def run_crypto_collection(source: str | None = None) -> dict:
    """Collect crypto bars (24/7 markets: every run collects)."""
    return ingest_universe(source=source or open_lab().config.data.source, asset_class="crypto")
