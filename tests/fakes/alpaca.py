"""A fake Alpaca Trading API v2 (paper) on 127.0.0.1, as documented in market-apis.md §5.

State: cash, quotes, orders and positions. Market orders fill at the quote while the fake
clock is open (``fill_ratio`` below 1 leaves them partially filled); limit orders fill when
marketable; stop orders wait. Errors use
Alpaca's bodies: 401 bad keys, 403 buying power / qty, 404, 422 invalid qty and duplicate
``client_order_id``, 204 on cancel.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.broker_http import FakeBrokerServer, Reply, Request

__all__ = ["FakeAlpaca", "KEY_ID", "SECRET_KEY"]

KEY_ID = "PKFAKEKEYID0000000001"
SECRET_KEY = "fake-alpaca-secret-Zq8wX3vN1mR7tK2pL9sD"
OPEN_STATUSES = {"new", "accepted", "pending_new", "partially_filled", "held"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _err(status: int, code: int, message: str, **extra: str) -> Reply:
    return Reply(status, {"code": code, "message": message, **extra})


class FakeAlpaca(FakeBrokerServer):
    def __init__(self, *, cash: str = "100000", quotes: dict[str, str] | None = None,
                 key_id: str = KEY_ID, secret_key: str = SECRET_KEY) -> None:
        super().__init__()
        self.key_id, self.secret_key = key_id, secret_key
        self.cash = Decimal(cash)
        self.quotes = {s: Decimal(p) for s, p in (quotes or {"AAPL": "100", "MSFT": "200"}).items()}
        self.orders: dict[str, dict[str, Any]] = {}
        self.positions: dict[str, Decimal] = {}  # symbol -> qty
        self.cost: dict[str, Decimal] = {}  # symbol -> cost basis
        self.market_open = True
        self.now = "2025-01-06T10:00:00.000000-05:00"  # the server's clock, as /v2/clock reports it
        self.fill_ratio = Decimal(1)
        self.activities: list[dict[str, Any]] = []

    # --- helpers tests use ------------------------------------------------------------------
    def fill(self, order_id: str, qty: str | None = None) -> None:
        """Fill (part of) a resting order at the quote, as the market would."""
        with self.lock:
            order = self.orders[order_id]
            remaining = Decimal(order["qty"]) - Decimal(order["filled_qty"])
            self._fill(order, Decimal(qty) if qty is not None else remaining)

    def orders_open(self) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o["status"] in OPEN_STATUSES]

    def by_client_id(self, client_order_id: str) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o["client_order_id"] == client_order_id]

    # --- routes -----------------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        if (request.headers.get("apca-api-key-id") != self.key_id
                or request.headers.get("apca-api-secret-key") != self.secret_key):
            return _err(401, 40110000, "request is not authorized")
        method, path = request.method, request.path
        query = {k: v[0] for k, v in parse_qs(request.query).items()}
        if method == "GET" and path == "/v2/clock":
            return Reply(200, {"timestamp": self.now, "is_open": self.market_open,
                               "next_open": "2025-01-07T09:30:00-05:00", "next_close": "2025-01-06T16:00:00-05:00"})
        if method == "GET" and path == "/v2/account":
            return Reply(200, self._account())
        if method == "GET" and path == "/v2/positions":
            return Reply(200, [self._position(s) for s in sorted(self.positions)])
        if method == "GET" and path == "/v2/account/activities/FILL":
            return Reply(200, self._activities(query))
        if method == "POST" and path == "/v2/orders":
            return self._submit(request.json())
        if method == "GET" and path == "/v2/orders":
            wanted = query.get("status", "open")
            rows = [o for o in self.orders.values()
                    if wanted == "all" or (o["status"] in OPEN_STATUSES) == (wanted == "open")]
            return Reply(200, [self._public(o) for o in self._page(rows, query)])
        if method == "GET" and path == "/v2/orders:by_client_order_id":
            found = self.by_client_id(query.get("client_order_id", ""))
            return Reply(200, self._public(found[0])) if found else _err(404, 40410000, "order not found")
        if path.startswith("/v2/orders/"):
            order = self.orders.get(path.rsplit("/", 1)[1])
            if order is None:
                return _err(404, 40410000, "order not found")
            if method == "GET":
                return Reply(200, self._public(order))
            if method == "DELETE":
                if order["status"] not in OPEN_STATUSES:
                    return _err(422, 42210000, f"order is already in \"{order['status']}\" state")
                self._cancel(order)
                return Reply(204)
        return _err(404, 40400000, "endpoint not found")

    # --- order book -------------------------------------------------------------------------
    def _submit(self, body: dict[str, Any]) -> Reply:
        symbol = body.get("symbol", "")
        if symbol not in self.quotes:
            return _err(422, 40010001, f"asset \"{symbol}\" not found")
        try:
            qty = Decimal(body.get("qty") or "0")
        except ArithmeticError:
            return _err(422, 40010001, "invalid qty")
        if qty <= 0:
            return _err(422, 40010001, "qty must be > 0")
        client_id = body.get("client_order_id") or str(uuid.uuid4())
        if self.by_client_id(client_id):
            return _err(422, 40010001, "client_order_id must be unique")
        price = self.quotes[symbol]
        if body["side"] == "buy":
            reference = Decimal(body.get("limit_price") or price)
            cost = qty * reference
            if cost > self._buying_power():
                return _err(403, 40310000, "insufficient buying power",
                            buying_power=str(self._buying_power()), cost_basis=str(cost))
        else:
            held = self.positions.get(symbol, Decimal(0))
            if qty > held:
                return _err(403, 40310000, f"insufficient qty available for order (requested: {qty}, "
                            f"available: {held})", available=str(held), symbol=symbol)
        order = self._new_order(body, client_id, qty)
        self._match(order)
        return Reply(200, self._public(order))

    def _new_order(self, body: dict[str, Any], client_id: str, qty: Decimal) -> dict:
        now = _now()
        order = {
            "id": str(uuid.uuid4()), "client_order_id": client_id, "created_at": now, "updated_at": now,
            "submitted_at": now, "filled_at": None, "expired_at": None, "canceled_at": None, "failed_at": None,
            "replaced_at": None, "replaced_by": None, "replaces": None, "asset_id": str(uuid.uuid4()),
            "symbol": body["symbol"], "asset_class": "crypto" if "/" in body["symbol"] else "us_equity",
            "notional": None, "qty": str(qty), "filled_qty": "0", "filled_avg_price": None,
            "order_class": body.get("order_class", ""), "order_type": body["type"], "type": body["type"],
            "side": body["side"], "time_in_force": body.get("time_in_force", "day"),
            "limit_price": body.get("limit_price"), "stop_price": body.get("stop_price"),
            "status": "accepted", "extended_hours": False,
            "trail_percent": None, "trail_price": None, "hwm": None, "legs": None,
        }
        self.orders[order["id"]] = order
        return order

    def _match(self, order: dict[str, Any]) -> None:
        if not self.market_open and order["asset_class"] != "crypto":
            return
        price = self.quotes[order["symbol"]]
        limit = Decimal(order["limit_price"]) if order["limit_price"] else None
        marketable = order["type"] == "market" or (
            order["type"] == "limit" and limit is not None
            and (price <= limit if order["side"] == "buy" else price >= limit))
        if marketable:
            self._fill(order, (Decimal(order["qty"]) * self.fill_ratio).quantize(Decimal("1.000000")))
        else:
            order["status"] = "new"

    def _fill(self, order: dict[str, Any], qty: Decimal) -> None:
        if qty <= 0:
            order["status"] = "new"
            return
        price = self.quotes[order["symbol"]]
        before = Decimal(order["filled_qty"])
        avg = Decimal(order["filled_avg_price"] or 0)
        filled = before + qty
        order["filled_avg_price"] = str((avg * before + price * qty) / filled)
        order["filled_qty"] = str(filled)
        order["updated_at"] = _now()
        done = filled >= Decimal(order["qty"])
        order["status"] = "filled" if done else "partially_filled"
        if done:
            order["filled_at"] = order["updated_at"]
        stamp = datetime.now(UTC)
        self.activities.append({
            "id": f"{stamp:%Y%m%d%H%M%S}{stamp.microsecond // 1000:03d}::{uuid.uuid4()}", "activity_type": "FILL",
            "transaction_time": order["updated_at"], "type": "fill" if done else "partial_fill",
            "price": str(price), "qty": str(qty), "side": order["side"], "symbol": order["symbol"].replace("/", ""),
            "leaves_qty": str(Decimal(order["qty"]) - filled), "order_id": order["id"], "cum_qty": str(filled),
            "order_status": order["status"]})
        sign = 1 if order["side"] == "buy" else -1
        symbol = order["symbol"]
        held = self.positions.get(symbol, Decimal(0))
        if sign > 0:
            self.cost[symbol] = self.cost.get(symbol, Decimal(0)) + qty * price
        elif held:
            self.cost[symbol] = self.cost.get(symbol, Decimal(0)) * (held - qty) / held
        self.positions[symbol] = held + sign * qty
        if not self.positions[symbol]:
            del self.positions[symbol]
            self.cost.pop(symbol, None)
        self.cash -= sign * qty * price

    def _cancel(self, order: dict[str, Any]) -> None:
        order["status"] = "canceled"
        order["canceled_at"] = order["updated_at"] = _now()

    def _buying_power(self) -> Decimal:
        reserved = sum((Decimal(o["qty"]) - Decimal(o["filled_qty"])) * Decimal(o["limit_price"] or self.quotes[o["symbol"]])
                       for o in self.orders.values() if o["side"] == "buy" and o["status"] in OPEN_STATUSES)
        return self.cash - reserved

    @staticmethod
    def _page(rows: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
        """As Alpaca lists orders: by submission time (``direction``, newest first unless
        ``asc``), only those submitted strictly after ``after`` and before ``until``, at most
        ``limit`` (50 unless asked, 500 at most)."""
        def submitted(order: dict[str, Any]) -> datetime:
            return datetime.fromisoformat(order["submitted_at"])

        if "after" in query:
            rows = [o for o in rows if submitted(o) > datetime.fromisoformat(query["after"])]
        if "until" in query:
            rows = [o for o in rows if submitted(o) < datetime.fromisoformat(query["until"])]
        rows = sorted(rows, key=submitted, reverse=query.get("direction", "desc") == "desc")
        return rows[: min(int(query.get("limit", 50)), 500)]

    def _activities(self, query: dict[str, str]) -> list[dict[str, Any]]:
        after = datetime.fromisoformat(query["after"]) if "after" in query else datetime.min.replace(tzinfo=UTC)
        rows = [a for a in self.activities if datetime.fromisoformat(a["transaction_time"]) > after]
        if query.get("direction", "desc") == "desc":
            rows.reverse()
        token = query.get("page_token")
        if token:
            rows = rows[[a["id"] for a in rows].index(token) + 1:]
        return rows[: int(query.get("page_size", 100))]

    # --- documents --------------------------------------------------------------------------
    def _public(self, order: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in order.items() if not k.startswith("_")}

    def _position(self, symbol: str) -> dict[str, Any]:
        qty, price, cost = self.positions[symbol], self.quotes[symbol], self.cost.get(symbol, Decimal(0))
        crypto = "/" in symbol  # positions spell crypto pairs without the slash
        return {"asset_id": str(uuid.uuid4()), "symbol": symbol.replace("/", ""),
                "exchange": "FTXU" if crypto else "NASDAQ", "asset_class": "crypto" if crypto else "us_equity",
                "avg_entry_price": str(cost / qty if qty else 0), "qty": str(qty), "qty_available": str(qty),
                "side": "long" if qty > 0 else "short", "market_value": str(qty * price),
                "cost_basis": str(cost), "unrealized_pl": str(qty * price - cost), "unrealized_plpc": "0",
                "unrealized_intraday_pl": "0", "unrealized_intraday_plpc": "0", "current_price": str(price),
                "lastday_price": str(price), "change_today": "0", "asset_marginable": True}

    def _account(self) -> dict[str, Any]:
        long_value = sum((q * self.quotes[s] for s, q in self.positions.items()), Decimal(0))
        equity = self.cash + long_value
        return {"id": "e6fe16f3-64a4-4921-8928-cadf02f92f98", "account_number": "PA3FAKE", "status": "ACTIVE",
                "currency": "USD", "cash": str(self.cash), "portfolio_value": str(equity), "equity": str(equity),
                "last_equity": str(equity), "buying_power": str(self._buying_power()),
                "regt_buying_power": str(self._buying_power()), "daytrading_buying_power": "0",
                "non_marginable_buying_power": str(self._buying_power()), "long_market_value": str(long_value),
                "short_market_value": "0", "initial_margin": "0", "maintenance_margin": "0",
                "last_maintenance_margin": "0", "sma": "0", "multiplier": "1", "daytrade_count": 0,
                "pattern_day_trader": False, "shorting_enabled": False, "trading_blocked": False,
                "transfers_blocked": False, "account_blocked": False, "trade_suspended_by_user": False,
                "accrued_fees": "0", "created_at": "2019-06-12T22:47:07.99658Z"}
