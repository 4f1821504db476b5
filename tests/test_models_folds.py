"""Walk-forward folds: time order, purging, embargo, and never training on the future."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.errors import DataError
from lab.models import walk_forward_folds


def _stamps(days: int, symbols: int) -> pd.DatetimeIndex:
    dates = pd.bdate_range("2020-01-01", periods=days, tz="UTC")
    return pd.DatetimeIndex(np.tile(dates, symbols))


@settings(max_examples=60, deadline=None)
@given(days=st.integers(80, 300), symbols=st.integers(1, 4), n_folds=st.integers(1, 6),
       horizon=st.integers(0, 10), embargo=st.integers(0, 10), seed=st.integers(0, 2**16))
def test_no_fold_trains_on_or_after_its_test_window_minus_the_label_horizon(days, symbols, n_folds, horizon,
                                                                            embargo, seed):
    stamps = _stamps(days, symbols)[np.random.default_rng(seed).permutation(days * symbols)]  # any row order
    bars = pd.DatetimeIndex(stamps.unique().sort_values())
    folds = walk_forward_folds(stamps, n_folds, horizon, embargo)
    assert len(folds) == n_folds
    for fold in folds:
        start = bars.get_loc(fold.test_start)
        train_bars = bars.get_indexer(stamps[fold.train])
        assert train_bars.max() + horizon < start  # every training label window ends before the test window
        assert (stamps[fold.test] >= fold.test_start).all() and (stamps[fold.test] <= fold.test_end).all()
        assert np.intersect1d(fold.train, fold.test).size == 0


@settings(max_examples=40, deadline=None)
@given(days=st.integers(60, 300), n_folds=st.integers(2, 5), embargo=st.integers(1, 8))
def test_bars_right_after_an_earlier_test_window_are_embargoed(days, n_folds, embargo):
    stamps = _stamps(days, 2)
    bars = pd.DatetimeIndex(stamps.unique())
    folds = walk_forward_folds(stamps, n_folds, 0, embargo)
    for later in folds[1:]:
        trained = set(bars.get_indexer(stamps[later.train]))
        for earlier in folds[: later.index]:
            end = bars.get_loc(earlier.test_end)
            assert not trained & set(range(end + 1, end + 1 + embargo))


def test_test_windows_are_consecutive_disjoint_and_cover_the_end_of_history():
    stamps = _stamps(100, 3)
    folds = walk_forward_folds(stamps, 4, horizon=5, embargo=2)
    starts = [f.test_start for f in folds]
    assert starts == sorted(starts)
    assert all(a.test_end < b.test_start for a, b in zip(folds, folds[1:], strict=False))
    assert folds[-1].test_end == stamps.max()
    assert sum(f.test.size for f in folds) == 4 * (100 // 5) * 3


def test_rows_of_one_day_never_split_across_train_and_test():
    stamps = _stamps(50, 5)
    for fold in walk_forward_folds(stamps, 3, horizon=0, embargo=0):
        assert not set(stamps[fold.train]) & set(stamps[fold.test])


def test_too_little_history_for_the_folds_is_a_clear_error():
    with pytest.raises(DataError, match="too few for 4 walk-forward folds"):
        walk_forward_folds(_stamps(12, 2), 4, horizon=5, embargo=0)
