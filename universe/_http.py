"""Polite HTTP for providers: a rate budget shared by every concurrent fetch, and retries.

One :class:`RateLimiter` per provider is shared by all threads of an ingestion run, so
spreading requests and counting the daily quota happen in one place. Retries use tenacity:
exponential backoff with jitter on 429, 5xx, timeouts and throttle bodies, ``Retry-After``
honoured when the server sends it, and no retry on a definitive error (unknown symbol, bad key).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from lab.errors import ProviderError

__all__ = ["RetryPolicy", "RateLimiter", "Throttled", "ProviderClient", "error_text"]

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard to try one request. Tests inject tiny waits; the defaults suit free API tiers."""

    attempts: int = 4
    initial_wait: float = 1.0
    max_wait: float = 30.0
    jitter: float = 1.0
    #: a server asking for a longer pause than this is treated as a failure of this provider
    max_retry_after: float = 120.0
    timeout: float = 20.0
    #: pause after a throttle *body* (Alpha Vantage's HTTP-200 burst notice), which has no header
    throttle_wait: float = 2.0


class Throttled(ProviderError):
    """The provider asked us to slow down; ``retry_after`` is its requested pause in seconds."""

    def __init__(self, provider: str, message: str, *, retry_after: float | None = None):
        super().__init__(provider, message, retryable=True)
        self.retry_after = retry_after


class RateLimiter:
    """A per-minute pace and a per-day quota, shared by every thread that fetches from one provider.

    Requests are spaced ``60 / per_minute`` seconds apart (slots are reserved under a lock, so
    concurrent callers queue instead of bursting). ``max_concurrency`` caps requests in flight.
    A server's ``Retry-After`` holds every caller back (``pause``), not just the one it answered:
    the limits it enforces are per key or per IP, and calls made during a ban lengthen it.
    """

    def __init__(self, provider: str, per_minute: int, per_day: int | None = None, *,
                 max_concurrency: int = 2, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.provider = provider
        self.per_day = per_day
        self.interval = 60.0 / per_minute
        self.in_flight = threading.BoundedSemaphore(max_concurrency)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._day = datetime.now(UTC).date()
        self._used_today = 0
        self._exhausted = False
        self._closed_until = -math.inf  # a pause too long to wait for: refuse every call until then

    @property
    def used_today(self) -> int:
        return self._used_today

    def acquire(self) -> None:
        """Wait for the next slot; raise (no retry) once today's quota is spent."""
        with self._lock:
            today = datetime.now(UTC).date()
            if today != self._day:
                self._day, self._used_today, self._exhausted = today, 0, False
            if self._exhausted or (self.per_day is not None and self._used_today >= self.per_day):
                raise ProviderError(self.provider, f"daily request budget spent ({self.per_day} per day)")
            now = self._clock()
            if now < self._closed_until:
                raise ProviderError(self.provider, f"told to pause (Retry-After) for {self._closed_until - now:.0f} s "
                                                   "more; not called again before then")
            wait = max(0.0, self._next_slot - now)
            self._next_slot = max(now, self._next_slot) + self.interval
            self._used_today += 1
        if wait > 0:
            self._sleep(wait)

    def pause(self, seconds: float, *, longest_wait: float) -> None:
        """The server asked for no request during the next ``seconds``: the next slot is after
        them; a pause over ``longest_wait`` is not waited for, every call is refused until it ends."""
        with self._lock:
            until = self._clock() + seconds
            self._next_slot = max(self._next_slot, until)
            if seconds > longest_wait:
                self._closed_until = max(self._closed_until, until)

    def exhaust(self) -> None:
        """The provider says today's quota is gone: stop every caller until tomorrow."""
        with self._lock:
            self._exhausted = True


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _text(response: httpx.Response) -> str:
    """An error response's message: from its JSON envelope, else its first characters."""
    try:
        return error_text(response.json())
    except ValueError:
        return repr(response.text[:120])


def error_text(body: Any) -> str:
    """The message inside any provider's error envelope (they all differ)."""
    if isinstance(body, dict):
        for path in (("Error Message",), ("msg",), ("error", "status", "error_message"),
                     ("status", "error_message"), ("chart", "error", "description"), ("error",)):
            node: Any = body
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, str | int) and node != "":
                return str(node)
    return str(body)[:200]


class ProviderClient:
    """GET + JSON for one provider, paced by its limiter and retried by its policy.

    ``check`` inspects a decoded HTTP-200 body and raises for throttle or error bodies; it runs
    inside the retry loop, so a retryable body is retried like a 429.
    """

    def __init__(self, provider: str, base_url: str, limiter: RateLimiter, policy: RetryPolicy, *,
                 headers: dict[str, str] | None = None, sleep: Callable[[float], None] = time.sleep):
        self.provider = provider
        self.limiter = limiter
        self.policy = policy
        self._sleep = sleep
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=policy.timeout,
                                  headers={"User-Agent": USER_AGENT, **(headers or {})})

    def close(self) -> None:
        self._http.close()

    def get_json(self, path: str, params: dict[str, Any] | None = None, *,
                 check: Callable[[Any], None] | None = None) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=self._wait,
            retry=retry_if_exception(self._should_retry),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._attempt, path, params or {}, check)

    def _should_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, Throttled) and exc.retry_after is not None:
            return exc.retry_after <= self.policy.max_retry_after
        return isinstance(exc, ProviderError) and exc.retryable

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Throttled) and exc.retry_after is not None:
            return 0.0  # the limiter holds the next slot back by the Retry-After (``pause``)
        backoff = wait_exponential_jitter(initial=self.policy.initial_wait, max=self.policy.max_wait,
                                          jitter=self.policy.jitter)
        return backoff(state)

    def _attempt(self, path: str, params: dict[str, Any], check: Callable[[Any], None] | None) -> Any:
        try:
            return self._request(path, params, check)
        except Throttled as exc:  # a header's or a throttle body's pause holds back every caller
            if exc.retry_after is not None:
                self.limiter.pause(exc.retry_after, longest_wait=self.policy.max_retry_after)
            raise

    def _request(self, path: str, params: dict[str, Any], check: Callable[[Any], None] | None) -> Any:
        self.limiter.acquire()
        with self.limiter.in_flight:
            try:
                response = self._http.get(path, params=params)
            except httpx.TimeoutException:
                raise ProviderError(self.provider, f"timed out after {self.policy.timeout:g}s on {path}",
                                    retryable=True) from None
            except httpx.TransportError as exc:
                raise ProviderError(self.provider, f"cannot connect for {path}: {exc}", retryable=True) from None
        status = response.status_code
        if status in (418, 429):
            retry_after = _retry_after(response)
            asked = "" if retry_after is None else f", Retry-After {retry_after:g} s"
            raise Throttled(self.provider, f"HTTP {status} (rate limited{asked}) on {path}: {_text(response)}",
                            retry_after=retry_after)
        if status >= 500 or status == 408:
            raise ProviderError(self.provider, f"HTTP {status} on {path}", retryable=True)
        try:
            body = response.json()
        except ValueError:
            if status >= 400:
                raise ProviderError(self.provider, f"HTTP {status} on {path}: {response.text[:120]!r}") from None
            raise ProviderError(self.provider, f"malformed JSON from {path}: {response.text[:80]!r}") from None
        if status >= 400:
            raise ProviderError(self.provider, f"HTTP {status} on {path}: {error_text(body)}")
        if check is not None:
            check(body)
        return body
