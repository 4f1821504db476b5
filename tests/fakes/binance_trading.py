"""A fake Binance spot testnet (signed order API) on 127.0.0.1, as in market-apis.md §6.

It checks the API key header and the HMAC-SHA256 signature over query string + body, rejects
timestamps outside ``recvWindow`` with -1021 (``clock_offset_ms`` skews the server clock),
enforces LOT_SIZE / PRICE_FILTER / NOTIONAL with -1013, balances with -2010, and answers in
Binance's shapes (string decimals, ``cummulativeQuoteQty``, FULL responses with fills).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from tests.fakes.broker_http import FakeBrokerServer, Reply, Request

__all__ = ["FakeBinance", "API_KEY", "API_SECRET", "default_filters"]

API_KEY = "fakeBinanceApiKey0000000000000000000000000000000000000000000001"
API_SECRET = "fakeBinanceSecret9hT4kW2qY7zM5nB8vC1xR6jL3pF0gD"
OPEN = {"NEW", "PARTIALLY_FILLED"}
_SIGNATURE = re.compile(r"&?signature=([0-9a-fA-F]*)")


def default_filters() -> dict[str, dict[str, Any]]:
    return {
        "BTCUSDT": {
            "PRICE_FILTER": {"filterType": "PRICE_FILTER", "minPrice": "0.01000000",
                             "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
            "LOT_SIZE": {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
                         "stepSize": "0.00001000"},
            "NOTIONAL": {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
                         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        },
        "ETHUSDT": {
            "PRICE_FILTER": {"filterType": "PRICE_FILTER", "minPrice": "0.01000000",
                             "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
            "LOT_SIZE": {"filterType": "LOT_SIZE", "minQty": "0.00010000", "maxQty": "9000.00000000",
                         "stepSize": "0.00010000"},
            "MIN_NOTIONAL": {"filterType": "MIN_NOTIONAL", "minNotional": "10.00000000",
                             "applyToMarket": True, "avgPriceMins": 5},
        },
    }


def _error(status: int, code: int, msg: str) -> Reply:
    return Reply(status, {"code": code, "msg": msg})


class FakeBinance(FakeBrokerServer):
    def __init__(self, *, balances: dict[str, str] | None = None, quotes: dict[str, str] | None = None,
                 api_key: str = API_KEY, api_secret: str = API_SECRET, fee_rate: str = "0.001",
                 fee_in_bought_coin: bool = False) -> None:
        super().__init__()
        self.api_key, self.api_secret = api_key, api_secret
        self.balances = {a: Decimal(v) for a, v in (balances or {"USDT": "10000", "BTC": "0"}).items()}
        self.quotes = {s: Decimal(p) for s, p in (quotes or {"BTCUSDT": "50000", "ETHUSDT": "3000"}).items()}
        self.filters = default_filters()
        self.fee_rate = Decimal(fee_rate)
        #: Binance's default without BNB fees: a buy pays its commission in the coin it buys
        self.fee_in_bought_coin = fee_in_bought_coin
        self.fill_ratio = Decimal(1)
        self.clock_offset_ms = 0
        self.orders: dict[int, dict[str, Any]] = {}
        self._next_id = 1
        self._trade_id = 1
        self.trades: list[dict[str, Any]] = []

    def server_time(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    def by_client_id(self, client_id: str) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o["clientOrderId"] == client_id]

    def fill(self, order_id: int, qty: str | None = None) -> None:
        with self.lock:
            order = self.orders[order_id]
            remaining = Decimal(order["origQty"]) - Decimal(order["executedQty"])
            self._fill(order, Decimal(qty) if qty is not None else remaining)

    # --- routes -----------------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        path, method = request.path, request.method
        if path == "/api/v3/time":
            return Reply(200, {"serverTime": self.server_time()})
        if path == "/api/v3/exchangeInfo":
            symbol = dict(parse_qsl(request.query)).get("symbol")
            if symbol is not None and symbol not in self.filters:
                return _error(400, -1121, "Invalid symbol.")
            return Reply(200, self._exchange_info())
        if path == "/api/v3/avgPrice":
            symbol = dict(parse_qsl(request.query)).get("symbol", "")
            if symbol not in self.quotes:
                return _error(400, -1121, "Invalid symbol.")
            return Reply(200, {"mins": 5, "price": f"{self.quotes[symbol]:.8f}", "closeTime": self.server_time()})
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        params = request.params
        if path == "/api/v3/account":
            return Reply(200, {"makerCommission": 10, "takerCommission": 10, "canTrade": True,
                               "canWithdraw": True, "canDeposit": True, "accountType": "SPOT",
                               "updateTime": self.server_time(), "permissions": ["SPOT"],
                               "balances": [{"asset": a, "free": f"{v - self._locked(a):.8f}", "locked": f"{self._locked(a):.8f}"}
                                            for a, v in sorted(self.balances.items())]})
        if path == "/api/v3/myTrades":
            return Reply(200, [t for t in self.trades if t["symbol"] == params.get("symbol")
                               and str(t["orderId"]) == params.get("orderId", str(t["orderId"]))])
        if path == "/api/v3/openOrders":
            return Reply(200, [self._doc(o) for o in self.orders.values() if o["status"] in OPEN
                               and params.get("symbol") in (None, o["symbol"])])
        if path == "/api/v3/order":
            if method == "POST":
                return self._submit(params)
            order = self._find(params)
            if order is None:
                return _error(400, -2013 if method == "GET" else -2011,
                              "Order does not exist." if method == "GET" else "Unknown order sent.")
            if method == "GET":
                return Reply(200, self._doc(order))
            if method == "DELETE":
                if order["status"] not in OPEN:
                    return _error(400, -2011, "Unknown order sent.")
                order["status"] = "CANCELED"
                return Reply(200, {**self._doc(order), "origClientOrderId": order["clientOrderId"]})
        return _error(404, -1000, "Unknown path.")

    def _authenticate(self, request: Request) -> Reply | None:
        if request.headers.get("x-mbx-apikey") != self.api_key:
            return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        total = request.query + request.body.decode()
        match = _SIGNATURE.search(total)
        expected = hmac.new(self.api_secret.encode(), _SIGNATURE.sub("", total).encode(), hashlib.sha256).hexdigest()
        if match is None or not hmac.compare_digest(match.group(1), expected):
            return _error(400, -1022, "Signature for this request is not valid.")
        params = request.params
        stamp, window, now = int(params.get("timestamp", 0)), int(params.get("recvWindow", 5000)), self.server_time()
        if stamp >= now + 1000:
            return _error(400, -1021, f"Timestamp for this request was {stamp - now}ms ahead of the server's time.")
        if now - stamp > window:
            return _error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return None

    def _submit(self, p: dict[str, str]) -> Reply:
        symbol = p.get("symbol", "")
        if symbol not in self.quotes:
            return _error(400, -1121, "Invalid symbol.")
        if p.get("type") == "LIMIT" and "price" not in p:
            return _error(400, -1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
        qty = Decimal(p.get("quantity", "0"))
        price = Decimal(p["price"]) if "price" in p else self.quotes[symbol]
        failed = self._filter_failure(symbol, qty, price, market=p["type"] == "MARKET")
        if failed:
            return _error(400, -1013, f"Filter failure: {failed}")
        client_id = p.get("newClientOrderId") or f"fake{self._next_id}"
        if self.by_client_id(client_id):
            return _error(400, -2010, "Duplicate order sent.")
        base, quote = symbol[:-4], symbol[-4:]
        if p["side"] == "BUY" and qty * price * (1 + self.fee_rate) > self.balances.get(quote, Decimal(0)) - self._locked(quote):
            return _error(400, -2010, "Account has insufficient balance for requested action.")
        if p["side"] == "SELL" and qty > self.balances.get(base, Decimal(0)) - self._locked(base):
            return _error(400, -2010, "Account has insufficient balance for requested action.")
        order = {"symbol": symbol, "orderId": self._next_id, "orderListId": -1, "clientOrderId": client_id,
                 "transactTime": self.server_time(), "price": f"{Decimal(p.get('price', '0')):.8f}",
                 "origQty": f"{qty:.8f}", "executedQty": "0.00000000", "cummulativeQuoteQty": "0.00000000",
                 "status": "NEW", "timeInForce": p.get("timeInForce", "GTC"), "type": p["type"], "side": p["side"],
                 "workingTime": self.server_time(), "selfTradePreventionMode": "NONE", "_fills": []}
        self._next_id += 1
        self.orders[order["orderId"]] = order
        quote_price = self.quotes[symbol]
        marketable = p["type"] == "MARKET" or (quote_price <= price if p["side"] == "BUY" else quote_price >= price)
        if marketable:
            self._fill(order, (qty * self.fill_ratio).quantize(Decimal("0.00000001")))
            if p["type"] == "MARKET" and order["status"] != "FILLED":
                order["status"] = "EXPIRED"  # no more liquidity: the rest of a market order expires
        return Reply(200, {**self._doc(order), "fills": order["_fills"]})

    def _fill(self, order: dict[str, Any], qty: Decimal) -> None:
        if qty <= 0:
            return
        price = self.quotes[order["symbol"]]
        base, quote = order["symbol"][:-4], order["symbol"][-4:]
        sign = 1 if order["side"] == "BUY" else -1
        if sign > 0 and self.fee_in_bought_coin:
            fee, fee_asset, base_fee, quote_fee = qty * self.fee_rate, base, qty * self.fee_rate, Decimal(0)
        else:
            fee, fee_asset, base_fee, quote_fee = qty * price * self.fee_rate, quote, Decimal(0), qty * price * self.fee_rate
        self.balances[base] = self.balances.get(base, Decimal(0)) + sign * qty - base_fee
        self.balances[quote] = self.balances.get(quote, Decimal(0)) - sign * qty * price - quote_fee
        executed = Decimal(order["executedQty"]) + qty
        order["executedQty"] = f"{executed:.8f}"
        order["cummulativeQuoteQty"] = f"{Decimal(order['cummulativeQuoteQty']) + qty * price:.8f}"
        order["status"] = "FILLED" if executed >= Decimal(order["origQty"]) else "PARTIALLY_FILLED"
        order["_fills"].append({"price": f"{price:.8f}", "qty": f"{qty:.8f}", "commission": f"{fee:.8f}",
                                "commissionAsset": fee_asset, "tradeId": self._trade_id})
        self.trades.append({"symbol": order["symbol"], "id": self._trade_id, "orderId": order["orderId"],
                            "orderListId": -1, "price": f"{price:.8f}", "qty": f"{qty:.8f}",
                            "quoteQty": f"{qty * price:.8f}", "commission": f"{fee:.8f}", "commissionAsset": fee_asset,
                            "time": self.server_time(), "isBuyer": sign > 0, "isMaker": False, "isBestMatch": True})
        self._trade_id += 1

    def _filter_failure(self, symbol: str, qty: Decimal, price: Decimal, *, market: bool) -> str | None:
        f = self.filters[symbol]
        lot = f["LOT_SIZE"]
        min_qty, max_qty, step = Decimal(lot["minQty"]), Decimal(lot["maxQty"]), Decimal(lot["stepSize"])
        if qty < min_qty or qty > max_qty or (qty - min_qty) % step:
            return "LOT_SIZE"
        pf = f["PRICE_FILTER"]
        if not market and (price < Decimal(pf["minPrice"]) or price > Decimal(pf["maxPrice"])
                           or (price - Decimal(pf["minPrice"])) % Decimal(pf["tickSize"])):
            return "PRICE_FILTER"
        for name in ("NOTIONAL", "MIN_NOTIONAL"):
            if name in f and qty * price < Decimal(f[name]["minNotional"]):
                return name
        return None

    def _find(self, p: dict[str, str]) -> dict[str, Any] | None:
        """The order named by ``orderId`` or ``origClientOrderId`` within ``symbol``, as Binance
        looks it up: one in another symbol is not found."""
        if "orderId" in p:
            found = [self.orders[int(p["orderId"])]] if int(p["orderId"]) in self.orders else []
        else:
            found = self.by_client_id(p.get("origClientOrderId", ""))
        return next((o for o in found if o["symbol"] == p.get("symbol")), None)

    def _locked(self, asset: str) -> Decimal:
        locked = Decimal(0)
        for o in self.orders.values():
            if o["status"] not in OPEN:
                continue
            rest = Decimal(o["origQty"]) - Decimal(o["executedQty"])
            if o["side"] == "BUY" and o["symbol"].endswith(asset):
                locked += rest * Decimal(o["price"])
            elif o["side"] == "SELL" and o["symbol"].startswith(asset):
                locked += rest
        return locked

    def _doc(self, order: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in order.items() if not k.startswith("_")}

    def _exchange_info(self) -> dict[str, Any]:
        return {"timezone": "UTC", "serverTime": self.server_time(),
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                                "limit": 6000}],
                "symbols": [{"symbol": s, "status": "TRADING", "baseAsset": s[:-4], "quoteAsset": s[-4:],
                             "baseAssetPrecision": 8, "quoteAssetPrecision": 8,
                             "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                             "filters": list(f.values())} for s, f in self.filters.items()]}
