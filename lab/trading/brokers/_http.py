"""The HTTP seam shared by the real brokers: one httpx client, retries, and safe errors.

Retries (tenacity) cover what may succeed on a second try: throttling (429/418, waiting what
the server asks), server errors (5xx) and timeouts. A server that asks for a longer pause than
the policy's ``max_wait_s`` gets no retry at all: requests made during a ban (Binance's 418)
lengthen it, so the error says so and names the pause asked for. A POST that timed out or got a 5xx may
still have reached the broker, so order submission retries through its own look-up by
client order id (see the brokers), never blindly. Error messages carry the broker, the
route, the HTTP status and the broker's own code and text; never a header, a query string
or a key, so nothing secret reaches a log, a traceback or the database.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from lab.errors import ConfigError, TradingError
from lab.trading.model import Order

__all__ = ["BrokerError", "BrokerAuthError", "OrderNotFound", "RetryPolicy", "BrokerHttp", "json_body", "endpoint",
           "unsendable"]

T = TypeVar("T")


class BrokerError(TradingError):
    """A broker request failed. ``retryable``: trying again may help; ``outcome_unknown``:
    the request may have been executed (timeout, 5xx), so look before resubmitting."""

    def __init__(self, broker: str, message: str, *, status: int | None = None, code: int | None = None,
                 retryable: bool = False, outcome_unknown: bool = False, retry_after: float | None = None):
        self.broker, self.detail, self.status, self.code = broker, message, status, code
        self.retryable, self.outcome_unknown, self.retry_after = retryable, outcome_unknown, retry_after
        super().__init__(f"{broker}: {message}")


class BrokerAuthError(BrokerError):
    """The broker refused the keys (401/403): check the key variables in the environment."""


class OrderNotFound(BrokerError):
    """The broker holds no order with that id."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    attempts: int = 4
    backoff_s: float = 0.5  # first back-off; doubles per attempt
    max_wait_s: float = 60.0
    timeout_s: float = 10.0


class BrokerHttp:
    """An httpx client bound to one broker base URL; ``send`` returns only 2xx responses."""

    def __init__(self, broker: str, base_url: str, *, policy: RetryPolicy,
                 parse_error: Callable[[httpx.Response, str], BrokerError],
                 sleep: Callable[[float], None] = time.sleep, headers: dict[str, str] | None = None):
        self.broker, self.policy, self._parse_error, self._sleep = broker, policy, parse_error, sleep
        self._client = httpx.Client(base_url=base_url, timeout=policy.timeout_s, headers=headers or {})

    def close(self) -> None:
        self._client.close()

    def retrying(self, call: Callable[[], T]) -> T:
        """``call`` again while it raises a retryable BrokerError, waiting as the server asks."""
        for attempt in Retrying(stop=stop_after_attempt(self.policy.attempts), wait=self._wait,
                                retry=retry_if_exception(lambda e: isinstance(e, BrokerError) and e.retryable),
                                sleep=self._sleep, reraise=True):
            with attempt:
                return call()
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True always raises

    def send(self, build: Callable[[], httpx.Request]) -> httpx.Response:
        """One request, no retry; ``build`` makes it (so signed requests get a fresh timestamp)."""
        request = build()
        route = f"{request.method} {request.url.path}"
        try:
            response = self._client.send(request)
        except httpx.TimeoutException:
            raise BrokerError(self.broker, f"{route}: timed out after {self.policy.timeout_s}s",
                              retryable=True, outcome_unknown=True) from None
        except httpx.TransportError as exc:
            raise BrokerError(self.broker, f"{route}: connection failed ({type(exc).__name__})",
                              retryable=True, outcome_unknown=request.method != "GET") from None
        if response.is_success:
            return response
        error = self._parse_error(response, route)
        if error.retryable and error.retry_after is not None and error.retry_after > self.policy.max_wait_s:
            raise BrokerError(self.broker, f"{error.detail}; not retried: the server asks for a {error.retry_after:g} s "
                              f"pause, longer than the {self.policy.max_wait_s:g} s this client waits, and requests "
                              f"made during a ban lengthen it", status=error.status, code=error.code,
                              retry_after=error.retry_after)
        raise error

    def build(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        return self._client.build_request(method, path, **kwargs)

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, BrokerError) and error.retry_after is not None:  # within max_wait_s (``send``)
            return max(error.retry_after, 0.0)
        return min(self.policy.backoff_s * 2 ** (state.attempt_number - 1), self.policy.max_wait_s)


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The error body as a dict (brokers sometimes answer HTML or nothing)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def endpoint(broker: str, *, paper: str, live: str, config_live: bool, cli_live: bool,
             override: str | None = None) -> str:
    """The base URL to trade against. Real money needs both ``execution.live: true`` in the
    config and ``--live`` on the command line; anything less is the paper account."""
    if cli_live and not config_live:
        raise ConfigError([f"execution.live: --live was given but the config does not set "
                           f"execution.live: true, so {broker} stays on its paper account"])
    url = (override or (live if cli_live else paper)).rstrip("/")
    if url == live.rstrip("/") and not cli_live:
        raise ConfigError([f"execution.live: {broker} live endpoint {live} needs execution.live: true "
                           f"and the --live switch"])
    return url


def unsendable(order: Order) -> str | None:
    """Why an order's numbers cannot be put on the wire (NaN or infinite), else None."""
    for name in ("qty", "limit_price", "stop_price"):
        value = getattr(order, name)
        if value is not None and not math.isfinite(value):
            return f"invalid order: {name} is {value}"
    return None
