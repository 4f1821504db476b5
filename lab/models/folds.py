"""Walk-forward folds with purging and an embargo (Lopez de Prado, AFML ch. 7).

Folds are cut on the unique, sorted timestamps (one "bar" each), so a frame holding many
symbols per day splits by day, never inside a day. Test windows are consecutive blocks at
the end of the history; each fold trains on everything before its test window except:

* purged rows: a row at bar ``i`` carries a label built from bars ``i+1 .. i+horizon``;
  when that window reaches into the test window the row is dropped from training;
* embargoed rows: the ``embargo`` bars right after every earlier test window, whose
  features still overlap the serially correlated bars that were scored there.

No fold ever trains on a bar at or after its own test window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lab.errors import DataError

__all__ = ["Fold", "walk_forward_folds"]


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


def walk_forward_folds(timestamps: pd.Series | pd.Index | np.ndarray | list, n_folds: int,
                       horizon: int, embargo: int = 0) -> list[Fold]:
    """``n_folds`` time-ordered folds over ``timestamps`` (one entry per row, any order)."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if horizon < 0 or embargo < 0:
        raise ValueError(f"horizon and embargo must be >= 0, got {horizon} and {embargo}")
    stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(timestamps), utc=True))
    if stamps.hasnans:
        raise DataError("timestamps contain missing values")
    bars = stamps.unique().sort_values()
    position = bars.get_indexer(stamps)  # the bar number of each row
    test_size = len(bars) // (n_folds + 1)
    first_test = len(bars) - n_folds * test_size
    if test_size < 1 or first_test - horizon < 1:
        raise DataError(f"{len(bars)} distinct timestamps are too few for {n_folds} walk-forward folds "
                        f"with a {horizon}-bar label horizon")
    blocked = np.zeros(len(bars), dtype=bool)  # embargoed bars after earlier test windows
    folds = []
    for k in range(n_folds):
        start, end = first_test + k * test_size, first_test + (k + 1) * test_size  # [start, end)
        trainable = np.zeros(len(bars), dtype=bool)
        trainable[: max(start - horizon, 0)] = True  # purge: label window must end before start
        trainable &= ~blocked
        train = np.flatnonzero(trainable[position])
        test = np.flatnonzero((position >= start) & (position < end))
        if train.size == 0:
            raise DataError(f"fold {k} has no training rows left after purging and embargo")
        folds.append(Fold(k, train, test, bars[start], bars[end - 1]))
        blocked[end: end + embargo] = True
    return folds
