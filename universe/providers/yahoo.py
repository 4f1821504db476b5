"""Yahoo's chart endpoint: the fallback for stocks and crypto (unofficial; no SLA).

Daily bars are stamped at the session open in UTC; the session date is taken in the
exchange's time zone (``meta.exchangeTimezoneName``). ``close`` is split-adjusted; when
``adjclose`` is present the whole bar is scaled to it (see :mod:`universe.adjust`), so
Yahoo bars match the lab's adjusted-price convention. ``null`` entries are kept as NaN
for validation to quarantine.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import pandas as pd

from lab.errors import ProviderError
from universe._http import ProviderClient, error_text
from universe.adjust import adjust_prices
from universe.providers.base import AssetInfo, empty_bars, raw_bars

__all__ = ["Yahoo", "yahoo_symbol"]


def yahoo_symbol(symbol: str, asset_class: str) -> str:
    return f"{symbol}-USD" if asset_class == "crypto" else symbol.replace(".", "-")


class Yahoo:
    name = "yahoo"
    asset_classes = frozenset({"stocks", "crypto"})

    def __init__(self, client: ProviderClient):
        self.client = client

    def _check(self, body: Any) -> None:
        chart = body.get("chart") if isinstance(body, dict) else None
        if not isinstance(chart, dict):
            raise ProviderError(self.name, "response lacks 'chart'")
        if chart.get("error"):
            raise ProviderError(self.name, error_text(body))

    def fetch_bars(self, symbol: str, asset_class: str, since: date | None) -> pd.DataFrame:
        ticker = yahoo_symbol(symbol, asset_class)
        start = datetime.combine(since or date(1970, 1, 2), time(), tzinfo=UTC)
        params = {"period1": int(start.timestamp()), "period2": int(datetime.now(UTC).timestamp()),
                  "interval": "1d", "events": "div,splits", "includePrePost": "false"}
        body = self.client.get_json(f"/v8/finance/chart/{ticker}", params, check=self._check)
        results = body["chart"].get("result") or []
        if not results or not results[0].get("timestamp"):
            return empty_bars(self.name)
        result = results[0]
        try:
            zone = result.get("meta", {}).get("exchangeTimezoneName") or "UTC"
            stamps = pd.to_datetime(result["timestamp"], unit="s", utc=True).tz_convert(zone)
            quote = result["indicators"]["quote"][0]
            n = len(stamps)
            columns = {k: list(quote.get(k) or [None] * n) for k in ("open", "high", "low", "close", "volume")}
            if any(len(v) != n for v in columns.values()):
                raise ProviderError(self.name, f"quote arrays for {ticker} do not match its timestamps")
            frame = raw_bars(stamps, columns["open"], columns["high"], columns["low"], columns["close"],
                             columns["volume"], source=self.name)
            adjclose = (result["indicators"].get("adjclose") or [{}])[0].get("adjclose")
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderError(self.name, f"malformed chart for {ticker}: missing {exc}") from None
        if adjclose is not None and len(adjclose) == n:
            order = stamps.argsort(kind="stable")
            adj = pd.to_numeric(pd.Series(adjclose, dtype=object), errors="coerce").astype(float).to_numpy()
            frame["adj_close"] = adj[order]
            frame = adjust_prices(frame)
        return frame[frame["ts"] >= pd.Timestamp(start)].reset_index(drop=True)

    def fetch_metadata(self, symbols: list[str], asset_class: str) -> list[AssetInfo]:
        return []
