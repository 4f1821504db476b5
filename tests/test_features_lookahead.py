"""No look-ahead, proven: a feature at bar t is computed from bars up to t only, and no label
is ever a feature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.features import (
    FEATURE_SETS,
    LABEL_KINDS,
    compute_features,
    create_training_data,
    labelled_rows,
    make_label,
    output_columns,
    pair_bars,
)
from lab.strategy import Label, available_strategies
from tests.test_features_support import random_bars

N_BARS = 320
_FACTS = pd.DataFrame({
    "symbol": "X", "known_at": pd.date_range("2015-01-20", periods=8, freq="40D", tz="UTC"),
    "pe_ratio": np.arange(8.0) + 10, "pb_ratio": np.arange(8.0) / 4 + 1, "market_cap": 1e9 * (np.arange(8) + 1),
    "sector": "Energy",
})


def _features(bars: pd.DataFrame, name: str, other: pd.DataFrame, bench: pd.DataFrame) -> pd.DataFrame:
    if FEATURE_SETS[name].kind == "pair":
        return compute_features(pair_bars(bars, other.loc[: bars.index[-1]]), name)
    return compute_features(bars, name, benchmark=bench, fundamentals=_FACTS)


@pytest.mark.parametrize("name", sorted(FEATURE_SETS))
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(1, N_BARS - 2))
def test_features_from_bars_up_to_t_equal_row_t_of_the_full_computation(name: str, seed: int, cut: int) -> None:
    bars = random_bars(N_BARS, seed=seed)
    other, bench = random_bars(N_BARS, seed=seed + 1), random_bars(N_BARS, seed=seed + 2)
    full = _features(bars, name, other, bench)
    truncated = _features(bars.iloc[: cut + 1], name, other, bench)
    pd.testing.assert_series_equal(truncated.iloc[-1], full.iloc[cut], check_exact=True)


def test_changing_a_future_bar_changes_no_earlier_feature() -> None:
    bars = random_bars(N_BARS, seed=3)
    shocked = bars.copy()
    shocked.iloc[250:, :4] *= 3.0
    shocked.iloc[250:, 4] = 0.0
    for name, fs in FEATURE_SETS.items():
        if fs.kind == "pair":
            continue
        before, after = compute_features(bars, name), compute_features(shocked, name)
        pd.testing.assert_frame_equal(before.iloc[:250], after.iloc[:250], check_exact=True)
        assert not before.iloc[250:].equals(after.iloc[250:])


def test_no_label_column_is_in_any_feature_set() -> None:
    bars = random_bars(300, seed=1)
    labels = {Label(kind=kind, horizon=h) for kind in LABEL_KINDS for h in (1, 5, 10, 20)}
    labels |= {cls.label for cls in available_strategies().values()}
    label_names = {make_label(bars, label).name for label in labels} | {"label"}
    for fs in FEATURE_SETS.values():
        produced = set(fs.columns) | set(output_columns(fs))
        assert not produced & label_names, fs.key
        assert not any(col.startswith(("label", "fwd", "future", "barrier")) for col in produced), fs.key


@pytest.mark.parametrize("strategy", sorted(available_strategies()))
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(1, N_BARS - 1))
def test_a_strategys_label_of_bar_t_reads_bars_up_to_t_plus_horizon_only(strategy: str, seed: int, cut: int) -> None:
    """Computed on the bars up to ``cut``, every label whose horizon ends by then equals the
    full history's: a pair's hedge ratio, held fixed from t, is the one known at t."""
    declared = available_strategies()[strategy]
    bars = random_bars(N_BARS, seed=seed)
    if FEATURE_SETS[declared.feature_set].kind == "pair":
        bars = pair_bars(bars, random_bars(N_BARS, seed=seed + 1))
    known = max(cut + 1 - declared.label.horizon, 0)
    full = make_label(bars, declared.label)
    truncated = make_label(bars.iloc[: cut + 1], declared.label)
    pd.testing.assert_series_equal(truncated.iloc[:known], full.iloc[:known], check_exact=True)
    assert truncated.iloc[known:].isna().all()


@pytest.mark.parametrize("strategy", sorted(available_strategies()))
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(30, N_BARS - 1), train=st.integers(20, 200))
def test_a_window_of_the_labelled_history_equals_the_training_frame_of_the_bars_before_it(
        strategy: str, seed: int, cut: int, train: int) -> None:
    """What the walk-forward fit relies on: it computes every bar's features and label once
    and takes each window's rows by ``label_end``, instead of recomputing on the bars before
    each window; the rows, their order and every value are the same."""
    declared = available_strategies()[strategy]
    bars = {name: random_bars(N_BARS, seed=seed + i) for i, name in enumerate(("A", "B", "C"))}
    bench = random_bars(N_BARS, seed=seed + 9)
    facts = pd.concat([_FACTS.assign(symbol=name) for name in bars], ignore_index=True)
    cutoff = bars["A"].index[cut] + pd.Timedelta(hours=12)  # between two bars, as a window's start less 1 us
    first = cutoff - pd.Timedelta(days=train)
    kind = FEATURE_SETS[declared.feature_set].kind
    rows = labelled_rows(dict(reversed(bars.items())), declared.feature_set, declared.label,  # any order given
                         benchmark=None if kind == "pair" else bench, fundamentals=facts)
    window = rows.loc[(rows["timestamp"] >= first) & (rows["label_end"] <= cutoff) & rows["label"].notna()]
    expected = create_training_data(list(bars), declared.feature_set, declared.label, first, cutoff, bars=bars,
                                    benchmark=None if kind == "pair" else bench.loc[:cutoff], fundamentals=facts)
    pd.testing.assert_frame_equal(window.reset_index(drop=True), expected, check_exact=True)
