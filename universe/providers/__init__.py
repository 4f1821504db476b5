"""Market-data providers and the chain each asset class tries, in order.

``live``: stocks -> Alpha Vantage (when ``ALPHAVANTAGE_API_KEY`` is set) -> Yahoo;
crypto -> Binance (true OHLCV with volume) -> CoinGecko -> Yahoo. ``offline`` and ``files``
have one provider each. A live chain never contains offline or synthetic data: when every
live provider fails the symbol fails, it is not filled from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from lab.config import RateLimit, TradingConfig
from lab.errors import ConfigError
from lab.settings import Settings, get_settings
from universe._http import ProviderClient, RateLimiter, RetryPolicy
from universe.providers.alphavantage import AlphaVantage
from universe.providers.base import AssetInfo, Provider
from universe.providers.binance import Binance
from universe.providers.coingecko import CoinGecko
from universe.providers.files import FileProvider
from universe.providers.offline import OfflineProvider
from universe.providers.yahoo import Yahoo

__all__ = ["Endpoints", "Chains", "build_chains", "Provider", "AssetInfo", "RetryPolicy", "SOURCES"]

SOURCES = ("offline", "live", "files")


class Endpoints(BaseSettings):
    """Provider base URLs (``LAB_<PROVIDER>_URL``), so tests and proxies can redirect them."""

    model_config = SettingsConfigDict(env_prefix="LAB_", extra="ignore", frozen=True)

    alphavantage_url: str = "https://www.alphavantage.co"
    coingecko_url: str = "https://api.coingecko.com/api/v3"
    yahoo_url: str = "https://query2.finance.yahoo.com"
    binance_url: str = "https://data-api.binance.vision"


@dataclass
class Chains:
    """Providers per asset class, in the order they are tried, and notes on what was left out."""

    by_class: dict[str, list[Provider]]
    notes: list[str] = field(default_factory=list)

    def for_class(self, asset_class: str) -> list[Provider]:
        return self.by_class.get(asset_class, [])

    def close(self) -> None:
        for chain in self.by_class.values():
            for provider in chain:
                client = getattr(provider, "client", None)
                if client is not None:
                    client.close()


def build_chains(source: str, config: TradingConfig, *, settings: Settings | None = None,
                 endpoints: Endpoints | None = None, policy: RetryPolicy | None = None,
                 path: Path | str | None = None, max_concurrency: int = 2) -> Chains:
    """The provider chains for ``source`` (offline | live | files)."""
    if source == "offline":
        offline = OfflineProvider()
        return Chains({"stocks": [offline], "crypto": [offline]})
    if source == "files":
        folder = path or config.data.files_path
        if not folder:
            raise ConfigError(["--source files needs --path DIR (or data.files_path in config/trading.json)"])
        files = FileProvider(folder)
        return Chains({"stocks": [files], "crypto": [files]})
    if source != "live":
        raise ConfigError([f"unknown data source {source!r} (choose one of: {', '.join(SOURCES)})"])

    settings = settings or get_settings()
    endpoints = endpoints or Endpoints()
    policy = policy or RetryPolicy()

    def client(name: str, url: str, headers: dict[str, str] | None = None) -> ProviderClient:
        budget = config.rate_limits.get(name) or RateLimit(per_minute=30)
        limiter = RateLimiter(name, budget.per_minute, budget.per_day, max_concurrency=max_concurrency)
        return ProviderClient(name, url, limiter, policy, headers=headers)

    notes = []
    stocks: list[Provider] = []
    if settings.alphavantage_api_key is not None:
        stocks.append(AlphaVantage(client("alphavantage", endpoints.alphavantage_url),
                                   settings.alphavantage_api_key.get_secret_value()))
    else:
        notes.append("alphavantage skipped: ALPHAVANTAGE_API_KEY is not set (stocks use Yahoo)")
    yahoo = Yahoo(client("yahoo", endpoints.yahoo_url))
    stocks.append(yahoo)
    gecko_headers = ({"x-cg-demo-api-key": settings.coingecko_api_key.get_secret_value()}
                     if settings.coingecko_api_key is not None else None)
    crypto: list[Provider] = [Binance(client("binance", endpoints.binance_url)),
                              CoinGecko(client("coingecko", endpoints.coingecko_url, gecko_headers)), yahoo]
    return Chains({"stocks": stocks, "crypto": crypto}, notes)
