"""Walk-forward folds with purging and an embargo (Lopez de Prado, AFML ch. 7).

Folds are cut on the unique, sorted timestamps (one "bar" each), so a frame holding many
symbols per day splits by day, never inside a day. Test windows are consecutive blocks at
the end of the history; each fold trains on everything before its test window except:

* purged rows: a row's label reads its symbol's bars up to ``label_end``; when that is at or
  after the first bar of the test window the row is dropped from training. The purge reads
  each row's own label end, not a count of bars, because symbols on other calendars
  (stocks' five-day weeks beside crypto's seven) or with gaps in their data reach further
  in time over the same number of their own bars;
* embargoed rows: each symbol's first ``embargo`` bars of its own after every earlier test
  window, whose features still overlap the serially correlated bars that were scored there.
  Counted per symbol for the purge's reason: ``embargo`` bars of the combined calendar
  (crypto trades every day) are fewer of a stock's sessions, so a stock's own bars right
  after the window were trained on.

No fold ever trains on a row whose label reads a bar of its own test window.

``walk_forward_holdout`` adds a final holdout: the last of ``n_folds + 1`` such test windows.
Tuning selects on the folds before it, whose rows (train and test) read no holdout bar; the
chosen model is then scored once on the holdout, so that score is not biased upward by the
number of trials the selection compared.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from lab.errors import DataError

__all__ = ["Fold", "walk_forward_folds", "walk_forward_holdout"]

_Column = pd.Series | pd.Index | np.ndarray | list


@dataclass(frozen=True)
class Fold:
    """Row positions (into the timestamps given) used to train and to test one fold."""

    index: int
    train: np.ndarray
    test: np.ndarray
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def describe(self) -> dict[str, object]:
        return {"fold": self.index, "train_rows": int(self.train.size), "test_rows": int(self.test.size),
                "test_start": self.test_start.isoformat(), "test_end": self.test_end.isoformat()}


def _utc(values: _Column, what: str) -> pd.DatetimeIndex:
    stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(values), utc=True))
    if stamps.hasnans:
        raise DataError(f"{what} contain missing values")
    return stamps


def _rows(timestamps: _Column, label_ends: _Column) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    """Each row's timestamp and label end, checked to pair up."""
    stamps, ends = _utc(timestamps, "timestamps"), _utc(label_ends, "label ends")
    if len(ends) != len(stamps):
        raise DataError(f"{len(ends)} label ends for {len(stamps)} timestamps")
    if (ends < stamps).any():
        raise DataError(f"{int((ends < stamps).sum())} label end(s) fall before their row's timestamp")
    return stamps, ends


def _own_bars(symbols: _Column, stamps: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """Each row's symbol (as a code) and how many of that symbol's own bars come before it."""
    codes, _ = pd.factorize(np.asarray(symbols))
    if len(codes) != len(stamps):
        raise DataError(f"{len(codes)} symbols for {len(stamps)} timestamps")
    if (codes < 0).any():
        raise DataError(f"{int((codes < 0).sum())} row(s) without a symbol")
    own = pd.Series(stamps.asi8).groupby(codes).rank(method="dense").to_numpy(dtype=np.int64) - 1
    return codes, own


def walk_forward_folds(symbols: _Column, timestamps: _Column, label_ends: _Column, n_folds: int,
                       embargo: int = 0) -> list[Fold]:
    """``n_folds`` time-ordered folds over rows given by their ``symbols``, ``timestamps`` and
    the time of the last bar each row's label reads (``label_ends``; one of each per row, any
    row order). ``embargo`` counts each symbol's own bars."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if embargo < 0:
        raise ValueError(f"embargo must be >= 0, got {embargo}")
    stamps, ends = _rows(timestamps, label_ends)
    codes, own = _own_bars(symbols, stamps)
    bars = stamps.unique().sort_values()
    position = bars.get_indexer(stamps)  # the bar number of each row
    test_size = len(bars) // (n_folds + 1)
    first_test = len(bars) - n_folds * test_size
    if test_size < 1:
        raise DataError(f"{len(bars)} distinct timestamps are too few for {n_folds} walk-forward folds")
    blocked = np.zeros(len(stamps), dtype=bool)  # embargoed rows after earlier test windows
    folds = []
    for k in range(n_folds):
        start, end = first_test + k * test_size, first_test + (k + 1) * test_size  # [start, end)
        clear = ends < bars[start]  # purge: the label reads no bar of the test window
        if not clear.any():
            raise DataError(f"{len(bars)} distinct timestamps are too few for {n_folds} walk-forward folds: "
                            f"no row's label ends before fold {k}'s test window")
        train = np.flatnonzero(clear & ~blocked)
        test = np.flatnonzero((position >= start) & (position < end))
        if train.size == 0:
            raise DataError(f"fold {k} has no training rows left after purging and embargo")
        folds.append(Fold(k, train, test, bars[start], bars[end - 1]))
        if embargo:
            after = stamps > bars[end - 1]
            seen = np.zeros(codes.max() + 1, dtype=np.int64)  # each symbol's bars up to the window's end
            np.maximum.at(seen, codes[~after], own[~after] + 1)
            blocked |= after & (own < seen[codes] + embargo)
    return folds


def walk_forward_holdout(symbols: _Column, timestamps: _Column, label_ends: _Column, n_folds: int,
                         embargo: int = 0) -> tuple[list[Fold], Fold]:
    """``n_folds`` tuning folds and the holdout fold after them: the last of ``n_folds + 1``
    walk-forward test windows, purged and embargoed like the others. A tuning fold's test
    rows whose label reads a holdout bar are dropped, so no tuning row, trained or scored,
    reads the holdout."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    stamps, ends = _rows(timestamps, label_ends)
    bars = stamps.unique().sort_values()
    window = len(bars) // (n_folds + 2)  # the first training rows, n_folds test windows, the holdout
    ahead = bars.searchsorted(ends) - bars.get_indexer(stamps)  # bars each label reads ahead
    reach = int(ahead[ends <= bars.max()].min(initial=len(bars)))  # the fewest, of labels ending inside the rows
    too_few = (f"{len(bars)} distinct timestamps are too few for {n_folds} walk-forward folds and a holdout: "
               f"the first training window, each fold's test window and the holdout need more bars than a "
               f"label reads ahead ({reach}), {(n_folds + 2) * (reach + 1)} bars in all")
    if window <= reach:
        raise DataError(too_few)
    *folds, holdout = walk_forward_folds(symbols, stamps, ends, n_folds + 1, embargo)
    tuning = [replace(fold, test=fold.test[ends[fold.test] < holdout.test_start]) for fold in folds]
    if any(fold.test.size == 0 for fold in tuning):
        raise DataError(too_few)
    return tuning, holdout
