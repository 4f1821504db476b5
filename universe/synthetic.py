"""A seeded synthetic market for scale tests and benchmarks, where no real data fits.

Returns follow a one-factor model (assets correlated through a common market return) with
two volatility regimes (calm/stressed, Markov switching) and Student-t innovations (fat
tails). Volume is log-normal and rises with the size of the day's move. Every row is
labelled ``source='synthetic'``, ``synthetic=True``: synthetic bars can never pass for real.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from universe.calendars import xnys

__all__ = ["synthetic_market", "trading_days"]


def trading_days(start: str | pd.Timestamp, n_days: int, asset_class: str = "stocks") -> pd.DatetimeIndex:
    """``n_days`` bar dates from ``start`` (UTC midnight): NYSE sessions for stocks, every day for crypto."""
    start = pd.Timestamp(start).tz_localize(None).normalize()
    if asset_class == "crypto":
        return pd.date_range(start, periods=n_days, freq="D", tz="UTC")
    sessions = xnys().sessions
    days = sessions[sessions >= start][:n_days]
    if len(days) < n_days:
        raise ValueError(f"the NYSE calendar has only {len(days)} sessions from {start.date()}")
    return pd.DatetimeIndex(days).tz_localize("UTC")


def synthetic_market(n_symbols: int, n_days: int, seed: int, *, start: str = "2014-01-02",
                     asset_class: str = "stocks", prefix: str = "SYN", annual_vol: float = 0.25,
                     correlation: float = 0.4, tail_df: float = 4.0) -> pd.DataFrame:
    """Long frame (symbol, ts, open, high, low, close, volume, asset_type, source, synthetic).

    Same arguments, same frame. ``correlation`` is each asset's return correlation with the
    market factor squared (i.e. the pairwise correlation in the calm regime).
    """
    if n_symbols < 1 or n_days < 2:
        raise ValueError("synthetic_market needs n_symbols >= 1 and n_days >= 2")
    rng = np.random.default_rng(seed)
    days = trading_days(start, n_days, asset_class)
    periods = 365 if asset_class == "crypto" else 252
    daily_vol = annual_vol / np.sqrt(periods)

    # regimes: calm (1x) / stressed (2.5x vol), persistent
    stressed = np.zeros(n_days, dtype=bool)
    switches = rng.random(n_days)
    for t in range(1, n_days):
        stressed[t] = switches[t] < 0.02 if not stressed[t - 1] else switches[t] > 0.1
    scale = np.where(stressed, 2.5, 1.0)[:, None]

    t_scale = np.sqrt((tail_df - 2) / tail_df)  # unit-variance Student-t
    market = rng.standard_t(tail_df, size=(n_days, 1)) * t_scale
    idio = rng.standard_t(tail_df, size=(n_days, n_symbols)) * t_scale
    beta = np.sqrt(correlation)
    drift = rng.normal(0.0003, 0.0002, size=n_symbols)
    log_ret = drift + daily_vol * scale * (beta * market + np.sqrt(1 - correlation) * idio)
    log_ret[0] = 0.0

    first = rng.uniform(10, 300, size=n_symbols)
    close = first * np.exp(np.cumsum(log_ret, axis=0))
    gap = daily_vol * 0.3 * rng.standard_normal((n_days, n_symbols))
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(gap)
    wick = np.abs(rng.standard_normal((2, n_days, n_symbols))) * daily_vol * 0.5 * scale
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    base_volume = rng.uniform(2e5, 5e6, size=n_symbols)
    volume = np.round(base_volume * np.exp(0.3 * rng.standard_normal((n_days, n_symbols))
                                           + 20 * np.abs(log_ret)))

    width = max(3, len(str(n_symbols - 1)))
    symbols = np.array([f"{prefix}{i:0{width}d}" for i in range(n_symbols)])
    frame = pd.DataFrame({
        "symbol": np.repeat(symbols, n_days),
        "ts": pd.DatetimeIndex(np.tile(days.tz_localize(None).to_numpy(), n_symbols)).tz_localize("UTC"),
        "open": open_.T.ravel(), "high": high.T.ravel(), "low": low.T.ravel(),
        "close": close.T.ravel(), "volume": volume.T.ravel(),
    })
    frame["asset_type"] = asset_class
    frame["source"] = "synthetic"
    frame["synthetic"] = True
    return frame
