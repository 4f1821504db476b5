"""Turning JSON feature rows into the model's input matrix, with errors that name the features.

The rule for missing values (documented in the API): ``null`` or ``NaN`` means "value not
available" and reaches XGBoost as NaN, which follows the branch the model learned for
missing values (features in their warm-up window are NaN, so this is normal input). ``inf``
and ``-inf`` are rejected, because no feature the lab computes is legitimately infinite and a
tree would silently put them on the "large" side of every split. Booleans and strings are
not numbers here, even though ``float("1.5")`` would succeed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

__all__ = ["FeatureProblems", "rows_to_matrix"]

_NUMBER_TYPES = frozenset({int, float, type(None)})


@dataclass(eq=False)
class FeatureProblems(ValueError):
    """Everything wrong with the rows at once, by kind; each list names features, sorted."""

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    non_numeric: list[str] = field(default_factory=list)
    non_finite: list[str] = field(default_factory=list)
    not_objects: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any((self.missing, self.extra, self.non_numeric, self.non_finite, self.not_objects))

    def __str__(self) -> str:
        parts = [
            f"{label}: {', '.join(map(str, names))}"
            for label, names in (
                ("missing features", self.missing),
                ("unexpected features", self.extra),
                ("non-numeric values for", self.non_numeric),
                ("infinite values for", self.non_finite),
                ("rows that are not JSON objects (indexes)", self.not_objects),
            )
            if names
        ]
        return "; ".join(parts)

    def as_dict(self) -> dict[str, list[Any]]:
        return {k: v for k, v in vars(self).items() if v}


def _fits_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def rows_to_matrix(rows: Sequence[Any], feature_names: Sequence[str]) -> np.ndarray:
    """A float64 matrix with columns in ``feature_names`` order; FeatureProblems otherwise.

    The hot path of every ``rows`` request: one key-set comparison per row, one flat list of
    cells, one type check and one ``np.array``; the slower naming work runs only on errors.
    """
    expected = frozenset(feature_names)
    problems = FeatureProblems()
    missing: set[str] = set()
    extra: set[str] = set()
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            problems.not_objects.append(index)
            continue
        keys = row.keys()
        if keys != expected:
            missing |= expected - keys
            extra |= keys - expected
    problems.missing, problems.extra = sorted(missing), sorted(extra)
    if problems:
        raise problems
    width = len(feature_names)
    if width == 0 or not rows:
        return np.empty((len(rows), width), dtype=np.float64)
    pick = itemgetter(*feature_names)
    cells = list(chain.from_iterable(map(pick, rows))) if width > 1 else list(map(pick, rows))
    if not set(map(type, cells)) <= _NUMBER_TYPES:
        problems.non_numeric = sorted({feature_names[i % width] for i, value in enumerate(cells)
                                       if type(value) not in _NUMBER_TYPES})
        raise problems
    try:
        matrix = np.array(cells, dtype=np.float64).reshape(len(rows), width)
    except OverflowError:  # an integer beyond float64's range
        problems.non_finite = sorted({feature_names[i % width] for i, value in enumerate(cells)
                                      if isinstance(value, int) and not _fits_float(value)})
        raise problems from None
    infinite = np.isinf(matrix).any(axis=0)
    if infinite.any():
        problems.non_finite = sorted(name for name, bad in zip(feature_names, infinite, strict=True) if bad)
        raise problems
    return matrix
