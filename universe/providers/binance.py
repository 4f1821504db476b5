"""Binance public klines: crypto OHLCV with real volume (no key; quote currency USDT).

Pages of up to 1000 daily klines are walked with ``startTime = last open + 1``; a kline
whose close time is still in the future (today's open candle) is not stored.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pandas as pd

from lab.errors import ProviderError
from universe._http import ProviderClient
from universe.providers.base import AssetInfo, empty_bars, raw_bars

__all__ = ["Binance"]

PAGE = 1000
DAY_MS = 86_400_000


class Binance:
    name = "binance"
    asset_classes = frozenset({"crypto"})

    def __init__(self, client: ProviderClient, quote: str = "USDT"):
        self.client = client
        self.quote = quote

    def fetch_bars(self, symbol: str, asset_class: str, since: date | None) -> pd.DataFrame:
        pair = f"{symbol}{self.quote}"
        start = int(datetime.combine(since or date(2017, 1, 1), time(), tzinfo=UTC).timestamp() * 1000)
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        klines: list[list] = []
        while True:
            page = self.client.get_json("/api/v3/klines", {"symbol": pair, "interval": "1d",
                                                           "startTime": start, "limit": PAGE})
            if not isinstance(page, list):
                raise ProviderError(self.name, f"klines for {pair} is not a list")
            klines.extend(page)
            if len(page) < PAGE:
                break
            try:
                start = int(page[-1][0]) + 1
            except (IndexError, TypeError, ValueError):
                raise ProviderError(self.name, f"malformed kline in {pair}: {page[-1]!r:.80}") from None
        try:
            closed = [k for k in klines if int(k[6]) < now_ms]
            if not closed:
                return empty_bars(self.name)
            return raw_bars(pd.to_datetime([int(k[0]) for k in closed], unit="ms", utc=True),
                            [k[1] for k in closed], [k[2] for k in closed], [k[3] for k in closed],
                            [k[4] for k in closed], [k[5] for k in closed], source=self.name)
        except (IndexError, TypeError, ValueError) as exc:
            raise ProviderError(self.name, f"malformed klines for {pair}: {exc}") from None

    def fetch_metadata(self, symbols: list[str], asset_class: str) -> list[AssetInfo]:
        return []
