"""Binance spot (testnet unless live is asked for) behind ``BrokerInterface``.

Signed requests: HMAC-SHA256 over the exact parameter string sent, with ``timestamp`` and
``recvWindow``; a -1021 (clock skew) resynchronises with the server's time and retries once.
Quantities and prices are fitted to the symbol's exchange filters (LOT_SIZE, PRICE_FILTER,
NOTIONAL / MIN_NOTIONAL) before anything is sent; an order that cannot fit is rejected here.
The lab's ``client_order_id`` is Binance's ``newClientOrderId``, so a retry after a lost
answer finds the order instead of placing it twice. Market and limit orders only (the
cycle checks stops and targets itself); lab symbols are base assets (``BTC`` -> ``BTCUSDT``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr

from lab.config import TradingConfig
from lab.errors import ConfigError
from lab.settings import Settings
from lab.trading.brokers._http import (
    BrokerAuthError,
    BrokerError,
    BrokerHttp,
    OrderNotFound,
    RetryPolicy,
    endpoint,
    json_body,
    unsendable,
)
from lab.trading.model import Account, Fill, MarketClock, Order, OrderStatus, OrderType, Position, Side

__all__ = ["BinanceBroker", "TESTNET_URL", "LIVE_URL", "fit_to_filters"]

TESTNET_URL = "https://testnet.binance.vision"
LIVE_URL = "https://api.binance.com"

_STATUS = {"NEW": OrderStatus.PENDING, "PENDING_CANCEL": OrderStatus.PENDING,
           "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED, "FILLED": OrderStatus.FILLED,
           "CANCELED": OrderStatus.CANCELLED, "EXPIRED": OrderStatus.CANCELLED,
           "EXPIRED_IN_MATCH": OrderStatus.CANCELLED, "REJECTED": OrderStatus.REJECTED}
_AUTH_CODES = {-2014, -2015, -1022}


def _parse_error(response: httpx.Response, route: str) -> BrokerError:
    body = json_body(response)
    status, code = response.status_code, body.get("code")
    after = response.headers.get("Retry-After") if status in (418, 429) else None
    wait = float(after) if after and after.isdigit() else None
    facts = [f"HTTP {status}", *([f"code {code}"] if code is not None else []),
             *([f"Retry-After {wait:g} s"] if wait is not None else [])]
    text = f"{route}: {body.get('msg') or response.reason_phrase} ({', '.join(facts)})"
    if status in (401, 403) or code in _AUTH_CODES:
        return BrokerAuthError("binance", f"{text}; check BINANCE_API_KEY and BINANCE_API_SECRET",
                               status=status, code=code)
    if code == -2013:
        return OrderNotFound("binance", text, status=status, code=code)
    if status in (418, 429):
        return BrokerError("binance", text, status=status, code=code, retryable=True, retry_after=wait)
    if status >= 500:
        return BrokerError("binance", text, status=status, code=code, retryable=True, outcome_unknown=True)
    return BrokerError("binance", text, status=status, code=code)


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def fit_to_filters(filters: dict[str, dict[str, Any]], *, side: Side, qty: Decimal, price: Decimal,
                   market: bool) -> tuple[Decimal, Decimal] | str:
    """(qty, price) moved onto the lot step and price tick (never toward a worse trade),
    or why the order cannot pass the exchange filters at all."""
    lot = filters.get("LOT_SIZE")
    if lot:
        step, low, high = (Decimal(lot[k]) for k in ("stepSize", "minQty", "maxQty"))
        if step > 0:
            qty = low + ((qty - low) / step).to_integral_value(ROUND_FLOOR) * step
        if qty < low or (high > 0 and qty > high):
            return f"LOT_SIZE: quantity {_text(qty)} outside [{_text(low)}, {_text(high)}]"
    pf = filters.get("PRICE_FILTER")
    if pf and not market:
        tick, low, high = (Decimal(pf[k]) for k in ("tickSize", "minPrice", "maxPrice"))
        if tick > 0:
            rounding = ROUND_FLOOR if side is Side.BUY else ROUND_CEILING
            price = low + ((price - low) / tick).to_integral_value(rounding) * tick
        if (low > 0 and price < low) or (high > 0 and price > high):
            return f"PRICE_FILTER: price {_text(price)} outside [{_text(low)}, {_text(high)}]"
    for name, applies_key in (("NOTIONAL", "applyMinToMarket"), ("MIN_NOTIONAL", "applyToMarket")):
        f = filters.get(name)
        if f and (not market or f.get(applies_key, True)) and qty * price < Decimal(f["minNotional"]):
            return f"{name}: notional {_text(qty * price)} below {_text(Decimal(f['minNotional']))}"
    notional = filters.get("NOTIONAL")
    if notional and (not market or notional.get("applyMaxToMarket")) and Decimal(notional.get("maxNotional", 0)) > 0 \
            and qty * price > Decimal(notional["maxNotional"]):
        return f"NOTIONAL: notional {_text(qty * price)} above {_text(Decimal(notional['maxNotional']))}"
    return qty, price


class BinanceBroker:
    """One Binance spot account. ``symbols`` (lab symbols, e.g. ``BTC``) bound positions and
    the order look-ups, since Binance asks for the symbol with every order query."""

    name = "binance"

    def __init__(self, api_key: SecretStr, api_secret: SecretStr, *, base_url: str = TESTNET_URL,
                 symbols: Sequence[str] = ("BTC",), quote_asset: str = "USDT", portfolio: str = "binance",
                 recv_window_ms: int = 5000, policy: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] = time.sleep, wall_clock: Callable[[], float] = time.time):
        self.portfolio, self.base_url, self.quote_asset = portfolio, base_url, quote_asset
        self.symbols = tuple(symbols)
        self._api_key, self._api_secret = api_key, api_secret
        self._recv_window, self._wall_clock, self._offset_ms = recv_window_ms, wall_clock, 0
        self._filters: dict[str, dict[str, dict[str, Any]]] = {}
        self._pairs: dict[str, str] = {}  # client order id -> pair, from the answers that named the order
        self._http = BrokerHttp("binance", base_url, policy=policy, parse_error=_parse_error, sleep=sleep)

    @classmethod
    def from_settings(cls, settings: Settings, config: TradingConfig, *, live: bool = False,
                      base_url: str | None = None, portfolio: str = "binance") -> BinanceBroker:
        if settings.binance_api_key is None or settings.binance_api_secret is None:
            raise ConfigError(["binance: set BINANCE_API_KEY and BINANCE_API_SECRET in the environment"])
        url = endpoint("binance", paper=TESTNET_URL, live=LIVE_URL, config_live=config.execution.live,
                       cli_live=live, override=base_url)
        crypto = config.universe.crypto
        return cls(settings.binance_api_key, settings.binance_api_secret, base_url=url, portfolio=portfolio,
                   symbols=crypto.symbols if crypto else ())

    def __repr__(self) -> str:
        return f"BinanceBroker(base_url={self.base_url!r}, portfolio={self.portfolio!r})"

    def close(self) -> None:
        self._http.close()

    # --- BrokerInterface --------------------------------------------------------------------
    def submit(self, order: Order) -> Order:
        problem = unsendable(order) or self._unsupported(order)
        if problem:
            return order.rejected(problem)
        pair = self._pair(order.symbol)
        try:
            filters = self._symbol_filters(pair)
        except BrokerError as exc:
            if exc.code != -1121:  # invalid symbol
                raise
            return order.rejected(f"unknown symbol {order.symbol}: {exc}")
        market = order.order_type is OrderType.MARKET
        reference = self._avg_price(pair) if market else Decimal(str(order.limit_price))
        fitted = fit_to_filters(filters, side=order.side, qty=Decimal(str(order.qty)), price=reference, market=market)
        if isinstance(fitted, str):
            return order.rejected(f"binance filter: {fitted}")
        qty, price = fitted
        order = order.evolve(qty=float(qty), limit_price=None if market else float(price))
        params = {"symbol": pair, "side": order.side.value.upper(), "type": "MARKET" if market else "LIMIT",
                  "quantity": _text(qty), "newClientOrderId": order.client_order_id, "newOrderRespType": "FULL"}
        if not market:
            params |= {"timeInForce": "GTC", "price": _text(price)}
        return self._http.retrying(lambda: self._submit_once(order, params))

    def cancel(self, client_order_id: str) -> Order:
        pair = self._find_pair(client_order_id)
        try:
            self._call("DELETE", "/api/v3/order", {"symbol": pair, "origClientOrderId": client_order_id})
        except BrokerError as exc:
            if exc.code != -2011:  # cancel rejected: it filled or was cancelled meanwhile
                raise
        return self._order_at(pair, client_order_id)

    def get_order(self, client_order_id: str) -> Order:
        return self._order_at(self._find_pair(client_order_id), client_order_id)

    def open_orders(self) -> list[Order]:
        return [self._order(doc, self._trades(doc)) for doc in self._call("GET", "/api/v3/openOrders", {}).json()]

    def positions(self) -> list[Position]:
        held = self._balances()
        return [Position(portfolio=self.portfolio, strategy="*", symbol=asset, asset_type="crypto", qty=float(qty))
                for asset, qty in sorted(held.items()) if asset != self.quote_asset and qty != 0]

    def account(self) -> Account:
        held = self._balances()
        cash = held.get(self.quote_asset, Decimal(0))
        value = sum((qty * self._avg_price(self._pair(asset)) for asset, qty in held.items()
                     if asset != self.quote_asset and qty != 0), Decimal(0))
        return Account(cash=float(cash), equity=float(cash + value), buying_power=float(cash),
                       currency=self.quote_asset)

    def clock(self, now: datetime, asset_type: str = "crypto") -> MarketClock:
        """At Binance's present (this machine's clock, corrected by the server's time when a
        request was refused for skew); crypto trades around the clock, and it has no stock market."""
        present = datetime.fromtimestamp((self._wall_clock() * 1000 + self._offset_ms) / 1000, UTC)
        return MarketClock(now=present, is_open=asset_type == "crypto")

    # --- signing and requests ---------------------------------------------------------------
    def _signed(self, method: str, path: str, params: dict[str, Any]) -> httpx.Response:
        """One signed request; a clock-skew refusal (-1021) resyncs the offset and retries once."""
        try:
            return self._http.send(lambda: self._sign(method, path, params))
        except BrokerError as exc:
            if exc.code != -1021:
                raise
        self._sync_time()
        return self._http.send(lambda: self._sign(method, path, params))

    def _sign(self, method: str, path: str, params: dict[str, Any]) -> httpx.Request:
        stamp = int(self._wall_clock() * 1000) + self._offset_ms
        payload = urlencode({**params, "recvWindow": self._recv_window, "timestamp": stamp})
        signature = hmac.new(self._api_secret.get_secret_value().encode(), payload.encode(), hashlib.sha256)
        payload = f"{payload}&signature={signature.hexdigest()}"
        headers = {"X-MBX-APIKEY": self._api_key.get_secret_value()}
        if method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return self._http.build(method, path, content=payload.encode(), headers=headers)
        return self._http.build(method, f"{path}?{payload}", headers=headers)

    def _sync_time(self) -> None:
        before = self._wall_clock()
        server = self._public("/api/v3/time")["serverTime"]
        after = self._wall_clock()
        self._offset_ms = int(server - (before + after) * 500)

    def _call(self, method: str, path: str, params: dict[str, Any]) -> httpx.Response:
        return self._http.retrying(lambda: self._signed(method, path, params))

    def _public(self, path: str, **params: Any) -> Any:
        return self._http.retrying(lambda: self._http.send(lambda: self._http.build("GET", path, params=params))).json()

    def _submit_once(self, order: Order, params: dict[str, Any]) -> Order:
        try:
            doc = self._signed("POST", "/api/v3/order", params).json()
        except BrokerAuthError:
            raise
        except BrokerError as exc:
            if not (exc.outcome_unknown or exc.status == 400):
                raise
            held = self._held(params["symbol"], order.client_order_id)
            if held is not None:  # it reached Binance before (a lost answer, a re-run): adopt it
                return order.with_broker_state(self._order(held, self._trades(held)))
            if exc.outcome_unknown:
                raise
            return order.rejected(str(exc))
        fills = [{**f, "time": doc["transactTime"]} for f in doc.get("fills", ())]
        return order.with_broker_state(self._order(doc, fills))

    def _order_at(self, pair: str, client_order_id: str) -> Order:
        doc = self._call("GET", "/api/v3/order", {"symbol": pair, "origClientOrderId": client_order_id}).json()
        return self._order(doc, self._trades(doc))

    def _held(self, pair: str, client_order_id: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", "/api/v3/order", {"symbol": pair, "origClientOrderId": client_order_id}).json()
        except OrderNotFound:
            return None

    def _find_pair(self, client_order_id: str) -> str:
        """The pair holding this order, since Binance looks orders up per symbol: the one an
        answer named it in (a submit, a listing, a look-up), else a configured symbol's, else
        that of an open order at the account (the kill switch cancels every open order,
        whatever symbols the lab trades now)."""
        if client_order_id in self._pairs:
            return self._pairs[client_order_id]
        for symbol in self.symbols:
            if self._held(self._pair(symbol), client_order_id) is not None:
                return self._pair(symbol)
        for doc in self._call("GET", "/api/v3/openOrders", {}).json():
            if doc["clientOrderId"] == client_order_id:
                return str(doc["symbol"])
        raise OrderNotFound("binance", f"no order {client_order_id} on {', '.join(self.symbols) or 'no symbols'} "
                                       f"nor open at the account")

    def _trades(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        if Decimal(doc.get("executedQty") or 0) <= 0:
            return []
        return self._call("GET", "/api/v3/myTrades", {"symbol": doc["symbol"], "orderId": doc["orderId"]}).json()

    def _symbol_filters(self, pair: str) -> dict[str, dict[str, Any]]:
        if pair not in self._filters:
            info = self._public("/api/v3/exchangeInfo", symbol=pair)
            [entry] = [s for s in info["symbols"] if s["symbol"] == pair] or [{"filters": []}]
            self._filters[pair] = {f["filterType"]: f for f in entry["filters"]}
        return self._filters[pair]

    def _avg_price(self, pair: str) -> Decimal:
        return Decimal(self._public("/api/v3/avgPrice", symbol=pair)["price"])

    def _balances(self) -> dict[str, Decimal]:
        doc = self._call("GET", "/api/v3/account", {"omitZeroBalances": "true"}).json()
        wanted = {*self.symbols, self.quote_asset}
        return {b["asset"]: Decimal(b["free"]) + Decimal(b["locked"]) for b in doc["balances"]
                if not self.symbols or b["asset"] in wanted}

    def _pair(self, symbol: str) -> str:
        return symbol if symbol.endswith(self.quote_asset) else f"{symbol}{self.quote_asset}"

    def _unsupported(self, order: Order) -> str | None:
        if order.asset_type != "crypto":
            return f"binance trades crypto only, not {order.asset_type} ({order.symbol})"
        if order.order_type not in (OrderType.MARKET, OrderType.LIMIT):
            return f"binance: {order.order_type} orders are not supported (market and limit only)"
        return None

    # --- documents -> model -----------------------------------------------------------------
    def _order(self, doc: dict[str, Any], trades: list[dict[str, Any]]) -> Order:
        """The order as the lab models it; its pair is remembered for later look-ups."""
        self._pairs[doc["clientOrderId"]] = doc["symbol"]
        symbol = doc["symbol"].removesuffix(self.quote_asset)
        status = _STATUS.get(doc["status"], OrderStatus.PENDING)
        created = doc.get("time") or doc.get("transactTime") or doc.get("workingTime")
        price = Decimal(doc.get("price") or 0)
        return Order(
            client_order_id=doc["clientOrderId"], portfolio=self.portfolio, strategy="*", symbol=symbol,
            asset_type="crypto", side=Side(doc["side"].lower()), qty=float(doc["origQty"]),
            order_type=OrderType.MARKET if doc["type"] == "MARKET" else OrderType.LIMIT,
            limit_price=float(price) if price > 0 else None, created_at=_ms(created), status=status,
            reason=f"binance: order {doc['status'].lower()}" if doc["status"] in ("EXPIRED", "EXPIRED_IN_MATCH",
                                                                                   "REJECTED") else None,
            broker_order_id=str(doc["orderId"]),
            fills=tuple(self._fill(doc, symbol, t) for t in trades),
        )

    def _fill(self, doc: dict[str, Any], symbol: str, trade: dict[str, Any]) -> Fill:
        """One trade as a fill. A commission in the quote asset is cash; one in the coin traded
        (Binance's default for a buy without BNB fees) is coin the account does not get, so the
        fill's quantity is what the account's balance moved by, and the fee that coin's worth
        (the cash paid is the same: the books and the balances agree). BNB fees are unpriced."""
        side, qty = Side(doc["side"].lower()), Decimal(trade["qty"])
        price, commission, asset = Decimal(trade["price"]), Decimal(trade["commission"]), trade["commissionAsset"]
        fee = Decimal(0)
        if asset == self.quote_asset:
            fee = commission
        elif asset == symbol:
            qty, fee = qty - side.sign * commission, commission * price
        return Fill(fill_id=f"binance:{doc['symbol']}:{trade.get('id', trade.get('tradeId'))}",
                    client_order_id=doc["clientOrderId"], portfolio=self.portfolio, strategy="*", symbol=symbol,
                    side=side, qty=float(qty), price=float(price), fee=float(fee), ts=_ms(trade["time"]))



def _ms(stamp: int | None) -> datetime:
    return datetime.fromtimestamp((stamp or 0) / 1000, UTC)
