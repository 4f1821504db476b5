"""Indicator values: TA-Lib agreement, exact rolling statistics at any scale, bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import talib

from lab.errors import ConfigError, DataError
from lab.features import FEATURE_SETS, compute_features, get_feature_set, pair_bars
from tests.test_features_support import random_bars, wide_range_bars

LOOKBACK = 200  # after the longest lookback every TA-Lib indicator is defined


def _rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    ours, ref = ours[LOOKBACK:], ref[LOOKBACK:]
    assert not np.isnan(ours).any() and not np.isnan(ref).any()
    return float(np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-300)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_talib_indicator_agrees_with_talib_after_its_lookback(seed: int) -> None:
    bars = random_bars(700, seed=seed)
    f = compute_features(bars, "technical@1")
    c, h, lo = (bars[k].to_numpy() for k in ("close", "high", "low"))
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0)
    reference = {
        "rsi_14": talib.RSI(c, 14), "macd": macd, "macd_signal": signal, "macd_hist": hist,
        "sma_20": talib.SMA(c, 20), "sma_50": talib.SMA(c, 50), "sma_200": talib.SMA(c, 200),
        "bb_upper": upper, "bb_middle": middle, "bb_lower": lower, "atr_14": talib.ATR(h, lo, c, 14),
        "volume_sma_20": talib.SMA(bars["volume"].to_numpy(), 20),
    }
    for column, ref in reference.items():
        assert _rel_err(f[column].to_numpy(), ref) <= 1e-9, column


def _exact_std(window: np.ndarray, ddof: int) -> float:
    """Per-window standard deviation with exactly rounded sums."""
    mean = math.fsum(window) / len(window)
    return math.sqrt(math.fsum((x - mean) ** 2 for x in window) / (len(window) - ddof))


def test_bollinger_bands_are_exact_on_a_series_spanning_six_orders_of_magnitude() -> None:
    bars = wide_range_bars()
    f = compute_features(bars, "breakout@1")
    close = bars["close"].to_numpy()
    for t in range(19, len(close)):
        window = close[t - 19:t + 1]
        mean, sd = math.fsum(window) / 20, _exact_std(window, 0)
        for column, expected in (("bb_middle", mean), ("sma_20", mean), ("bb_upper", mean + 2 * sd),
                                 ("bb_lower", mean - 2 * sd)):
            assert f[column].iloc[t] == pytest.approx(expected, rel=1e-8), (column, t)


def test_volatility_is_exact_on_a_series_spanning_six_orders_of_magnitude() -> None:
    bars = wide_range_bars()
    f = compute_features(bars, "momentum@1")
    log_ret = np.diff(np.log(bars["close"].to_numpy()))
    for t in range(20, len(bars)):
        expected = _exact_std(log_ret[t - 20:t], 1)
        assert f["volatility_20"].iloc[t] == pytest.approx(expected, rel=1e-8), t


def test_the_wide_range_series_is_one_where_pandas_rolling_std_is_not_exact() -> None:
    """Guards the test above: it must be a series that breaks running-sum implementations."""
    close = wide_range_bars()["close"]
    pandas_sd = close.rolling(20).std(ddof=0).to_numpy()
    exact = np.array([np.nan] * 19 + [_exact_std(close.to_numpy()[t - 19:t + 1], 0) for t in range(19, len(close))])
    assert np.nanmax(np.abs(pandas_sd - exact) / exact) > 1e-6


def test_strategy_columns_exist_in_their_sets_output() -> None:
    from lab.strategy import available_strategies

    needed = {"momentum@1": {"ret_20", "volume_ratio_20"},
              "technical@1": {"rsi_14", "close_to_sma_200", "close_to_sma_50", "macd_cross_up"},
              "breakout@1": {"bb_width_pctile", "volume_ratio_20"}, "value@1": {"pe_ratio", "pb_ratio"},
              "pairs@1": {"pair_corr", "spread_z"}}
    a, b = random_bars(300, seed=1), random_bars(300, seed=2)
    for name, columns in needed.items():
        frame = compute_features(pair_bars(a, b) if name == "pairs@1" else a, name)
        assert columns <= set(frame.columns), name
        assert set(get_feature_set(name).columns) <= set(frame.columns), name
    for strategy in available_strategies().values():
        assert strategy.feature_set in FEATURE_SETS


def test_model_columns_are_scale_free() -> None:
    """Multiplying every price by 1000 leaves every model input unchanged."""
    bars = random_bars(400, seed=3)
    scaled = bars.assign(**{c: bars[c] * 1000 for c in ("open", "high", "low", "close")})
    for name, fs in FEATURE_SETS.items():
        if fs.kind == "pair":
            ours, theirs = (compute_features(pair_bars(x, random_bars(400, seed=4)), name) for x in (bars, scaled))
        else:
            ours, theirs = compute_features(bars, name), compute_features(scaled, name)
        cols = [c for c in fs.columns if c != "hedge_ratio"]  # beta of log prices: scale moves only its intercept
        pd.testing.assert_frame_equal(ours[cols], theirs[cols], rtol=1e-9, check_exact=False)


def test_macd_cross_up_marks_only_the_bar_of_an_upward_cross() -> None:
    f = compute_features(random_bars(500, seed=5), "technical@1")
    above = f["macd"] > f["macd_signal"]
    expected = (above & ~above.shift(1, fill_value=True)).astype(float)
    defined = f["macd_cross_up"].notna()
    assert defined.sum() > 400
    assert (f.loc[defined, "macd_cross_up"] == expected[defined]).all()
    assert f["macd_cross_up"].sum() > 0


def test_unknown_feature_set_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown feature set 'technical@2' \(did you mean 'technical@1'\?\).*momentum@1"):
        get_feature_set("technical@2")


def test_fingerprint_changes_with_the_version() -> None:
    from dataclasses import replace

    fs = get_feature_set("momentum@1")
    assert replace(fs, version=2).fingerprint != fs.fingerprint
    assert len({f.fingerprint for f in FEATURE_SETS.values()}) == len(FEATURE_SETS)


# --- bad input: defined NaN, never an exception -------------------------------------------


def test_too_little_history_leaves_the_lookback_nan() -> None:
    f = compute_features(random_bars(30), "technical@1")
    assert f["sma_200"].isna().all() and f["sma_50"].isna().all()
    assert f["sma_20"].notna().sum() == 11
    assert len(compute_features(random_bars(0), "technical@1")) == 0


@pytest.mark.parametrize("price", [10.0, 1.1, 0.1, 0.07, 0.0021])
def test_constant_price_gives_nan_where_indicators_are_undefined(price: float) -> None:
    """At any price level: twenty equal prices have a band of exactly zero width (their
    summed mean is not exactly the price, which left a 1e-17 band and a %b of 0.25)."""
    bars = random_bars(300).assign(open=price, high=price, low=price, close=price)
    f = compute_features(bars, "technical@1")
    assert f["rsi_14"].isna().all()
    assert f["bb_pctb"].isna().all()
    assert (f["bb_width"].dropna() == 0).all() and (f["ret_5"].dropna() == 0).all()


def test_nan_and_zero_volume_leave_only_volume_features_undefined() -> None:
    bars = random_bars(300)
    bars.iloc[100, bars.columns.get_loc("volume")] = np.nan
    bars.iloc[150:, bars.columns.get_loc("volume")] = 0.0
    f = compute_features(bars, "momentum@1")
    assert f["volume_ratio_20"].iloc[100:120].isna().all()
    assert f["volume_ratio_20"].iloc[170:].isna().all()  # 0 / 0
    assert f["vol_chg_1"].iloc[151:].isna().all()
    assert f["rsi_14"].iloc[100:].notna().all()


def test_a_bar_with_a_missing_price_is_skipped_not_propagated() -> None:
    bars = random_bars(300)
    broken = bars.copy()
    broken.iloc[250, broken.columns.get_loc("close")] = np.nan
    f = compute_features(broken, "technical@1")
    clean = compute_features(bars.drop(bars.index[250]), "technical@1")
    assert f.iloc[250].isna().all()
    pd.testing.assert_frame_equal(f.drop(bars.index[250]), clean)


def test_malformed_bars_raise_a_data_error_naming_the_problem() -> None:
    bars = random_bars(50)
    with pytest.raises(DataError, match="missing column.*volume"):
        compute_features(bars.drop(columns="volume"), "technical@1")
    with pytest.raises(DataError, match="duplicated timestamps"):
        compute_features(pd.concat([bars, bars.iloc[[-1]]]), "technical@1")
    with pytest.raises(DataError, match="not in ascending order"):
        compute_features(bars.iloc[::-1], "technical@1")
    with pytest.raises(DataError, match="tz-aware"):
        compute_features(bars.tz_localize(None), "technical@1")


def test_benchmark_missing_for_part_of_the_range_gives_nan_relative_strength_there() -> None:
    bars = random_bars(300, seed=1)
    bench = random_bars(300, seed=2).iloc[:200]
    f = compute_features(bars, "momentum@1", benchmark=bench)
    assert f["rel_strength_20"].iloc[20:200].notna().all()
    assert f["rel_strength_20"].iloc[200:].isna().all()
    expected = f["ret_20"].iloc[20:200] - (bench["close"] / bench["close"].shift(20) - 1).iloc[20:200]
    np.testing.assert_allclose(f["rel_strength_20"].iloc[20:200], expected, rtol=1e-12)


def test_fundamentals_are_used_only_from_when_they_were_known() -> None:
    bars = random_bars(100, start="2020-01-01")
    facts = pd.DataFrame({"symbol": "X", "known_at": pd.to_datetime(["2020-01-10", "2020-02-15"], utc=True),
                          "pe_ratio": [12.0, 15.0], "pb_ratio": [1.5, 2.0], "market_cap": [1e9, 2e9],
                          "sector": ["Energy", "Martian Mining"]})
    f = compute_features(bars, "value@1", fundamentals=facts)
    assert f.loc[:"2020-01-09", "pe_ratio"].isna().all()
    assert (f.loc["2020-01-10":"2020-02-14", "pe_ratio"] == 12.0).all()
    assert (f.loc["2020-02-15":, "pb_ratio"] == 2.0).all()
    assert f.loc["2020-01-10", "log_market_cap"] == pytest.approx(math.log(1e9))
    assert f.loc["2020-01-10", "sector_code"] == 3.0 and np.isnan(f.loc["2020-02-15", "sector_code"])


@pytest.mark.parametrize(("broken", "message"), [
    (lambda facts: facts.drop(columns="market_cap"), "fundamentals: missing column.*market_cap"),
    (lambda facts: facts.assign(known_at=[pd.NaT, facts["known_at"][1]]), "fundamentals: 1 row.* without known_at"),
], ids=["missing-column", "null-known-at"])
def test_bad_fundamentals_are_a_data_error_naming_the_problem(broken, message: str) -> None:
    facts = pd.DataFrame({"symbol": "X", "known_at": pd.to_datetime(["2020-01-10", "2020-02-15"], utc=True),
                          "pe_ratio": [12.0, 15.0], "pb_ratio": [1.5, 2.0], "market_cap": [1e9, 2e9],
                          "sector": ["Energy", "Energy"]})
    with pytest.raises(DataError, match=message):
        compute_features(random_bars(100, start="2020-01-01"), "value@1", fundamentals=broken(facts))


def test_pair_features_follow_a_cointegrated_pair() -> None:
    b = random_bars(300, seed=8)
    noise = np.random.default_rng(9).normal(0, 0.002, 300)
    a = b.assign(close=b["close"] ** 1.5 * np.exp(noise))
    f = compute_features(pair_bars(a, b), "pairs@1")
    assert f["hedge_ratio"].dropna().between(1.3, 1.7).all()
    assert f["pair_corr"].dropna().gt(0.9).all()
    assert f["spread_z"].iloc[59:].notna().all() and f["spread_z"].iloc[:59].isna().all()
