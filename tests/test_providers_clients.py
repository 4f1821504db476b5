"""Each provider client against its local fake: formats, throttle and error bodies, edge cases."""

from __future__ import annotations

import pandas as pd
import pytest

from lab.errors import ProviderError
from tests.fakes import Reply
from tests.fakes import alphavantage as av
from tests.fakes.binance_public import FakeBinance
from tests.fakes.coingecko import RANGE_ERROR, RATE_LIMITED, FakeCoinGecko
from tests.fakes.yahoo import FakeYahoo
from universe._http import ProviderClient, RateLimiter, RetryPolicy
from universe.providers.alphavantage import AlphaVantage
from universe.providers.base import MetadataIncomplete
from universe.providers.binance import Binance
from universe.providers.coingecko import CoinGecko
from universe.providers.yahoo import Yahoo
from universe.synthetic import synthetic_market

FAST = RetryPolicy(attempts=3, initial_wait=0, max_wait=0, jitter=0, timeout=0.5, throttle_wait=0)


def bars(n=30, asset_class="stocks", seed=1) -> pd.DataFrame:
    return synthetic_market(1, n, seed, start="2024-01-02", asset_class=asset_class)


def make(provider_cls, server, name, *args):
    client = ProviderClient(name, server.url, RateLimiter(name, 100_000, None), FAST, sleep=lambda s: None)
    return provider_cls(client, *args)


# --- Alpha Vantage -----------------------------------------------------------------------


def test_alphavantage_daily_series_is_parsed_oldest_first():
    data = bars()
    with av.FakeAlphaVantage({"IBM": data}) as server:
        frame = make(AlphaVantage, server, "alphavantage", "key").fetch_bars("IBM", "stocks", None)
    assert list(frame["ts"]) == list(data["ts"])
    assert frame["close"].round(4).tolist() == data["close"].round(4).tolist()
    assert set(frame["source"]) == {"alphavantage"}


@pytest.mark.parametrize("body", [av.BURST, av.LEGACY_NOTE], ids=["information-burst", "legacy-note"])
def test_alphavantage_throttle_bodies_are_retried_not_stored(body):
    with av.FakeAlphaVantage({"IBM": bars()}) as server:
        server.script.append(Reply(200, body))
        frame = make(AlphaVantage, server, "alphavantage", "key").fetch_bars("IBM", "stocks", None)
        assert len(server.requests) == 2
    assert len(frame) == 30


@pytest.mark.parametrize("body, message", [
    (av.INVALID_CALL, "rejected the request"),
    (av.BAD_KEY, "API key invalid or missing"),
    (av.DEMO_KEY, "API key problem"),
    (av.PREMIUM_ENDPOINT, "premium endpoint"),
    ({}, "empty response"),
], ids=["error-message", "bad-key", "demo-key", "premium-endpoint", "empty-object"])
def test_alphavantage_definitive_error_bodies_fail_without_retry(body, message):
    with av.FakeAlphaVantage({"IBM": bars()}) as server:
        server.script.append(Reply(200, body))
        with pytest.raises(ProviderError, match=message):
            make(AlphaVantage, server, "alphavantage", "key").fetch_bars("IBM", "stocks", None)
        assert len(server.requests) == 1


def test_alphavantage_daily_quota_body_stops_the_provider_for_the_day():
    with av.FakeAlphaVantage({"IBM": bars()}) as server:
        server.script.append(Reply(200, av.DAILY_QUOTA))
        provider = make(AlphaVantage, server, "alphavantage", "key")
        with pytest.raises(ProviderError, match="daily quota spent"):
            provider.fetch_bars("IBM", "stocks", None)
        with pytest.raises(ProviderError, match="daily request budget spent"):
            provider.fetch_bars("IBM", "stocks", None)
        assert len(server.requests) == 1


