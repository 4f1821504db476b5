"""Fake Alpha Vantage: HTTP 200 for everything; string numbers; newest-first series."""

from __future__ import annotations

import pandas as pd

from tests.fakes import FakeServer, Reply

BURST = {"Information": "Thank you for using Alpha Vantage! Please consider spreading out your free API requests "
                        "more sparingly (1 request per second). You may subscribe to any of the premium plans at "
                        "https://www.alphavantage.co/premium/ to lift the free key rate limit (25 requests per day), "
                        "raise the per-second burst limit, and instantly unlock all premium endpoints"}
DAILY_QUOTA = {"Information": "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day. "
                              "Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ "
                              "to instantly remove all daily rate limits."}
PREMIUM_PARAMETER = {"Information": "Thank you for using Alpha Vantage! The outputsize=full parameter value is a "
                                    "premium feature for the TIME_SERIES_DAILY endpoint. You may subscribe to any of "
                                    "the premium plans at https://www.alphavantage.co/premium/ to instantly unlock "
                                    "all premium features"}
PREMIUM_ENDPOINT = {"Information": "Thank you for using Alpha Vantage! This is a premium endpoint. You may subscribe "
                                   "to any of the premium plans at https://www.alphavantage.co/premium/ to instantly "
                                   "unlock all premium endpoints"}
DEMO_KEY = {"Information": "The **demo** API key is for demo purposes only. Please claim your free API key at "
                           "(https://www.alphavantage.co/support/#api-key) to explore our full API offerings. "
                           "It takes fewer than 20 seconds."}
LEGACY_NOTE = {"Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute "
                       "and 500 calls per day. Please visit https://www.alphavantage.co/premium/ if you would like "
                       "to target a higher API call frequency."}
INVALID_CALL = {"Error Message": "Invalid API call. Please retry or visit the documentation "
                                 "(https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY."}
BAD_KEY = {"Error Message": "the parameter apikey is invalid or missing. Please claim your free API key on "
                            "(https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds."}


def daily_body(symbol: str, bars: pd.DataFrame, *, compact: bool = False) -> dict:
    rows = bars.sort_values("ts", ascending=False)
    if compact:
        rows = rows.head(100)
    series = {r.ts.strftime("%Y-%m-%d"): {"1. open": f"{r.open:.4f}", "2. high": f"{r.high:.4f}",
                                          "3. low": f"{r.low:.4f}", "4. close": f"{r.close:.4f}",
                                          "5. volume": str(int(r.volume))} for r in rows.itertuples()}
    return {"Meta Data": {"1. Information": "Daily Prices (open, high, low, close) and Volumes",
                          "2. Symbol": symbol, "3. Last Refreshed": next(iter(series), ""),
                          "4. Output Size": "Compact" if compact else "Full size", "5. Time Zone": "US/Eastern"},
            "Time Series (Daily)": series}


class FakeAlphaVantage(FakeServer):
    def __init__(self, bars=None, overview: dict[str, dict] | None = None, full_is_premium: bool = False):
        super().__init__(bars)
        self.overview = overview or {}
        self.full_is_premium = full_is_premium

    def symbol_of(self, path, query):
        return query.get("symbol")

    def route(self, path, query):
        symbol = query.get("symbol", "")
        if query.get("function") == "OVERVIEW":
            return Reply(200, self.overview.get(symbol, {}))
        if query.get("function") != "TIME_SERIES_DAILY" or symbol not in self.bars:
            return Reply(200, INVALID_CALL)
        full = query.get("outputsize") == "full"
        if full and self.full_is_premium:
            return Reply(200, PREMIUM_PARAMETER)
        return Reply(200, daily_body(symbol, self.bars[symbol], compact=not full))
