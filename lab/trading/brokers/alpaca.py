"""Alpaca Trading API v2 behind ``BrokerInterface`` (paper account unless live is asked for).

Orders carry the lab's deterministic ``client_order_id``, so a retry after a timeout or a 5xx
first looks the order up and never places it twice. Entries go out as plain orders, never
with bracket or OTO legs: stops, targets and holding times are the lab's own exit rules,
checked every cycle as in backtests and at every broker, so Alpaca holds no exit order the
books do not know (one that would fill unbooked and sell the position a second time).
Executions come from the account's FILL activities, whose ids are stable, so the lab
records each fill once.
Orders and fills the broker reports on its own carry strategy ``"*"``; ``submit`` keeps
the lab's fields.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

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

__all__ = ["AlpacaBroker", "PAPER_URL", "LIVE_URL"]

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"

#: Alpaca's terminal statuses (filled, canceled, expired, replaced, rejected) and partial
#: fills; every other status is still working: pending. ``done_for_day`` among them: the
#: order works again the next session, so it stays open and that session's fill is synced.
_STATUS = {"partially_filled": OrderStatus.PARTIALLY_FILLED, "filled": OrderStatus.FILLED,
           "canceled": OrderStatus.CANCELLED, "expired": OrderStatus.CANCELLED,
           "replaced": OrderStatus.CANCELLED, "rejected": OrderStatus.REJECTED}
_ORDERS_PAGE = 500  # the most GET /v2/orders returns at once
_TYPES = {"market": OrderType.MARKET, "limit": OrderType.LIMIT, "stop": OrderType.STOP,
          "stop_limit": OrderType.STOP_LIMIT, "trailing_stop": OrderType.STOP}


def _dec(value: float) -> str:
    return format(Decimal(str(value)), "f")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _parse_error(response: httpx.Response, route: str) -> BrokerError:
    body = json_body(response)
    status, code = response.status_code, body.get("code")
    text = f"{route}: {body.get('message') or response.reason_phrase} (HTTP {status}" + (
        f", code {code})" if code is not None else ")")
    if status == 401 or (status == 403 and code is None):
        return BrokerAuthError("alpaca", f"{text}; check APCA_API_KEY_ID and APCA_API_SECRET_KEY",
                               status=status, code=code)
    if status == 404:
        return OrderNotFound("alpaca", text, status=status, code=code)
    if status == 429:
        reset = response.headers.get("X-RateLimit-Reset")
        wait = float(reset) - time.time() if reset and reset.replace(".", "", 1).isdigit() else None
        return BrokerError("alpaca", text, status=status, code=code, retryable=True, retry_after=wait)
    if status >= 500:
        return BrokerError("alpaca", text, status=status, code=code, retryable=True, outcome_unknown=True)
    return BrokerError("alpaca", text, status=status, code=code)


class AlpacaBroker:
    """One Alpaca account. ``portfolio`` names it in the lab's books."""

    name = "alpaca"

    def __init__(self, key_id: SecretStr, secret_key: SecretStr, *, base_url: str = PAPER_URL,
                 portfolio: str = "alpaca", policy: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] = time.sleep):
        self.portfolio = portfolio
        self.base_url = base_url
        self._key_id, self._secret_key = key_id, secret_key
        self._http = BrokerHttp("alpaca", base_url, policy=policy, parse_error=_parse_error, sleep=sleep)

    @classmethod
    def from_settings(cls, settings: Settings, config: TradingConfig, *, live: bool = False,
                      base_url: str | None = None, portfolio: str = "alpaca") -> AlpacaBroker:
        if settings.alpaca_api_key_id is None or settings.alpaca_api_secret_key is None:
            raise ConfigError(["alpaca: set APCA_API_KEY_ID and APCA_API_SECRET_KEY in the environment"])
        url = endpoint("alpaca", paper=PAPER_URL, live=LIVE_URL, config_live=config.execution.live,
                       cli_live=live, override=base_url)
        return cls(settings.alpaca_api_key_id, settings.alpaca_api_secret_key, base_url=url, portfolio=portfolio)

    def __repr__(self) -> str:
        return f"AlpacaBroker(base_url={self.base_url!r}, portfolio={self.portfolio!r})"

    def close(self) -> None:
        self._http.close()

    # --- BrokerInterface --------------------------------------------------------------------
    def submit(self, order: Order) -> Order:
        problem = unsendable(order)
        if problem:
            return order.rejected(problem)
        if order.asset_type != "crypto":
            clock = self.clock(order.created_at, order.asset_type)
            if not clock.is_open:
                opens = f" (next open {clock.next_open.isoformat()})" if clock.next_open else ""
                return order.rejected(f"market closed{opens}")
        body = _order_body(order)
        return self._http.retrying(lambda: self._submit_once(order, body))

    def cancel(self, client_order_id: str) -> Order:
        remote = self._get(client_order_id)
        try:
            self._call("DELETE", f"/v2/orders/{remote['id']}")
        except BrokerError as exc:
            if exc.status != 422:  # 422: no longer cancelable (filled meanwhile); report as it is
                raise
        return self.get_order(client_order_id)

    def get_order(self, client_order_id: str) -> Order:
        return self._order(self._get(client_order_id))

    def open_orders(self) -> list[Order]:
        """Every open order, paged by submission time (Alpaca lists at most 500 at once).
        ``after`` is exclusive, so each page starts a microsecond before the last order seen:
        orders submitted at that same instant are not skipped (the repeats are dropped)."""
        docs: dict[str, dict[str, Any]] = {}
        params: dict[str, Any] = {"status": "open", "limit": _ORDERS_PAGE, "direction": "asc"}
        while True:
            page = self._call("GET", "/v2/orders", params=params).json()
            known = len(docs)
            docs.update((d["id"], d) for d in page)
            if len(page) < _ORDERS_PAGE:
                return [o for o in map(self._order, docs.values()) if o.status.is_open]
            last = _time(page[-1]["submitted_at"])
            if len(docs) == known:
                raise BrokerError("alpaca", f"GET /v2/orders: more than {_ORDERS_PAGE} open orders were submitted "
                                            f"at {last.isoformat()}; they cannot be listed page by page")
            params = {**params, "after": (last - timedelta(microseconds=1)).isoformat()}

    def positions(self) -> list[Position]:
        return [Position(portfolio=self.portfolio, strategy="*", symbol=_lab_symbol(p["symbol"], p["asset_class"]),
                         asset_type=_asset_type(p["asset_class"]), qty=float(p["qty"]),
                         avg_price=float(p["avg_entry_price"]),
                         last_price=float(p["current_price"]) if p.get("current_price") else None)
                for p in self._call("GET", "/v2/positions").json()]

    def account(self) -> Account:
        doc = self._call("GET", "/v2/account").json()
        return Account(cash=float(doc["cash"]), equity=float(doc["equity"]),
                       buying_power=float(doc["buying_power"]), currency=doc.get("currency", "USD"))

    def clock(self, now: datetime, asset_type: str = "stocks") -> MarketClock:
        """Alpaca's own market clock, at its present (crypto trades around the clock)."""
        doc = self._call("GET", "/v2/clock").json()
        if asset_type == "crypto":
            return MarketClock(now=_time(doc["timestamp"]), is_open=True)
        return MarketClock(now=_time(doc["timestamp"]), is_open=bool(doc["is_open"]),
                           next_open=_time(doc["next_open"]), next_close=_time(doc["next_close"]))

    # --- requests ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        headers = {"APCA-API-KEY-ID": self._key_id.get_secret_value(),
                   "APCA-API-SECRET-KEY": self._secret_key.get_secret_value()}
        return self._http.build(method, path, headers=headers, **kwargs)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An idempotent request (GET, DELETE by id), retried as the policy allows."""
        return self._http.retrying(lambda: self._http.send(lambda: self._request(method, path, **kwargs)))

    def _get(self, client_order_id: str) -> dict[str, Any]:
        return self._call("GET", "/v2/orders:by_client_order_id",
                          params={"client_order_id": client_order_id}).json()

    def _submit_once(self, order: Order, body: dict[str, Any]) -> Order:
        try:
            doc = self._http.send(lambda: self._request("POST", "/v2/orders", json=body)).json()
        except BrokerAuthError:
            raise
        except BrokerError as exc:
            if not (exc.outcome_unknown or exc.status in (403, 404, 422)):
                raise
            held = self._held(order.client_order_id)
            if held is not None:  # it reached Alpaca before (a lost answer, a retry): adopt it
                return order.with_broker_state(self._order(held))
            if exc.outcome_unknown:
                raise
            return order.rejected(str(exc))
        return order.with_broker_state(self._order(doc))

    def _held(self, client_order_id: str) -> dict[str, Any] | None:
        try:
            return self._get(client_order_id)
        except OrderNotFound:
            return None

    # --- documents -> model -----------------------------------------------------------------
    def _order(self, doc: dict[str, Any]) -> Order:
        symbol = _lab_symbol(doc["symbol"], doc.get("asset_class", ""))
        status = _STATUS.get(doc["status"], OrderStatus.PENDING)
        if status is OrderStatus.PENDING and Decimal(doc.get("filled_qty") or 0) > 0:
            status = OrderStatus.PARTIALLY_FILLED
        order_type = _TYPES.get(doc.get("type") or doc.get("order_type") or "market", OrderType.MARKET)
        reason = None
        if doc["status"] in ("rejected", "expired", "replaced"):
            reason = f"alpaca: order {doc['status']}"
        return Order(
            client_order_id=doc["client_order_id"], portfolio=self.portfolio, strategy="*", symbol=symbol,
            asset_type=_asset_type(doc.get("asset_class", "")), side=Side(doc["side"]),
            qty=float(doc.get("qty") or 0), order_type=order_type,
            limit_price=float(doc["limit_price"]) if doc.get("limit_price") else None,
            stop_price=float(doc["stop_price"]) if doc.get("stop_price") else None,
            created_at=_time(doc["created_at"]), status=status, reason=reason,
            broker_order_id=doc["id"], fills=self._fills(doc, symbol),
        )

    def _fills(self, doc: dict[str, Any], symbol: str) -> tuple[Fill, ...]:
        """The order's executions from the FILL activities (stable ids), oldest first."""
        filled = Decimal(doc.get("filled_qty") or 0)
        if filled <= 0:
            return ()
        after = (_time(doc["created_at"]) - timedelta(seconds=1)).isoformat()
        fills: list[Fill] = []
        params: dict[str, Any] = {"after": after, "direction": "asc", "page_size": 100}
        while True:
            page = self._call("GET", "/v2/account/activities/FILL", params=params).json()
            fills.extend(
                Fill(fill_id=f"alpaca:{a['id']}", client_order_id=doc["client_order_id"], portfolio=self.portfolio,
                     strategy="*", symbol=symbol, side=Side.BUY if a["side"] == "buy" else Side.SELL,
                     qty=float(a["qty"]), price=float(a["price"]), fee=0.0, ts=_time(a["transaction_time"]))
                for a in page if a.get("order_id") == doc["id"])
            if len(page) < params["page_size"] or math.fsum(f.qty for f in fills) >= float(filled):
                return tuple(fills)
            params = {**params, "page_token": page[-1]["id"]}



def _order_body(order: Order) -> dict[str, Any]:
    """A plain order: its stop-loss and take-profit stay with the lab's exit rules."""
    crypto = order.asset_type == "crypto"
    body: dict[str, Any] = {
        "symbol": f"{order.symbol}/USD" if crypto and "/" not in order.symbol else order.symbol,
        "qty": _dec(order.qty), "side": str(order.side), "type": str(order.order_type),
        "time_in_force": "gtc" if crypto else "day", "client_order_id": order.client_order_id,
    }
    if order.limit_price is not None and order.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
        body["limit_price"] = _dec(order.limit_price)
    if order.stop_price is not None and order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
        body["stop_price"] = _dec(order.stop_price)
    return body


def _asset_type(asset_class: str) -> str:
    return "crypto" if asset_class == "crypto" else "stocks"


def _lab_symbol(symbol: str, asset_class: str) -> str:
    """``BTC/USD`` (orders) and ``BTCUSD`` (positions) are the lab's ``BTC``."""
    if asset_class != "crypto":
        return symbol
    return symbol.split("/")[0] if "/" in symbol else symbol.removesuffix("USD")
