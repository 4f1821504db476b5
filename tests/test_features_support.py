"""Seeded bar generators shared by the feature and label tests (no tests in here)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def random_bars(n: int = 400, *, seed: int = 0, start: str = "2015-01-01", freq: str = "D",
                drift: float = 0.0, vol: float = 0.02, price: float = 100.0) -> pd.DataFrame:
    """A random-walk OHLCV frame indexed by tz-aware UTC timestamps."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(drift, vol, n)))
    high = close * (1 + rng.uniform(0, vol, n))
    low = close * (1 - rng.uniform(0, vol, n))
    open_ = low + (high - low) * rng.uniform(0, 1, n)
    index = pd.date_range(start, periods=n, freq=freq, tz="UTC", name="ts")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "volume": rng.uniform(1e5, 1e6, n).round()}, index=index)


def wide_range_bars(n: int = 600, *, seed: int = 1) -> pd.DataFrame:
    """A coin going from 0.0001 to 100 and back (six orders of magnitude) with noise: the
    way down is where running sums keep the error of the large values."""
    rng = np.random.default_rng(seed)
    trend = np.concatenate([np.logspace(-4, 2, n // 2), np.logspace(2, -4, n - n // 2)])
    close = trend * np.exp(rng.normal(0, 0.03, n))
    frame = random_bars(n, seed=seed)
    return frame.assign(open=close, high=close * 1.01, low=close * 0.99, close=close)


def universe(n_symbols: int, n_bars: int = 300, *, seed: int = 0) -> dict[str, pd.DataFrame]:
    return {f"S{i:03d}": random_bars(n_bars, seed=seed * 1000 + i) for i in range(n_symbols)}
