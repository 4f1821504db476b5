"""The decision time a ``{symbols, as_of}`` request stands for, and how refused symbols are named."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from lab.trading.calendar import SKEW, in_future
from serving.symbols import SymbolProblems, decision_time
from universe.calendars import last_bar_at

NOW = datetime(2024, 7, 1, 15, 30, tzinfo=UTC)


def test_no_as_of_means_now() -> None:
    assert decision_time(None, NOW) == NOW


def test_a_date_means_that_days_bar_by_its_midnight_utc_label_as_a_cycles_date() -> None:
    assert decision_time(date(2024, 6, 28), NOW) == datetime(2024, 6, 28, tzinfo=UTC)
    assert last_bar_at("stocks", decision_time(date(2024, 6, 28), NOW)) == pd.Timestamp("2024-06-28", tz="UTC")


def test_a_naive_datetime_is_utc() -> None:
    assert decision_time(datetime(2024, 6, 28, 16), NOW) == datetime(2024, 6, 28, 16, tzinfo=UTC)


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1),
                    timezones=st.just(timezone(timedelta(hours=-4)))))
def test_an_aware_datetime_keeps_its_instant_in_utc(as_of: datetime) -> None:
    resolved = decision_time(as_of, NOW)
    assert resolved == as_of and resolved.tzinfo == UTC


def test_the_future_begins_after_today_for_a_date_and_past_the_skew_for_a_time() -> None:
    now = datetime(2024, 3, 1, 23, 0, tzinfo=UTC)
    assert not in_future(date(2024, 3, 1), now) and in_future(date(2024, 3, 2), now)
    assert not in_future(now + SKEW, now) and in_future(now + SKEW + timedelta(seconds=1), now)
    assert in_future(datetime(2024, 3, 1, 23, 30), now)  # naive: UTC
    assert not in_future(datetime(2024, 3, 2, 0, 10, tzinfo=timezone(timedelta(hours=1))), now)  # 23:10 UTC


def test_problems_name_every_symbol_by_reason() -> None:
    problems = SymbolProblems(NOW, unknown=["ZZZ"], no_bars=["OLD"], undefined={"NEW": ["ret_20", "rsi_14"]})
    text = str(problems)
    assert "ZZZ" in text and "OLD" in text and NOW.isoformat() in text and "NEW (ret_20, rsi_14)" in text
    assert problems.as_dict() == {"unknown": ["ZZZ"], "no_bars": ["OLD"], "undefined": {"NEW": ["ret_20", "rsi_14"]}}
    assert not SymbolProblems(NOW)
