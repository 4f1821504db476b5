"""When markets trade: NYSE sessions, holidays and half days from ``exchange_calendars``;
crypto trades around the clock.

A timestamp at exactly midnight UTC is a daily bar's label and stands for that whole
session (daily backtests decide and fill per session); any other time is checked to the
minute, so a half day is closed after its early close.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd

from lab.trading.model import MarketClock
from universe.calendars import xnys as _nyse

__all__ = ["SKEW", "in_future", "market_clock", "is_market_open", "open_at"]

#: how far ahead of this machine's clock a decision time may be (clocks differ a little)
SKEW = timedelta(minutes=15)


def in_future(as_of: datetime | date, now: datetime) -> bool:
    """Whether a decision time lies past ``now``, where no bar exists yet: a date after today
    (UTC), a time more than ``SKEW`` ahead (a naive one is UTC)."""
    if not isinstance(as_of, datetime):
        return as_of > now.astimezone(UTC).date()
    return (as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)) > now + SKEW


def is_market_open(asset_type: str, ts: datetime) -> bool:
    """``market_clock(asset_type, ts).is_open`` without the next open and close (the paper
    executor asks this of every order)."""
    stamp = _utc(ts)
    return asset_type == "crypto" or _nyse_open(stamp)


def open_at(asset_type: str, stamps: pd.DatetimeIndex) -> np.ndarray:
    """``is_market_open`` at every stamp (tz-aware), daily bar labels looked up at once: a
    backtest's clock asks it of every bar, where a call per bar made a 27-symbol, 10-year
    replay a fifth slower."""
    if asset_type == "crypto":
        return np.ones(len(stamps), dtype=bool)
    stamps = stamps.tz_convert("UTC")
    labels = stamps == stamps.normalize()
    out = np.asarray(stamps.tz_localize(None).isin(_nyse().sessions), dtype=bool)
    out[~labels] = [_nyse_open(stamp) for stamp in stamps[~labels]]
    return out


def _utc(ts: datetime) -> pd.Timestamp:
    if ts.tzinfo is None:
        raise ValueError(f"market clock needs a tz-aware time, got {ts!r}")
    return pd.Timestamp(ts).tz_convert("UTC")


def _nyse_open(stamp: pd.Timestamp) -> bool:
    calendar = _nyse()
    if stamp.time() == time(0):
        return bool(calendar.is_session(stamp.tz_localize(None).normalize()))
    return bool(calendar.is_open_on_minute(stamp))


def market_clock(asset_type: str, ts: datetime) -> MarketClock:
    stamp = _utc(ts)
    if asset_type == "crypto":
        return MarketClock(now=ts, is_open=True)
    calendar = _nyse()
    return MarketClock(now=ts, is_open=_nyse_open(stamp), next_open=calendar.next_open(stamp).to_pydatetime(),
                       next_close=calendar.next_close(stamp).to_pydatetime())
