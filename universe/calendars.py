"""Which days should have a bar: NYSE sessions for stocks (exchange_calendars), every day for crypto."""

from __future__ import annotations

from functools import cache

import pandas as pd

__all__ = ["xnys", "expected_days"]


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
