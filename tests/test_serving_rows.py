"""JSON rows -> model matrix: column order by name, the missing-value rule, named errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.rows import FeatureProblems, rows_to_matrix

NAMES = ["a", "b", "c"]
finite = st.one_of(st.none(), st.integers(-(10**12), 10**12), st.floats(allow_infinity=False))


@given(st.lists(st.fixed_dictionaries({name: finite for name in NAMES}), max_size=20),
       st.permutations(NAMES))
def test_columns_follow_the_model_order_and_missing_values_become_nan(rows, order) -> None:
    reordered = [{name: row[name] for name in order} for row in rows]
    matrix = rows_to_matrix(reordered, NAMES)
    assert matrix.shape == (len(rows), len(NAMES))
    for row, values in zip(rows, matrix, strict=True):
        for name, value in zip(NAMES, values, strict=True):
            given_value = row[name]
            if given_value is None or (isinstance(given_value, float) and math.isnan(given_value)):
                assert np.isnan(value)
            else:
                assert value == float(given_value)


def _problems(rows) -> FeatureProblems:
    with pytest.raises(FeatureProblems) as caught:
        rows_to_matrix(rows, NAMES)
    return caught.value


def test_missing_and_extra_features_are_named_together() -> None:
    problems = _problems([{"a": 1, "b": 2, "c": 3}, {"a": 1, "x": 2, "y": 3}])
    assert problems.missing == ["b", "c"] and problems.extra == ["x", "y"]
    assert "missing features: b, c" in str(problems) and "unexpected features: x, y" in str(problems)


@pytest.mark.parametrize("value", ["1", True, [1], {"v": 1}])
def test_non_numbers_are_named(value) -> None:
    assert _problems([{"a": 1, "b": value, "c": 3}]).non_numeric == ["b"]


@pytest.mark.parametrize("value", [math.inf, -math.inf, 10**400])
def test_infinities_are_named(value) -> None:
    assert _problems([{"a": 1, "b": 2, "c": value}]).non_finite == ["c"]


def test_rows_that_are_not_objects_are_reported_by_index() -> None:
    assert _problems([{"a": 1, "b": 2, "c": 3}, [1, 2, 3], 5]).not_objects == [1, 2]


def test_no_rows_is_an_empty_matrix() -> None:
    assert rows_to_matrix([], NAMES).shape == (0, 3)
