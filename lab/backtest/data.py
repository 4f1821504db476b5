"""The bars (and fundamentals) a backtest replays: checked up front so bad input fails before
any work is done.

A symbol with holes still runs (the engine simply has no bar for it that session); the
missing sessions are reported. Sessions come from the NYSE calendar for stocks and from
the calendar days for crypto, which trades every day.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from functools import lru_cache

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from lab.errors import DataError

__all__ = ["check_period", "first_day", "missing_sessions", "nanoseconds", "require_bars", "require_fundamentals",
           "require_sessions", "span"]

_DAY_NS = 86_400 * 10**9


def check_period(start: pd.Timestamp, end: pd.Timestamp) -> None:
    if start > end:
        raise DataError(f"backtest start {start.date()} is after its end {end.date()}")


def require_sessions(asset_types: Collection[str], start: pd.Timestamp, end: pd.Timestamp) -> None:
    """The period must hold a session of one of the run's symbols' ``asset_types``: a weekend or
    holiday of stocks is an empty period, whatever other series (a crypto benchmark's bars, on
    every day) the run reads."""
    if not any(len(_sessions(asset_type, start, end)) for asset_type in asset_types):
        raise DataError(f"the period {start.date()}..{end.date()} is empty: it holds no trading day of "
                        f"{' or '.join(sorted(asset_types))}")


@lru_cache(maxsize=1)
def _nyse() -> xcals.ExchangeCalendar:
    return xcals.get_calendar("XNYS", start="1990-01-01")


@lru_cache(maxsize=64)
def _sessions(asset_type: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    first, last = start.tz_convert(None).normalize(), end.tz_convert(None).normalize()
    if asset_type == "crypto":
        days = pd.date_range(first, last, freq="D")
    else:
        calendar = _nyse()
        first = max(first, calendar.first_session)
        last = min(last, calendar.last_session)
        days = calendar.sessions_in_range(first, last) if first <= last else pd.DatetimeIndex([])
    return pd.DatetimeIndex(days).tz_localize("UTC")


def span(index: pd.Index, start: pd.Timestamp, end: pd.Timestamp) -> slice:
    """The positions ``.loc[start:end]`` selects; on a sorted tz-aware index by binary search on
    its nanoseconds, without pandas' label handling (a millisecond a call, and a backtest makes
    several per symbol)."""
    if not (isinstance(index, pd.DatetimeIndex) and index.tz is not None and start.tzinfo is not None
            and end.tzinfo is not None and index.is_monotonic_increasing):
        return index.slice_indexer(start, end)
    stamps = nanoseconds(index)
    return slice(int(np.searchsorted(stamps, start.value, "left")), int(np.searchsorted(stamps, end.value, "right")))


def datetimes(index: pd.DatetimeIndex) -> list[datetime]:
    """The stamps as Python datetimes: hashing, comparing and subtracting them costs a fraction
    of what ``pd.Timestamp``'s do, and a replay does it for every order, fill and exit check.
    Timestamps where a stamp has nanoseconds (a datetime has none)."""
    return list(index) if (nanoseconds(index) % 1000).any() else list(index.to_pydatetime())


def nanoseconds(index: pd.DatetimeIndex) -> np.ndarray:
    """UTC nanoseconds since the epoch of each stamp."""
    return (index if index.unit == "ns" else index.as_unit("ns")).asi8


def missing_sessions(bars: pd.DataFrame, asset_type: str, start: pd.Timestamp, end: pd.Timestamp) -> list[str]:
    """Sessions of the period that have no bar, those before a symbol's first bar (listed
    later) included: it could not trade on them either. Days are UTC days, as bars are stamped."""
    stamps = nanoseconds(bars.index)[span(bars.index, start, end)]
    if not len(stamps):
        return []
    expected = _sessions(asset_type, start, end)
    have = np.sort(stamps // _DAY_NS * _DAY_NS)
    days = nanoseconds(expected)
    at = np.minimum(np.searchsorted(have, days), len(have) - 1)
    return [ts.date().isoformat() for ts in expected[have[at] != days]]


def first_day(bars: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> str | None:
    """The UTC day of the symbol's first bar in the period (ISO), None when it has none."""
    stamps = bars.index[span(bars.index, start, end)]
    return stamps[0].date().isoformat() if len(stamps) else None


def require_bars(bars: dict[str, pd.DataFrame], symbols: list[str], start: pd.Timestamp, end: pd.Timestamp,
                 stored: Mapping[str, tuple[pd.Timestamp, pd.Timestamp]]) -> None:
    """Every symbol must have at least one bar in [start, end]; the error names each one
    without, and when its stored bars (``stored``: first and last, as ``lab.bars.stored_spans``)
    lie, or that none was ever ingested."""
    if not symbols:
        raise DataError("a backtest needs at least one symbol")
    empty = [s for s in symbols if s not in bars or not len(bars[s].index[span(bars[s].index, start, end)])]
    if never := [s for s in empty if s not in stored]:
        # (``lab ingest`` refuses a symbol outside the universe config without its asset class)
        raise DataError(f"no stored bars at all for {', '.join(never)}; ingest them first (`lab ingest --symbols "
                        f"{','.join(never)}`, with --asset-class stocks|crypto for a symbol not in the universe "
                        f"config, LAB_CONFIG)")
    if empty:
        raise DataError(f"no bars between {start.date()} and {end.date()} for: " + ", ".join(
            f"{s} (its bars are stored from {stored[s][0].date()} to {stored[s][1].date()})" for s in empty))


def require_fundamentals(fundamentals: pd.DataFrame, strategy: str, symbols: list[str], before: pd.Timestamp) -> None:
    """A strategy on fundamentals needs some known before ``before`` (its first training
    window, or its first trade). They are point in time, known from the time they were
    fetched, so a run over the years before the first ingest would trade on nothing."""
    known = fundamentals[fundamentals["symbol"].isin(symbols) & (fundamentals["known_at"] < before)]
    if known.empty:
        first = fundamentals.loc[fundamentals["symbol"].isin(symbols), "known_at"].min()
        since = f"the first is known from {first.date()}" if pd.notna(first) else "none is stored"
        raise DataError(f"{strategy} reads point-in-time fundamentals (P/E, P/B), but none of "
                        f"{', '.join(symbols)} has any known before {before.date()} ({since}): they are known "
                        f"from the time they were fetched (`lab ingest --source live`), so a backtest of "
                        f"{strategy} can only begin after that")
