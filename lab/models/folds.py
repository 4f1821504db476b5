"""Walk-forward folds with purging and an embargo (Lopez de Prado, AFML ch. 7).

Folds are cut on the unique, sorted timestamps (one "bar" each), so a frame holding many
symbols per day splits by day, never inside a day. Test windows are consecutive blocks at
the end of the history; each fold trains on everything before its test window except:

* purged rows: a row's label reads its symbol's bars up to ``label_end``; when that is at or
  after the first bar of the test window the row is dropped from training. The purge reads
  each row's own label end, not a count of bars, because symbols on other calendars
  (stocks' five-day weeks beside crypto's seven) or with gaps in their data reach further
  in time over the same number of their own bars;
* embargoed rows: the ``embargo`` bars right after every earlier test window, whose
  features still overlap the serially correlated bars that were scored there.

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

_Stamps = pd.Series | pd.Index | np.ndarray | list


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


def _utc(values: _Stamps, what: str) -> pd.DatetimeIndex:
    stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(values), utc=True))
    if stamps.hasnans:
        raise DataError(f"{what} contain missing values")
    return stamps


def _rows(timestamps: _Stamps, label_ends: _Stamps) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    """Each row's timestamp and label end, checked to pair up."""
    stamps, ends = _utc(timestamps, "timestamps"), _utc(label_ends, "label ends")
    if len(ends) != len(stamps):
        raise DataError(f"{len(ends)} label ends for {len(stamps)} timestamps")
    if (ends < stamps).any():
        raise DataError(f"{int((ends < stamps).sum())} label end(s) fall before their row's timestamp")
    return stamps, ends


def walk_forward_folds(timestamps: _Stamps, label_ends: _Stamps, n_folds: int, embargo: int = 0) -> list[Fold]:
    """``n_folds`` time-ordered folds over rows given by their ``timestamps`` and the time of
    the last bar each row's label reads (``label_ends``, one per row, any row order)."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if embargo < 0:
        raise ValueError(f"embargo must be >= 0, got {embargo}")
    stamps, ends = _rows(timestamps, label_ends)
    bars = stamps.unique().sort_values()
    position = bars.get_indexer(stamps)  # the bar number of each row
    test_size = len(bars) // (n_folds + 1)
    first_test = len(bars) - n_folds * test_size
    if test_size < 1:
        raise DataError(f"{len(bars)} distinct timestamps are too few for {n_folds} walk-forward folds")
    blocked = np.zeros(len(bars), dtype=bool)  # embargoed bars after earlier test windows
    folds = []
    for k in range(n_folds):
        start, end = first_test + k * test_size, first_test + (k + 1) * test_size  # [start, end)
        clear = ends < bars[start]  # purge: the label reads no bar of the test window
        if not clear.any():
            raise DataError(f"{len(bars)} distinct timestamps are too few for {n_folds} walk-forward folds: "
                            f"no row's label ends before fold {k}'s test window")
        train = np.flatnonzero(clear & ~blocked[position])
        test = np.flatnonzero((position >= start) & (position < end))
        if train.size == 0:
            raise DataError(f"fold {k} has no training rows left after purging and embargo")
        folds.append(Fold(k, train, test, bars[start], bars[end - 1]))
        blocked[end: end + embargo] = True
    return folds


def walk_forward_holdout(timestamps: _Stamps, label_ends: _Stamps, n_folds: int,
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
    *folds, holdout = walk_forward_folds(stamps, ends, n_folds + 1, embargo)
    tuning = [replace(fold, test=fold.test[ends[fold.test] < holdout.test_start]) for fold in folds]
    if any(fold.test.size == 0 for fold in tuning):
        raise DataError(too_few)
    return tuning, holdout
