"""What every provider returns: raw daily bars in one shape, and asset metadata.

Bars are *raw*: providers convert formats and time zones but never judge the values;
:mod:`universe.validate` does that for every provider alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

import pandas as pd

from lab.errors import ProviderError

__all__ = ["RAW_COLUMNS", "AssetInfo", "MetadataIncomplete", "Provider", "raw_bars", "empty_bars", "session_ts"]

RAW_COLUMNS = ["ts", "open", "high", "low", "close", "volume"]


@dataclass(frozen=True, kw_only=True)
class AssetInfo:
    """Metadata for the ``stocks`` / ``crypto`` tables, plus point-in-time fundamentals if known."""

    symbol: str
    asset_class: str
    source: str
    name: str | None = None
    sector: str | None = None
    industry: str | None = None
    exchange: str | None = None
    market_cap: float | None = None
    coingecko_id: str | None = None
    pe_ratio: float | None = None
    pb_ratio: float | None = None


class MetadataIncomplete(ProviderError):
    """The provider failed part-way through a metadata request: ``infos`` holds what it had
    fetched before (paid for out of a small daily quota: to be stored, not thrown away)."""

    def __init__(self, provider: str, message: str, infos: list[AssetInfo]):
        super().__init__(provider, message)
        self.infos = infos


class Provider(Protocol):
    """A source of daily bars. ``fetch_bars`` raises ``ProviderError`` on failure."""

    name: str
    asset_classes: frozenset[str]

    def fetch_bars(self, symbol: str, asset_class: str, since: date | None) -> pd.DataFrame:
        """Raw bars from ``since`` (inclusive) on: columns RAW_COLUMNS + ``source``; ts = UTC midnight."""
        ...

    def fetch_metadata(self, symbols: list[str], asset_class: str) -> list[AssetInfo]:
        """Metadata for the symbols it knows (may be fewer than asked); ``MetadataIncomplete``
        when it failed after fetching some."""
        ...


def session_ts(values) -> pd.DatetimeIndex:
    """Daily bars are stamped at UTC midnight of their session date (the lab's one convention)."""
    index = pd.DatetimeIndex(pd.to_datetime(values))
    if index.tz is not None:
        index = index.tz_localize(None)
    return index.normalize().tz_localize("UTC")


def raw_bars(ts, open_, high, low, close, volume, *, source: str) -> pd.DataFrame:
    frame = pd.DataFrame({
        "ts": session_ts(ts),
        "open": pd.to_numeric(pd.Series(open_, dtype=object), errors="coerce").astype(float).to_numpy(),
        "high": pd.to_numeric(pd.Series(high, dtype=object), errors="coerce").astype(float).to_numpy(),
        "low": pd.to_numeric(pd.Series(low, dtype=object), errors="coerce").astype(float).to_numpy(),
        "close": pd.to_numeric(pd.Series(close, dtype=object), errors="coerce").astype(float).to_numpy(),
        "volume": pd.to_numeric(pd.Series(volume, dtype=object), errors="coerce").astype(float).to_numpy(),
    })
    frame["source"] = source
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def empty_bars(source: str) -> pd.DataFrame:
    return raw_bars([], [], [], [], [], [], source=source)
