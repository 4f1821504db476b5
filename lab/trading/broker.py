"""The one execution port: the paper executor, backtests and real brokers all implement it.

The trading cycle talks to a broker only through these methods, identifies orders only by
the lab's deterministic ``client_order_id``, and learns about executions only from the
``fills`` an order carries, so switching brokers is configuration and nothing else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from lab.errors import TradingError
from lab.trading.model import Account, MarketClock, Order, Position

__all__ = ["BrokerInterface", "OrderNotFound"]


class OrderNotFound(TradingError):
    """The broker holds no order with this client order id (the lab resubmits it)."""


@runtime_checkable
class BrokerInterface(Protocol):
    """Contract (every implementation, paper or real):

    - ``submit`` never raises for a business refusal: it returns the order ``rejected`` with
      a reason (insufficient funds, invalid order, unknown symbol, market closed, ...). It is
      idempotent on ``client_order_id``: submitting an id the broker already holds returns
      the held order instead of placing a second one.
    - ``get_order`` and ``cancel`` raise ``OrderNotFound`` for an id the broker never received
      (a crash between storing and submitting: the cycle then submits it).
    - ``get_order`` returns the broker's current view, including every fill so far (fills
      have stable ``fill_id``s, so the lab records each exactly once).
    - ``positions`` are per symbol as the broker holds them (``strategy`` is ``"*"``).
    - ``clock(now, asset_type)`` says whether that market is open at ``now`` (crypto: always);
      a real broker answers for its own present, which it reports as the clock's ``now``.
    """

    name: str

    def submit(self, order: Order) -> Order: ...

    def cancel(self, client_order_id: str) -> Order: ...

    def get_order(self, client_order_id: str) -> Order: ...

    def open_orders(self) -> list[Order]: ...

    def positions(self) -> list[Position]: ...

    def account(self) -> Account: ...

    def clock(self, now: datetime, asset_type: str = "stocks") -> MarketClock: ...
