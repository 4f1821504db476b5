"""One price convention for the whole lab: split- and dividend-adjusted OHLC.

Stored bars are back-adjusted, so a split or a dividend never shows up as a return:

* with an adjusted close, each bar's factor is ``adj_close / close``: open, high, low and
  close are multiplied by it and volume divided by it (dollar volume is unchanged);
* with split coefficients and/or dividends instead (Alpha Vantage's adjusted layout), the
  same factor is built from them: a split of ``k`` on day t divides every earlier bar by
  ``k``; a dividend ``d`` on day t scales earlier bars by ``1 - d / close[t-1]`` (CRSP style);
* with neither, prices are taken as given, and validation quarantines a batch whose jumps
  look like an unadjusted split rather than storing two price levels mixed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["adjust_prices", "ADJUSTMENT_COLUMNS"]

ADJUSTMENT_COLUMNS = ("adj_close", "dividend", "split_coefficient")


def adjust_prices(frame: pd.DataFrame) -> pd.DataFrame:
    """Bars sorted by ts with the adjustment columns applied and removed."""
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    factor = _factor(frame)
    out = frame.drop(columns=[c for c in ADJUSTMENT_COLUMNS if c in frame.columns])
    if factor is not None:
        for column in ("open", "high", "low", "close"):
            out[column] = out[column] * factor
        out["volume"] = out["volume"] / factor
    return out


def _factor(frame: pd.DataFrame) -> np.ndarray | None:
    if "adj_close" in frame.columns and frame["adj_close"].notna().any():
        factor = (frame["adj_close"] / frame["close"]).to_numpy(dtype=float)
        return np.where(np.isfinite(factor) & (factor > 0), factor, np.nan)
    has_split = "split_coefficient" in frame.columns
    has_dividend = "dividend" in frame.columns
    if not (has_split or has_dividend):
        return None
    close = frame["close"].to_numpy(dtype=float)
    split = frame["split_coefficient"].fillna(1.0).to_numpy(dtype=float) if has_split else np.ones(len(frame))
    split = np.where(split > 0, split, 1.0)
    dividend = frame["dividend"].fillna(0.0).to_numpy(dtype=float) if has_dividend else np.zeros(len(frame))
    prev_close = np.concatenate([[np.nan], close[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        dividend_factor = np.where((dividend > 0) & (prev_close > 0), 1.0 - dividend / prev_close, 1.0)
    event = dividend_factor / split  # applies to every bar *before* the event day
    # factor[t] = product of event[s] for s > t
    after = np.cumprod(event[::-1])[::-1]
    return np.concatenate([after[1:], [1.0]])
