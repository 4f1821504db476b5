"""Validation and price adjustment: every raw bar ends up clean or quarantined with a reason."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from universe.adjust import adjust_prices
from universe.providers.files import FileProvider
from universe.validate import validate_bars


def table(rows, start="2024-01-02"):
    """Rows of (open, high, low, close, volume) on consecutive NYSE sessions."""
    days = pd.bdate_range(start, periods=len(rows), tz="UTC")
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume"])
    frame.insert(0, "ts", days)
    frame["source"] = "test"
    return frame


def reasons(validated):
    return {row.ts.date().isoformat(): row.reason for row in validated.quarantined.itertuples()}


def test_clean_bars_pass_untouched():
    raw = table([(10, 11, 9, 10.5, 100), (10.5, 11, 10, 10.8, 120)])
    out = validate_bars(raw, "stocks")
    assert out.quarantined.empty and len(out.clean) == 2


def test_inconsistent_and_non_positive_bars_are_quarantined_with_reasons():
    raw = table([(10, 11, 9, 10.5, 100), (10, 9.5, 9, 10.2, 100), (10, 11, 10.4, 10.2, 100),
                 (0, 11, 9, 10, 100), (10, 11, 9, 10, -5), (10, np.nan, 9, 10, 1)])
    got = reasons(validate_bars(raw, "stocks"))
    assert got == {"2024-01-03": "OHLC inconsistent: high below open/close",
                   "2024-01-04": "OHLC inconsistent: low above open/close",
                   "2024-01-05": "non-positive price", "2024-01-08": "negative volume",
                   "2024-01-09": "missing or non-finite value"}


def test_identical_duplicates_keep_one_copy_and_quarantine_the_rest():
    raw = table([(10, 11, 9, 10.5, 100), (10.5, 11, 10, 10.8, 120)])
    raw = pd.concat([raw, raw.iloc[[1]]], ignore_index=True)
    out = validate_bars(raw, "stocks")
    assert len(out.clean) == 2 and list(out.quarantined["reason"]) == ["duplicate bar"]


def test_conflicting_duplicates_are_all_quarantined():
    raw = table([(10, 11, 9, 10.5, 100), (10.5, 11, 10, 10.8, 120)])
    other = raw.iloc[[1]].assign(close=10.9)
    out = validate_bars(pd.concat([raw, other], ignore_index=True), "stocks")
    assert len(out.clean) == 1
    assert set(out.quarantined["reason"]) == {"conflicting duplicate bars (2 versions)"}


def test_stock_bar_on_a_non_session_day_is_quarantined():
    raw = table([(10, 11, 9, 10.5, 100)])
    raw.loc[0, "ts"] = pd.Timestamp("2024-07-04", tz="UTC")  # Independence Day
    assert reasons(validate_bars(raw, "stocks")) == {"2024-07-04": "not an NYSE session"}


def test_a_reverting_spike_is_quarantined_but_a_real_crash_is_kept_as_outlier():
    prices = [100, 101, 100, 160, 100.5, 101, 60, 61, 60.5]
    raw = table([(p, p * 1.01, p * 0.99, p, 1000) for p in prices])
    out = validate_bars(raw, "stocks")
    assert list(out.quarantined["reason"]) == ["outlier spike: jump reverted by the next bar"]
    assert [t.date().isoformat() for t in out.outliers] == ["2024-01-10"]


def test_a_split_like_jump_quarantines_the_whole_batch():
    prices = [100, 101, 102, 51, 51.5, 52]
    raw = table([(p, p * 1.01, p * 0.99, p, 1000) for p in prices])
    out = validate_bars(raw, "stocks")
    assert out.clean.empty and len(out.quarantined) == 6
    assert out.quarantined["reason"].iloc[0].startswith("suspected unadjusted 2:1 split on 2024-01-05")
    assert out.reasons() == ["suspected unadjusted 2:1 split on 2024-01-05; supply adjusted prices or split "
                             "coefficients: 6 bars (2024-01-02..2024-01-09)"]


def test_the_reasons_say_how_many_bars_each_quarantined_and_when():
    raw = table([(10, 11, 9, 10.5, 100), (10, 9.5, 9, 10.2, 100), (10, 11, 9, 10.2, -1), (10, 9.8, 9, 10.2, 100)])
    assert validate_bars(raw, "stocks").reasons() == [
        "OHLC inconsistent: high below open/close: 2 bars (2024-01-03..2024-01-05)",
        "negative volume: 1 bar (2024-01-04)"]


def test_a_real_crash_that_opens_at_a_split_ratio_is_kept(shared_data):
    # PG, 2000-03-07: opened at 1/1.508 of the last close on a profit warning and closed at
    # 1/1.433: the opening gap alone would read a 3:2 split and quarantine 22 years of bars
    raw = FileProvider(shared_data / "stocks").fetch_bars("PG", "stocks", date(1999, 1, 1))
    out = validate_bars(raw, "stocks")
    assert out.quarantined.empty
    assert pd.Timestamp("2000-03-07", tz="UTC") in out.outliers


def test_a_split_against_the_last_stored_close_is_detected():
    raw = table([(p, p * 1.01, p * 0.99, p, 1000) for p in [50, 50.5]])
    assert validate_bars(raw, "stocks", prev_close=100.0).clean.empty


def test_split_coefficients_back_adjust_earlier_bars():
    raw = table([(100, 101, 99, 100, 1000), (50, 51, 49, 50, 2000)])
    raw["split_coefficient"] = [1.0, 2.0]
    adjusted = adjust_prices(raw)
    assert adjusted["close"].tolist() == [50.0, 50.0]
    assert adjusted["volume"].tolist() == [2000.0, 2000.0]
    assert "split_coefficient" not in adjusted.columns


def test_dividends_scale_earlier_bars_by_the_yield():
    raw = table([(100, 101, 99, 100, 1000), (98, 99, 97, 98, 1000)])
    raw["dividend"] = [0.0, 2.0]
    assert adjust_prices(raw)["close"].tolist() == [98.0, 98.0]


def test_adjusted_close_scales_the_whole_bar():
    raw = table([(100, 110, 90, 100, 1000)])
    raw["adj_close"] = [50.0]
    assert adjust_prices(raw)[["open", "high", "low", "close", "volume"]].iloc[0].tolist() == [50, 55, 45, 50, 2000]


bar = st.tuples(st.floats(-5, 200), st.floats(-5, 200), st.floats(-5, 200), st.floats(-5, 200),
                st.floats(-10, 1e6) | st.just(float("nan")))


@settings(max_examples=60, deadline=None)
@given(st.lists(bar, min_size=1, max_size=25), st.lists(st.integers(0, 24), max_size=5))
def test_every_raw_bar_is_either_clean_or_quarantined(rows, repeats):
    raw = table(rows)
    raw = pd.concat([raw, raw.iloc[[i % len(raw) for i in repeats]]], ignore_index=True)
    out = validate_bars(raw, "crypto")
    assert len(out.clean) + len(out.quarantined) == len(raw)
    assert out.clean["ts"].is_unique
    clean = out.clean
    assert ((clean["high"] >= clean[["open", "close"]].max(axis=1) * (1 - 1e-6)) & (clean["low"] > 0)).all()


def raw_split(k, day_move=0.0, volume_after=None):
    """20 quiet sessions at 100, then an unadjusted k:1 split that opens at 100 / k and closes
    ``day_move`` away from it (raw share volume grows by k; the value traded does not)."""
    prices = [100.0 + 0.1 * (i % 3) for i in range(20)]
    after = 100.0 / k
    rows = [(p, p * 1.01, p * 0.99, p, 1000) for p in prices]
    rows.append((after, after * (1 + max(day_move, 0) + 0.01), after * (1 + min(day_move, 0) - 0.01),
                 after * (1 + day_move), volume_after or 1000 * k))
    rows += [(after, after * 1.01, after * 0.99, after, 1000 * k)] * 3
    return table(rows, start="2024-04-01")


@pytest.mark.parametrize(("k", "text"), [(4, "4:1"), (7, "7:1"), (4 / 3, "4:3"), (1 / 10, "1:10 reverse")])
def test_an_unadjusted_split_on_a_day_that_also_moved_quarantines_the_batch(k, text):
    out = validate_bars(raw_split(k, day_move=0.06), "stocks")
    assert out.clean.empty
    assert out.batch_reason.startswith(f"suspected unadjusted {text} split on 2024-04-29")


def test_a_split_sized_crash_on_heavy_trading_is_a_real_move():
    # opens and closes at half the last close, as a 2:1 split would, but trades 20 times the usual value
    out = validate_bars(raw_split(2, volume_after=20 * 2 * 1000), "stocks")
    assert out.quarantined.empty and len(out.outliers) == 1


def test_every_real_split_in_raw_prices_is_suspected_and_no_adjusted_history_is(shared_data):
    for path in sorted((shared_data / "stocks").glob("*.csv")):
        data = pd.read_csv(path)
        raw = pd.DataFrame({"ts": pd.to_datetime(data["timestamp"], utc=True), "source": "test",
                            **{c: data[c] for c in ["open", "high", "low", "close", "volume"]}})
        for i in data.index[np.abs(np.log(data["split_coefficient"])) > 0.25]:  # not PFE 1.054: a spin-off
            window = validate_bars(raw.iloc[i - 40:i + 20], "stocks")
            assert window.batch_reason is not None, f"{path.stem} {data['timestamp'][i]}"
        adjusted = validate_bars(FileProvider(path.parent).fetch_bars(path.stem, "stocks", None), "stocks")
        assert adjusted.batch_reason is None, f"{path.stem}: {adjusted.batch_reason}"