def test_alphavantage_premium_full_falls_back_to_compact_partial_history():
    with av.FakeAlphaVantage({"IBM": bars(150)}, full_is_premium=True) as server:
        frame = make(AlphaVantage, server, "alphavantage", "key").fetch_bars("IBM", "stocks", None)
        assert [q["outputsize"] for _, q in server.requests] == ["full", "compact"]
    assert len(frame) == 100


def test_alphavantage_empty_series_gives_no_bars():
    body = av.daily_body("IBM", bars().head(0))
    with av.FakeAlphaVantage({"IBM": bars()}) as server:
        server.script.append(Reply(200, body))
        assert make(AlphaVantage, server, "alphavantage", "key").fetch_bars("IBM", "stocks", None).empty


def test_alphavantage_overview_gives_fundamentals_and_empty_object_means_none():
    overview = {"IBM": {"Symbol": "IBM", "Name": "International Business Machines", "Exchange": "NYSE",
                        "Sector": "TECHNOLOGY", "Industry": "COMPUTER & OFFICE EQUIPMENT",
                        "MarketCapitalization": "271356035000", "PERatio": "49.99", "PriceToBookRatio": "None"}}
    with av.FakeAlphaVantage({}, overview=overview) as server:
        infos = make(AlphaVantage, server, "alphavantage", "key").fetch_metadata(["IBM", "SPY"], "stocks")
    assert len(infos) == 1
    assert (infos[0].pe_ratio, infos[0].pb_ratio, infos[0].market_cap) == (49.99, None, 271356035000.0)


def test_alphavantage_overview_quota_spent_part_way_hands_back_what_it_fetched():
    overview = {s: {"Symbol": s, "Name": f"{s} Inc", "Sector": "TECHNOLOGY"} for s in ("AAPL", "MSFT", "KO")}
    with av.FakeAlphaVantage({}, overview={**overview, "IBM": av.DAILY_QUOTA}) as server:
        with pytest.raises(MetadataIncomplete, match="stopped at IBM: daily quota spent") as stopped:
            make(AlphaVantage, server, "alphavantage", "key").fetch_metadata(["AAPL", "MSFT", "IBM", "KO"], "stocks")
        assert [q["symbol"] for _, q in server.requests] == ["AAPL", "MSFT", "IBM"]  # none asked after the quota
    assert [i.symbol for i in stopped.value.infos] == ["AAPL", "MSFT"]


# --- Yahoo ------------------------------------------------------------------------------


def test_yahoo_stamps_bars_at_the_exchange_session_date():
    data = bars()
    with FakeYahoo({"AAPL": data}) as server:
        frame = make(Yahoo, server, "yahoo").fetch_bars("AAPL", "stocks", None)
    assert list(frame["ts"]) == list(data["ts"])


def test_yahoo_nulls_are_kept_for_validation_to_quarantine():
    data = bars()
    data.loc[3, "close"] = float("nan")
    with FakeYahoo({"AAPL": data}) as server:
        frame = make(Yahoo, server, "yahoo").fetch_bars("AAPL", "stocks", None)
    assert frame["close"].isna().sum() == 1


def test_yahoo_not_found_envelope_is_a_clear_error():
    with FakeYahoo({}) as server:
        with pytest.raises(ProviderError, match="symbol may be delisted"):
            make(Yahoo, server, "yahoo").fetch_bars("NOPE", "stocks", None)


def test_yahoo_plain_text_429_is_retried():
    with FakeYahoo({"AAPL": bars()}) as server:
        server.script.append(Reply(429, "Edge: Too Many Requests"))
        assert len(make(Yahoo, server, "yahoo").fetch_bars("AAPL", "stocks", None)) == 30


def test_yahoo_empty_result_gives_no_bars():
    with FakeYahoo({"AAPL": bars()}) as server:
        server.script.append(Reply(200, {"chart": {"result": [], "error": None}}))
        assert make(Yahoo, server, "yahoo").fetch_bars("AAPL", "stocks", None).empty


# --- Binance ----------------------------------------------------------------------------


