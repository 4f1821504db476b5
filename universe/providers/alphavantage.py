"""Alpha Vantage: daily stock bars (TIME_SERIES_DAILY) and fundamentals (OVERVIEW).

Alpha Vantage answers every throttle and error with HTTP 200, so a body is data only when
the expected key is there; otherwise it is classified by key, then by wording (a hint only):
a burst notice is retried after a pause, a spent daily quota stops this provider for the day,
an unknown symbol or a bad key is definitive. ``outputsize=full`` is premium on free keys: on
that notice the client falls back to ``compact`` (the last 100 sessions) and says so.

TIME_SERIES_DAILY prices are raw (as traded, not split-adjusted); validation quarantines a
batch that shows a split-like jump instead of storing mixed price levels.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd

from lab.errors import ProviderError
from universe._http import ProviderClient, Throttled
from universe.providers.base import AssetInfo, MetadataIncomplete, empty_bars, raw_bars

__all__ = ["AlphaVantage"]

log = logging.getLogger(__name__)
SERIES_KEY = "Time Series (Daily)"
#: compact covers the last 100 sessions, about 140 calendar days
COMPACT_DAYS = 140


class _PremiumParameter(ProviderError):
    pass


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # "None", "-", missing


class AlphaVantage:
    name = "alphavantage"
    asset_classes = frozenset({"stocks"})

    def __init__(self, client: ProviderClient, api_key: str):
        self.client = client
        self.api_key = api_key

    def _check(self, expected: str, *, empty_ok: bool = False):
        def check(body: Any) -> None:
            if not isinstance(body, dict):
                raise ProviderError(self.name, f"unexpected body type {type(body).__name__}")
            if expected in body or (empty_ok and body == {}):
                return
            if "Error Message" in body:
                text = str(body["Error Message"])
                if "apikey" in text.lower():
                    raise ProviderError(self.name, "API key invalid or missing (ALPHAVANTAGE_API_KEY)")
                raise ProviderError(self.name, f"rejected the request: {text[:160]}")
            if "Note" in body:  # legacy per-minute throttle
                raise Throttled(self.name, f"throttled: {str(body['Note'])[:120]}",
                                retry_after=self.client.policy.throttle_wait)
            message = str(body.get("Information") or "")
            lowered = message.lower()
            if not message:
                raise ProviderError(self.name, "empty response (unknown symbol?)" if body == {}
                                    else f"response lacks {expected!r}: keys {sorted(body)[:5]}")
            if "sparingly" in lowered or "per second" in lowered:  # the burst notice: slow down, retry
                raise Throttled(self.name, f"throttled: {message[:120]}",
                                retry_after=self.client.policy.throttle_wait)
            if "per day" in lowered:
                self.client.limiter.exhaust()
                raise ProviderError(self.name, f"daily quota spent: {message[:120]}")
            if "demo" in lowered or "apikey" in lowered:
                raise ProviderError(self.name, f"API key problem: {message[:120]}")
            if "premium" in lowered and ("parameter" in lowered or "feature" in lowered):
                raise _PremiumParameter(self.name, f"premium-only parameter: {message[:120]}")
            if "premium endpoint" in lowered:
                raise ProviderError(self.name, f"premium endpoint: {message[:120]}")
            raise ProviderError(self.name, f"unrecognised notice: {message[:120]}")
        return check

    def _query(self, params: dict[str, str], expected: str, *, empty_ok: bool = False) -> Any:
        return self.client.get_json("/query", {**params, "apikey": self.api_key},
                                    check=self._check(expected, empty_ok=empty_ok))

    def fetch_bars(self, symbol: str, asset_class: str, since: date | None) -> pd.DataFrame:
        recent = since is not None and (datetime.now(UTC).date() - since).days <= COMPACT_DAYS
        params = {"function": "TIME_SERIES_DAILY", "symbol": symbol}
        try:
            body = self._query({**params, "outputsize": "compact" if recent else "full"}, SERIES_KEY)
        except _PremiumParameter:
            log.warning("alphavantage: outputsize=full is premium for this key; using compact (100 sessions)")
            body = self._query({**params, "outputsize": "compact"}, SERIES_KEY)
        series = body[SERIES_KEY]
        if not isinstance(series, dict):
            raise ProviderError(self.name, f"{SERIES_KEY!r} is not an object for {symbol}")
        if not series:
            return empty_bars(self.name)
        rows = list(series.items())
        try:
            frame = raw_bars(
                [day for day, _ in rows],
                [v.get("1. open") for _, v in rows], [v.get("2. high") for _, v in rows],
                [v.get("3. low") for _, v in rows], [v.get("4. close") for _, v in rows],
                [v.get("5. volume") for _, v in rows], source=self.name)
        except (AttributeError, ValueError, TypeError) as exc:
            raise ProviderError(self.name, f"malformed daily series for {symbol}: {exc}") from None
        return frame if since is None else frame[frame["ts"] >= pd.Timestamp(since, tz="UTC")]

    def fetch_metadata(self, symbols: list[str], asset_class: str) -> list[AssetInfo]:
        """One OVERVIEW request per symbol: when the quota runs out part-way, the ones fetched
        come back in ``MetadataIncomplete``."""
        infos: list[AssetInfo] = []
        for symbol in symbols:
            try:
                body = self._query({"function": "OVERVIEW", "symbol": symbol}, "Symbol", empty_ok=True)
            except ProviderError as exc:
                if not infos:
                    raise
                raise MetadataIncomplete(self.name, f"stopped at {symbol}: {exc.detail}", infos) from exc
            if not body.get("Symbol"):
                continue  # {} = unknown symbol or an ETF: no fundamentals, not an error
            infos.append(AssetInfo(
                symbol=symbol, asset_class="stocks", source=self.name, name=body.get("Name"),
                sector=(body.get("Sector") or None), industry=(body.get("Industry") or None),
                exchange=body.get("Exchange"), market_cap=_number(body.get("MarketCapitalization")),
                pe_ratio=_number(body.get("PERatio")), pb_ratio=_number(body.get("PriceToBookRatio")),
            ))
        return infos
