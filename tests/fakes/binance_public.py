"""Fake Binance public klines: 12-element arrays, string decimals, pagination, -1003 / -1121 errors."""

from __future__ import annotations

import pandas as pd

from tests.fakes import FakeServer, Reply

DAY_MS = 86_400_000
TOO_MUCH_WEIGHT = {"code": -1003, "msg": "Too much request weight used; current limit is 6000 request weight per "
                                         "1 MINUTE. Please use WebSocket Streams for live updates to avoid polling "
                                         "the API."}
INVALID_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}


class FakeBinance(FakeServer):
    def symbol_of(self, path, query):
        return query.get("symbol", "").removesuffix("USDT")

    def route(self, path, query):
        symbol = self.symbol_of(path, query)
        if path != "/api/v3/klines" or symbol not in self.bars:
            return Reply(400, INVALID_SYMBOL)
        start = int(query.get("startTime", 0))
        limit = min(int(query.get("limit", 500)), 1000)
        bars = self.bars[symbol]
        opens = (bars["ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        rows = bars[(opens >= start).to_numpy()].head(limit)
        klines = [[int(r.ts.value // 10**6), f"{r.open:.8f}", f"{r.high:.8f}", f"{r.low:.8f}", f"{r.close:.8f}",
                   f"{r.volume:.8f}", int(r.ts.value // 10**6) + DAY_MS - 1, "0.0", 100, "0.0", "0.0", "0"]
                  for r in rows.itertuples()]
        return Reply(200, klines, headers={"X-MBX-USED-WEIGHT-1M": "2"})
