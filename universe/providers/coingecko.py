"""CoinGecko: crypto metadata (``coins/markets``) and a fallback daily history.

Choice of endpoints: ``/ohlc`` has no volume and, for ranges over 30 days, 4-day candles,
so it cannot give daily bars. ``/market_chart`` with ``interval=daily`` gives one price per
day at 00:00 UTC plus the rolling 24 h volume. A daily bar for day D is built from it:
open = price at D 00:00, close = price at D+1 00:00, volume = the 24 h volume reported at
D+1 00:00, and high/low = max/min of open and close (so the intraday range is understated;
Binance, with true OHLCV, comes first in the crypto chain for that reason). The off-grid
"now" point is dropped. Keyless/demo history is limited to 365 days.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd

from lab.errors import ProviderError
from universe._http import ProviderClient, Throttled, error_text
from universe.providers.base import AssetInfo, MetadataIncomplete, empty_bars, raw_bars

__all__ = ["CoinGecko", "KNOWN_IDS"]

DAY_MS = 86_400_000
MAX_DAYS = 365
MARKETS_PAGE = 250  # the most ids /coins/markets returns on one page (per_page 1-250, default 100)
#: symbols are not unique on CoinGecko; well-known ones are pinned, others looked up in /coins/list
KNOWN_IDS = {
    "BTC": "bitcoin", "ETH": "ethereum", "SOL": "solana", "BNB": "binancecoin", "XRP": "ripple",
    "ADA": "cardano", "DOGE": "dogecoin", "AVAX": "avalanche-2", "DOT": "polkadot", "LINK": "chainlink",
    "LTC": "litecoin", "MATIC": "matic-network", "TRX": "tron", "BCH": "bitcoin-cash",
}


class UnknownCoin(ProviderError):
    """A symbol that names no CoinGecko coin, or several."""


class CoinGecko:
    name = "coingecko"
    asset_classes = frozenset({"crypto"})

    def __init__(self, client: ProviderClient):
        self.client = client
        self._coin_list: list[dict[str, Any]] | None = None

    def _check(self, body: Any) -> None:
        if not isinstance(body, dict):
            return
        error = body.get("error")
        status = body.get("status")
        if not isinstance(status, dict) and isinstance(error, dict):
            status = error.get("status")
        code = status.get("error_code") if isinstance(status, dict) else None
        if code == 429:
            raise Throttled(self.name, "rate limited (error_code 429 in body)")
        if code is not None or "error" in body:
            raise ProviderError(self.name, f"error {code or ''} {error_text(body)}".replace("  ", " "))

    def coin_id(self, symbol: str) -> str:
        """The coin a symbol names: pinned (``KNOWN_IDS``), else the one coin with that symbol
        in ``/coins/list``; ``UnknownCoin`` for none or several."""
        if symbol in KNOWN_IDS:
            return KNOWN_IDS[symbol]
        if self._coin_list is None:
            self._coin_list = self.client.get_json("/coins/list", check=self._check)
        matches = [c["id"] for c in self._coin_list if str(c.get("symbol", "")).upper() == symbol]
        if len(matches) != 1:
            raise UnknownCoin(self.name, f"symbol {symbol} matches {len(matches)} coins "
                                         f"({', '.join(matches[:5]) or 'none'}); cannot pick one")
        return matches[0]

    def fetch_bars(self, symbol: str, asset_class: str, since: date | None) -> pd.DataFrame:
        coin = self.coin_id(symbol)
        days = MAX_DAYS if since is None else max(1, min(MAX_DAYS, (datetime.now(UTC).date() - since).days + 1))
        body = self.client.get_json(f"/coins/{coin}/market_chart",
                                    {"vs_currency": "usd", "days": days, "interval": "daily"}, check=self._check)
        try:
            prices = pd.Series({int(t): v for t, v in body["prices"] if int(t) % DAY_MS == 0}, dtype=object)
            volumes = pd.Series({int(t): v for t, v in body["total_volumes"] if int(t) % DAY_MS == 0}, dtype=object)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(self.name, f"malformed market_chart for {coin}: {exc}") from None
        if len(prices) < 2:
            return empty_bars(self.name)
        prices = pd.to_numeric(prices.sort_index(), errors="coerce").astype(float)
        stamps = prices.index.to_numpy()
        opens, closes = prices.to_numpy()[:-1], prices.to_numpy()[1:]
        consecutive = np.diff(stamps) == DAY_MS
        volume = pd.to_numeric(volumes.reindex(stamps[1:]), errors="coerce").astype(float).to_numpy()
        frame = raw_bars(pd.to_datetime(stamps[:-1][consecutive], unit="ms", utc=True),
                         opens[consecutive], np.fmax(opens, closes)[consecutive],
                         np.fmin(opens, closes)[consecutive], closes[consecutive], volume[consecutive],
                         source=self.name)
        return frame if since is None else frame[frame["ts"] >= pd.Timestamp(since, tz="UTC")]

    def fetch_metadata(self, symbols: list[str], asset_class: str) -> list[AssetInfo]:
        """``/coins/markets`` for the symbols' coins, a full page (``MARKETS_PAGE`` ids) at a
        time. A symbol that names no coin or several is left out, and named in the
        ``MetadataIncomplete`` raised with the others' metadata."""
        ids, unresolved = {}, []
        for symbol in symbols:
            try:
                ids[self.coin_id(symbol)] = symbol
            except UnknownCoin as exc:
                unresolved.append(exc.detail)
        infos: list[AssetInfo] = []
        coins = list(ids)
        for start in range(0, len(coins), MARKETS_PAGE):
            page = coins[start:start + MARKETS_PAGE]
            try:
                rows = self.client.get_json("/coins/markets", {"vs_currency": "usd", "ids": ",".join(page),
                                                               "per_page": MARKETS_PAGE, "page": 1}, check=self._check)
                if not isinstance(rows, list):
                    raise ProviderError(self.name, "coins/markets did not return a list")
            except ProviderError as exc:
                if not infos:
                    raise
                raise MetadataIncomplete(self.name, f"stopped after {len(infos)} coins: {exc.detail}", infos) from exc
            infos += [AssetInfo(symbol=ids[r["id"]], asset_class="crypto", source=self.name, name=r.get("name"),
                                market_cap=r.get("market_cap"), coingecko_id=r["id"])
                      for r in rows if r.get("id") in ids]
        if unresolved:
            raise MetadataIncomplete(self.name, "; ".join(unresolved), infos)
        return infos
