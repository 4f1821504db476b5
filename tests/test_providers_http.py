"""Politeness and fault handling shared by every provider client: pacing, quotas, retries."""

from __future__ import annotations

import threading

import pytest

from lab.errors import ProviderError
from tests.fakes import Reply
from tests.fakes.binance_public import TOO_MUCH_WEIGHT, FakeBinance
from universe._http import ProviderClient, RateLimiter, RetryPolicy

FAST = RetryPolicy(attempts=3, initial_wait=0, max_wait=0, jitter=0, timeout=0.3, throttle_wait=0)


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)


def client_for(server, policy=FAST, clock=None, per_minute=100_000, per_day=None):
    """A client whose waits (the limiter's and the retries') are recorded on ``clock``, not slept."""
    clock = clock or FakeClock()
    limiter = RateLimiter("binance", per_minute, per_day, clock=clock, sleep=clock.sleep)
    return ProviderClient("binance", server.url, limiter, policy, sleep=clock.sleep)


def test_limiter_spaces_concurrent_callers_by_the_per_minute_budget():
    clock = FakeClock()
    limiter = RateLimiter("x", per_minute=60, clock=clock, sleep=clock.sleep)
    threads = [threading.Thread(target=limiter.acquire) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(clock.sleeps) == [1.0, 2.0, 3.0, 4.0]  # first goes at once, the rest queue 1 s apart


def test_limiter_refuses_once_the_daily_budget_is_spent():
    limiter = RateLimiter("alphavantage", per_minute=100_000, per_day=2)
    limiter.acquire()
    limiter.acquire()
    with pytest.raises(ProviderError, match="daily request budget spent"):
        limiter.acquire()


def test_exhausted_limiter_stops_every_caller():
    limiter = RateLimiter("alphavantage", per_minute=100_000, per_day=25)
    limiter.exhaust()
    with pytest.raises(ProviderError, match="daily"):
        limiter.acquire()


def test_429_with_retry_after_is_honoured_then_succeeds():
    with FakeBinance() as server:
        server.script.append(Reply(429, TOO_MUCH_WEIGHT, headers={"Retry-After": "7"}))
        server.script.append(Reply(200, []))
        clock = FakeClock()
        assert client_for(server, clock=clock).get_json("/api/v3/klines") == []
    assert sum(clock.sleeps) == 7.0


def test_retry_after_holds_back_every_caller_of_the_provider_not_only_the_one_answered():
    clock = FakeClock()
    with FakeBinance() as server:
        server.script.extend([Reply(429, TOO_MUCH_WEIGHT, headers={"Retry-After": "7"}), Reply(200, [])])
        client = client_for(server, policy=RetryPolicy(attempts=1, timeout=0.3), clock=clock)  # no retry of its own
        with pytest.raises(ProviderError, match="HTTP 429"):
            client.get_json("/api/v3/klines", {"symbol": "BTCUSDT"})
        assert clock.sleeps == []
        assert client.get_json("/api/v3/klines", {"symbol": "ETHUSDT"}) == []  # another symbol's fetch, at once
    assert clock.sleeps == [7.0]


def test_retry_after_beyond_the_cap_is_not_waited_for_and_no_call_goes_out_before_it_ends():
    clock = FakeClock()
    with FakeBinance() as server:
        server.script.append(Reply(418, {"code": -1003, "msg": "Way too much request weight used; IP banned until "
                                                               "1760000000000."}, headers={"Retry-After": "86400"}))
        client = client_for(server, clock=clock)
        with pytest.raises(ProviderError, match=r"HTTP 418 \(rate limited, Retry-After 86400 s\) on /api/v3/klines: "
                                                r"Way too much request weight used; IP banned until"):
            client.get_json("/api/v3/klines", {"symbol": "BTCUSDT"})
        clock.now = 3600.0
        with pytest.raises(ProviderError, match=r"told to pause \(Retry-After\) for 82800 s more"):
            client.get_json("/api/v3/klines", {"symbol": "ETHUSDT"})
        assert len(server.requests) == 1  # asking again during a ban lengthens it
        clock.now = 86400.0
        server.script.append(Reply(200, []))
        assert client.get_json("/api/v3/klines", {"symbol": "ETHUSDT"}) == []


def test_5xx_then_success_is_retried():
    with FakeBinance() as server:
        server.script.extend([Reply(503, "<html>down</html>"), Reply(500, "oops"), Reply(200, [1])])
        assert client_for(server).get_json("/x") == [1]
        assert len(server.requests) == 3


def test_persistent_5xx_gives_up_after_the_policy_attempts():
    with FakeBinance() as server:
        server.script.extend([Reply(503, "down")] * 5)
        with pytest.raises(ProviderError, match="HTTP 503"):
            client_for(server).get_json("/x")
        assert len(server.requests) == FAST.attempts


def test_timeout_is_retried_and_reported():
    with FakeBinance() as server:
        server.script.extend([Reply(200, [], delay=1.0)] * 3)
        with pytest.raises(ProviderError, match="timed out"):
            client_for(server).get_json("/x")
        assert len(server.requests) == 3


def test_malformed_json_is_a_clear_error():
    with FakeBinance() as server:
        server.script.append(Reply(200, '{"prices": [[1, 2'))
        with pytest.raises(ProviderError, match="malformed JSON"):
            client_for(server).get_json("/x")


def test_definitive_client_error_is_not_retried():
    with FakeBinance() as server:
        with pytest.raises(ProviderError, match="Invalid symbol"):
            client_for(server).get_json("/api/v3/klines", {"symbol": "NOPEUSDT"})
        assert len(server.requests) == 1


def test_unreachable_host_is_a_retryable_provider_error():
    limiter = RateLimiter("yahoo", 100_000)
    client = ProviderClient("yahoo", "http://127.0.0.1:9", limiter, FAST, sleep=lambda s: None)
    with pytest.raises(ProviderError, match="cannot connect"):
        client.get_json("/x")
