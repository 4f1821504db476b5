"""Synthetic markets with a known answer, for the tests and the tuning benchmark.

Prices are driftless geometric random walks. ``hint`` is either pure noise (``signal=0``: nothing can
be learned, the right answer is AUC 0.5 and no promotion) or noise plus ``signal`` times
the standardised forward return (one feature truly predicts the label).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["random_walk_market"]


def random_walk_market(*, symbols: int = 6, days: int = 800, horizon: int = 5, signal: float = 0.0,
                       noise_features: int = 3, seed: int = 0) -> pd.DataFrame:
    """symbol, timestamp, ret_1, ret_5, hint, noise_*, label (forward up = 1), label_end, forward_return."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2015-01-02", periods=days + horizon, tz="UTC")
    frames = []
    for s in range(symbols):
        close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0.0, 0.015, dates.size))), index=dates)
        forward = close.shift(-horizon) / close - 1
        frame = pd.DataFrame({
            "symbol": f"SYM{s:02d}", "timestamp": dates,
            "ret_1": close.pct_change().to_numpy(), "ret_5": close.pct_change(5).to_numpy(),
            "hint": signal * (forward / forward.std()).to_numpy() + rng.normal(size=dates.size),
            **{f"noise_{k}": rng.normal(size=dates.size) for k in range(noise_features)},
            "label": (forward > 0).astype(float).to_numpy(), "label_end": dates.shift(horizon),
            "forward_return": forward.to_numpy(),
        })
        frames.append(frame.iloc[:days])  # rows whose label reaches past the data are dropped
    return pd.concat(frames, ignore_index=True)
