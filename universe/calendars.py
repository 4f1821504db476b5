"""Which days should have a bar: NYSE sessions for stocks (exchange_calendars), every day for crypto."""

from __future__ import annotations

from datetime import datetime
from functools import cache

import pandas as pd

__all__ = ["xnys", "expected_days", "last_closed_session"]


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
