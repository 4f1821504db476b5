"""Fake CoinGecko: market_chart daily points (plus the off-grid "now" point), coins/markets, errors."""

from __future__ import annotations

from tests.fakes import FakeServer, Reply

RATE_LIMITED = {"status": {"error_code": 429, "error_message": "You've exceeded the Rate Limit. Please visit "
                                                               "https://www.coingecko.com/en/api/pricing to "
                                                               "subscribe to our API plans for higher rate limits."}}
COIN_NOT_FOUND = {"error": "coin not found"}
RANGE_ERROR = {"error": {"status": {"timestamp": "2026-03-05T08:16:12.383+00:00", "error_code": 10012,
                                    "error_message": "Your request exceeds the allowed time range. Public API users "
                                                     "are limited to querying historical data within the past 365 "
                                                     "days."}}}
IDS = {"BTC": "bitcoin", "ETH": "ethereum", "SOL": "solana"}


class FakeCoinGecko(FakeServer):
    """``coins``: the /coins/list entries (id, symbol, name) beside the pinned ``IDS``;
    /coins/markets pages its rows as documented (per_page 1-250, default 100; page from 1)."""

    def __init__(self, bars=None, coins: list[dict[str, str]] | None = None):
        super().__init__(bars)
        self.coins = [{"id": i, "symbol": s.lower(), "name": i.title()} for s, i in IDS.items()] + list(coins or [])

    def symbol_of(self, path, query):
        parts = path.strip("/").split("/")
        coin = parts[1] if len(parts) > 1 and parts[0] == "coins" else None
        return {v: k for k, v in IDS.items()}.get(coin or "")

    def route(self, path, query):
        if path == "/coins/list":
            return Reply(200, self.coins)
        if path == "/coins/markets":
            wanted = set(query.get("ids", "").split(","))
            per_page, page = min(int(query.get("per_page", 100)), 250), int(query.get("page", 1))
            rows = [{**c, "market_cap": 1e9, "current_price": 1.0} for c in self.coins if c["id"] in wanted]
            return Reply(200, rows[(page - 1) * per_page:page * per_page])
        symbol = self.symbol_of(path, query)
        if symbol not in self.bars or not path.endswith("/market_chart"):
            return Reply(404, COIN_NOT_FOUND)
        bars = self.bars[symbol]
        stamps = [int(t.value // 10**6) for t in bars["ts"]]
        prices = [[t, float(c)] for t, c in zip(stamps, bars["open"], strict=True)]
        volumes = [[t, float(v)] for t, v in zip(stamps, bars["volume"], strict=True)]
        now = stamps[-1] + 3_600_000 * 5 + 1234  # off-grid "now" point
        prices.append([now, float(bars["close"].iloc[-1])])
        volumes.append([now, float(bars["volume"].iloc[-1])])
        return Reply(200, {"prices": prices, "market_caps": prices, "total_volumes": volumes})
