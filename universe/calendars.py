"""Which days should have a bar: NYSE sessions for stocks (exchange_calendars), every day for crypto."""

from __future__ import annotations

from datetime import datetime
from functools import cache

import numpy as np
import pandas as pd

from lab.errors import DataError

__all__ = ["xnys", "expected_days", "skipped_days", "last_bar_at", "last_closed_session"]

_DAY_NS = 86_400 * 10**9


@cache
def xnys():
    import exchange_calendars as xc

    return xc.get_calendar("XNYS", start="1990-01-01")


def expected_days(asset_class: str, first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    """Bar dates (UTC midnight) from ``first`` to ``last`` inclusive."""
    first, last = first.tz_convert(None).normalize(), last.tz_convert(None).normalize()
    if asset_class == "crypto":
        return pd.date_range(first, last, freq="D", tz="UTC")
    sessions = xnys().sessions
    return pd.DatetimeIndex(sessions[(sessions >= first) & (sessions <= last)]).tz_localize("UTC")


@cache
def _session_stamps() -> np.ndarray:
    return xnys().sessions.asi8


def skipped_days(asset_class: str, stamps: np.ndarray) -> np.ndarray:
    """How many days the asset class trades on lie strictly between each two consecutive daily
    bars (``stamps``: their labels, ascending, int64 UTC nanoseconds): NYSE sessions for
    stocks, so the market's own closures (four days after 2001-09-11) skip none; every
    calendar day for crypto, which trades 24/7, so a coin's missing weekend skips two."""
    if asset_class == "crypto":
        return np.diff(stamps // _DAY_NS) - 1
    if asset_class != "stocks":
        raise DataError(f"unknown asset class {asset_class!r}: its trading days are not known (stocks, crypto)")
    sessions = _session_stamps()
    return np.searchsorted(sessions, stamps[1:], side="left") - np.searchsorted(sessions, stamps[:-1], side="right")


def last_closed_session(asset_class: str, ts: datetime) -> pd.Timestamp:
    """The label (midnight UTC) of the last daily bar complete at ``ts``: the NYSE session
    that closed before it; for crypto, the UTC day that ended by it. A later bar is still
    forming (not stored); a decision at ``ts`` on bars older than this one reads stale prices."""
    if ts.tzinfo is None:
        raise ValueError(f"last_closed_session needs a tz-aware time, got {ts!r}")
    stamp = pd.Timestamp(ts).tz_convert("UTC")
    if asset_class == "crypto":
        return stamp.floor("D") - pd.Timedelta(days=1)
    return xnys().minute_to_past_session(stamp).tz_localize("UTC")


def last_bar_at(asset_class: str, as_of: datetime) -> pd.Timestamp:
    """The label of the latest daily bar a decision at ``as_of`` may read. A midnight-UTC
    ``as_of`` is a bar's label (a cycle "at 2024-03-01" decides on that session's bar, after its
    close; for stocks, a weekend or holiday label means the session before it); any other time
    reads only the bars complete by then (``last_closed_session``): at 15:00 UTC the stock
    session of that day is still trading, though a replay later finds its bar stored."""
    stamp = pd.Timestamp(as_of)
    if stamp.tzinfo is None:
        raise ValueError(f"last_bar_at needs a tz-aware time, got {as_of!r}")
    stamp = stamp.tz_convert("UTC")
    if stamp != stamp.normalize():
        return last_closed_session(asset_class, as_of)
    if asset_class == "crypto":
        return stamp
    return xnys().date_to_session(stamp.tz_convert(None), direction="previous").tz_localize("UTC")