def test_binance_walks_pages_of_klines():
    data = bars(1500, "crypto")
    data["ts"] = pd.date_range("2019-01-01", periods=1500, freq="D", tz="UTC")
    with FakeBinance({"BTC": data}) as server:
        frame = make(Binance, server, "binance").fetch_bars("BTC", "crypto", None)
        # two pages (a page's retry after the 0.5 s timeout, on a loaded machine, asks the same one)
        assert len({query["startTime"] for _, query in server.requests}) == 2
    assert len(frame) == 1500 and frame["ts"].is_unique


def test_binance_invalid_symbol_is_definitive():
    with FakeBinance({}) as server:
        with pytest.raises(ProviderError, match="Invalid symbol"):
            make(Binance, server, "binance").fetch_bars("NOPE", "crypto", None)


# --- CoinGecko --------------------------------------------------------------------------


def test_coingecko_builds_daily_bars_and_drops_the_off_grid_point():
    data = bars(20, "crypto")
    with FakeCoinGecko({"BTC": data}) as server:
        frame = make(CoinGecko, server, "coingecko").fetch_bars("BTC", "crypto", None)
    assert len(frame) == 19  # n midnight points -> n-1 bars
    assert (frame["close"].to_numpy()[:-1] == frame["open"].to_numpy()[1:]).all()
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()


def test_coingecko_429_body_is_retried_and_range_error_is_definitive():
    with FakeCoinGecko({"BTC": bars(20, "crypto")}) as server:
        server.script.append(Reply(429, RATE_LIMITED, headers={"retry-after": "0"}))
        assert len(make(CoinGecko, server, "coingecko").fetch_bars("BTC", "crypto", None)) == 19
        server.script.append(Reply(200, RANGE_ERROR))
        with pytest.raises(ProviderError, match="10012"):
            make(CoinGecko, server, "coingecko").fetch_bars("BTC", "crypto", None)


def test_coingecko_unknown_coin_is_a_clear_error():
    with FakeCoinGecko({}) as server:
        with pytest.raises(ProviderError, match="coin not found"):
            make(CoinGecko, server, "coingecko").fetch_bars("BTC", "crypto", None)


def test_coingecko_metadata_leaves_out_a_symbol_naming_several_coins_and_gives_the_rest():
    twins = [{"id": "uniswap", "symbol": "uni", "name": "Uniswap"}, {"id": "universe-token", "symbol": "uni", "name": "Universe"}]
    with FakeCoinGecko({}, coins=twins) as server:
        with pytest.raises(MetadataIncomplete, match=r"symbol UNI matches 2 coins \(uniswap, universe-token\)") as partial:
            make(CoinGecko, server, "coingecko").fetch_metadata(["BTC", "UNI", "ETH"], "crypto")
    assert sorted((i.symbol, i.coingecko_id) for i in partial.value.infos) == [("BTC", "bitcoin"), ("ETH", "ethereum")]


def test_coingecko_metadata_of_more_coins_than_one_page_comes_back_whole():
    coins = [{"id": f"coin-{n}", "symbol": f"c{n}", "name": f"Coin {n}"} for n in range(300)]
    with FakeCoinGecko({}, coins=coins) as server:
        infos = make(CoinGecko, server, "coingecko").fetch_metadata([f"C{n}" for n in range(300)], "crypto")
        pages = [q for path, q in server.requests if path == "/coins/markets"]
    assert sorted(i.coingecko_id for i in infos) == sorted(c["id"] for c in coins)
    assert [(len(q["ids"].split(",")), q["per_page"]) for q in pages] == [(250, "250"), (50, "250")]


def test_coingecko_markets_give_crypto_metadata():
    with FakeCoinGecko({"BTC": bars(5, "crypto")}) as server:
        infos = make(CoinGecko, server, "coingecko").fetch_metadata(["BTC"], "crypto")
    assert [(i.symbol, i.coingecko_id, i.market_cap) for i in infos] == [("BTC", "bitcoin", 1e9)]
