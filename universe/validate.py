"""Validation before storage: every raw bar is either clean or quarantined with a reason.

Checks, in order (a bar gets the first reason that applies): missing or non-finite values,
non-positive prices, negative volume, OHLC inconsistency (high below open/close, low above),
duplicate timestamps (identical copies: one kept, the rest quarantined; conflicting copies:
all quarantined), bars on days that are not NYSE sessions (stocks), then jumps in log
returns. A jump beyond ``max(floor, 8 robust sigmas)`` is

* a *spike* when the next bar reverts it (a bad print): the bar is quarantined;
* a *suspected unadjusted split* when the price ratio is within 3% of a split ratio (stocks
  only): the whole batch is quarantined, because storing it would mix two price levels;
* otherwise a real move: kept, and counted as an outlier in the data-quality summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lab.bars import BAR_COLUMNS
from universe.calendars import xnys

__all__ = ["Validated", "validate_bars", "jumps", "JUMP_FLOOR"]

PRICES = ["open", "high", "low", "close"]
JUMP_FLOOR = {"stocks": 0.25, "crypto": 0.35}
SPLIT_RATIOS = np.log([1.5, 2, 3, 4, 5, 8, 10, 20, 25, 30, 50])
SPLIT_TOLERANCE = 0.03
REL_TOL = 1e-6


@dataclass
class Validated:
    clean: pd.DataFrame
    quarantined: pd.DataFrame  # ts, source, reason, payload
    outliers: list[pd.Timestamp] = field(default_factory=list)
    #: the reason that quarantined the whole batch (a suspected unadjusted split), if any
    batch_reason: str | None = None

    def reasons(self) -> list[str]:
        """Why bars were quarantined, one line per reason with how many and when (a split
        suspicion quarantines a whole batch under one reason)."""
        lines = []
        for reason, stamps in self.quarantined.groupby("reason", sort=False)["ts"]:
            first, last = f"{stamps.min():%Y-%m-%d}", f"{stamps.max():%Y-%m-%d}"
            when = first if first == last else f"{first}..{last}"
            lines.append(f"{reason}: {len(stamps)} bar{'s' * (len(stamps) > 1)} ({when})")
        return lines

    def rejected(self) -> pd.DataFrame:
        """Quarantined bars (ts, reason) that are wrong in themselves, with no clean copy: a
        stored version of one is wrong too. A batch quarantine says nothing of its bars."""
        own = self.quarantined[self.quarantined["reason"] != self.batch_reason]
        return own.loc[~own["ts"].isin(self.clean["ts"]), ["ts", "reason"]].reset_index(drop=True)


@dataclass(frozen=True)
class Jumps:
    spikes: np.ndarray  # positions of bad prints
    split: tuple[int, float] | None  # (position, price ratio) of the first split-like jump
    outliers: np.ndarray  # positions of real large moves


def jumps(close: np.ndarray, asset_class: str, prev_close: float | None = None) -> Jumps:
    """Classify large log-return jumps of a close series (``prev_close`` precedes it)."""
    series = np.concatenate([[prev_close], close]) if prev_close else np.asarray(close, dtype=float)
    offset = 1 if prev_close else 0
    empty = np.array([], dtype=int)
    if len(series) < 2:
        return Jumps(empty, None, empty)
    lr = np.diff(np.log(series))
    mad = np.median(np.abs(lr - np.median(lr))) * 1.4826
    floor = JUMP_FLOOR.get(asset_class, 0.25)
    threshold = max(floor, 8 * mad) if len(lr) >= 20 else floor  # too few returns for a robust sigma
    big = np.abs(lr) > threshold
    spikes, outliers, split = [], [], None
    i = 0
    while i < len(lr):
        if big[i]:
            position = i + 1 - offset  # the bar that ends this return, in ``close``
            nxt = lr[i + 1] if i + 1 < len(lr) else 0.0
            if abs(nxt) > threshold and np.sign(nxt) != np.sign(lr[i]) and abs(lr[i] + nxt) < threshold / 2:
                spikes.append(position)
                i += 2
                continue
            near = np.abs(np.abs(lr[i]) - SPLIT_RATIOS) < SPLIT_TOLERANCE
            if asset_class == "stocks" and near.any() and split is None:
                split = (position, float(np.exp(lr[i])))
            else:
                outliers.append(position)
        i += 1
    return Jumps(np.array(spikes, dtype=int), split, np.array(outliers, dtype=int))


def _payload(row: pd.Series) -> dict:
    out = {}
    for key, value in row.items():
        if isinstance(value, pd.Timestamp):
            out[key] = value.isoformat()
        elif isinstance(value, float | np.floating):
            out[key] = float(value) if np.isfinite(value) else None
        else:
            out[key] = value if value is None or isinstance(value, str | int | bool) else str(value)
    return out


def _split_text(ratio: float) -> str:
    k = np.exp(SPLIT_RATIOS[np.argmin(np.abs(np.abs(np.log(ratio)) - SPLIT_RATIOS))])
    k_text = f"{k:g}"
    return f"{k_text}:1 split" if ratio < 1 else f"1:{k_text} reverse split"


def validate_bars(raw: pd.DataFrame, asset_class: str, *, prev_close: float | None = None) -> Validated:
    """Split raw provider bars into clean bars and quarantined ones (with reasons)."""
    frame = raw.sort_values("ts", kind="stable").reset_index(drop=True)
    reason = pd.Series("", index=frame.index, dtype=object)

    def flag(mask, text: str) -> None:
        reason[np.asarray(mask) & (reason == "").to_numpy()] = text

    values = frame[BAR_COLUMNS].to_numpy(dtype=float)
    flag(~np.isfinite(values).all(axis=1), "missing or non-finite value")
    flag((frame[PRICES] <= 0).any(axis=1), "non-positive price")
    flag(frame["volume"] < 0, "negative volume")
    body_high = frame[["open", "close"]].max(axis=1)
    body_low = frame[["open", "close"]].min(axis=1)
    flag(frame["high"] < body_high * (1 - REL_TOL), "OHLC inconsistent: high below open/close")
    flag(frame["low"] > body_low * (1 + REL_TOL), "OHLC inconsistent: low above open/close")

    ok = reason == ""
    dupes = frame[ok & frame.duplicated("ts", keep=False)]
    for _, group in dupes.groupby("ts"):
        if len(group[BAR_COLUMNS].drop_duplicates()) == 1:
            flag(frame.index.isin(group.index[1:]), "duplicate bar")
        else:
            flag(frame.index.isin(group.index), f"conflicting duplicate bars ({len(group)} versions)")

    if asset_class == "stocks" and len(frame):
        sessions = xnys().sessions
        naive = frame["ts"].dt.tz_convert(None)
        flag(~naive.isin(sessions), "not an NYSE session")

    ok_index = frame.index[reason == ""]
    found = jumps(frame.loc[ok_index, "close"].to_numpy(dtype=float), asset_class, prev_close)
    flag(frame.index.isin(ok_index[found.spikes]), "outlier spike: jump reverted by the next bar")
    batch_reason = None
    if found.split is not None:
        position, ratio = found.split
        day = frame.loc[ok_index[position], "ts"].date()
        batch_reason = (f"suspected unadjusted {_split_text(ratio)} on {day}; "
                        "supply adjusted prices or split coefficients")
        flag(frame.index.isin(ok_index), batch_reason)
    outliers = [] if found.split is not None else list(frame.loc[ok_index[found.outliers], "ts"])

    bad = reason != ""
    quarantined = pd.DataFrame({
        "ts": frame.loc[bad, "ts"],
        "source": frame.loc[bad, "source"],
        "reason": reason[bad],
        "payload": [_payload(row) for _, row in frame.loc[bad].iterrows()],
    }).reset_index(drop=True)
    clean = frame.loc[~bad, ["ts", *BAR_COLUMNS, "source"]].reset_index(drop=True)
    return Validated(clean=clean, quarantined=quarantined, outliers=outliers, batch_reason=batch_reason)
