"""Fake Yahoo chart endpoint: session-open timestamps, nulls allowed, error envelopes, text 429."""

from __future__ import annotations

import pandas as pd

from tests.fakes import FakeServer, Reply

NOT_FOUND = {"chart": {"result": None, "error": {"code": "Not Found",
                                                 "description": "No data found, symbol may be delisted"}}}


def chart_body(ticker: str, bars: pd.DataFrame, period1: int, period2: int) -> dict:
    open_utc = bars["ts"] + pd.Timedelta(hours=14, minutes=30)
    seconds = (open_utc - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    keep = (seconds >= period1) & (seconds < period2)
    rows, stamps = bars[keep.to_numpy()], open_utc[keep]
    return {"chart": {"result": [{
        "meta": {"currency": "USD", "symbol": ticker, "exchangeTimezoneName": "America/New_York",
                 "dataGranularity": "1d", "instrumentType": "EQUITY"},
        "timestamp": [int(t.timestamp()) for t in stamps],
        "indicators": {"quote": [{c: [None if pd.isna(v) else float(v) for v in rows[c]]
                                  for c in ("open", "high", "low", "close", "volume")}],
                       "adjclose": [{"adjclose": [None if pd.isna(v) else float(v) for v in rows["close"]]}]},
    }], "error": None}}


class FakeYahoo(FakeServer):
    def symbol_of(self, path, query):
        ticker = path.rsplit("/", 1)[-1]
        return ticker.removesuffix("-USD")

    def route(self, path, query):
        symbol = self.symbol_of(path, query)
        if symbol not in self.bars:
            return Reply(404, NOT_FOUND)
        return Reply(200, chart_body(path.rsplit("/", 1)[-1], self.bars[symbol],
                                     int(query.get("period1", 0)), int(query.get("period2", 2**31))))
