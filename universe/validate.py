"""Validation before storage: every raw bar is either clean or quarantined with a reason.

Checks, in order (a bar gets the first reason that applies): missing or non-finite values,
non-positive prices, negative volume, OHLC inconsistency (high below open/close, low above),
duplicate timestamps (identical copies: one kept, the rest quarantined; conflicting copies:
all quarantined), bars on days that are not NYSE sessions (stocks), then jumps in log
returns. A jump beyond ``max(floor, 8 robust sigmas)`` is a *spike* when the next bar reverts
it (a bad print): the bar is quarantined. Of the rest, a stock's bar is a *suspected
unadjusted split* when it looks like one: it opened within ``SPLIT_TOLERANCE`` of a split ratio
from the last close and closed nearer that level than the old one (the day's own move comes
after the open, and reaches 10% on a split day), and traded no more value than usual (a split is no news;
a crash of that size trades several times the usual value: PG on 2000-03-07 opened at 1/1.508
on 23 times its usual value). The whole batch is then quarantined, because storing it would mix
two price levels. Any other big jump is a real move: kept, and counted as an outlier in the
data-quality summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pandas as pd

from lab.bars import BAR_COLUMNS
from universe.calendars import xnys

__all__ = ["Validated", "validate_bars", "jumps", "split_jump", "JUMP_FLOOR"]

PRICES = ["open", "high", "low", "close"]
JUMP_FLOOR = {"stocks": 0.25, "crypto": 0.35}
#: log price falls of k:1 splits, and log price rises of 1:k reverse splits
SPLITS = np.log([4 / 3, 1.5, 2, 3, 4, 5, 7, 8, 10, 15, 20, 25, 30, 50])
REVERSE_SPLITS = np.log([2, 3, 4, 5, 8, 10, 15, 20, 25, 30, 50])
#: how far (log) a split day's opening gap may be from the split ratio: an overnight move
SPLIT_TOLERANCE = 0.04
#: value traded (volume x the lower of the two prices, as a provider may count volume on
#: either basis that day) above this multiple of the median of the bars before is news
VALUE_SURGE = 3.0
VALUE_BASELINE = 20
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
    outliers: np.ndarray  # positions of the other large moves


def jumps(close: np.ndarray, asset_class: str, prev_close: float | None = None) -> Jumps:
    """Classify large log-return jumps of a close series (``prev_close`` precedes it)."""
    series = np.concatenate([[prev_close], close]) if prev_close else np.asarray(close, dtype=float)
    offset = 1 if prev_close else 0
    empty = np.array([], dtype=int)
    if len(series) < 2:
        return Jumps(empty, empty)
    lr = np.diff(np.log(series))
    mad = np.median(np.abs(lr - np.median(lr))) * 1.4826
    floor = JUMP_FLOOR.get(asset_class, 0.25)
    threshold = max(floor, 8 * mad) if len(lr) >= 20 else floor  # too few returns for a robust sigma
    big = np.abs(lr) > threshold
    spikes, outliers = [], []
    i = 0
    while i < len(lr):
        if big[i]:
            position = i + 1 - offset  # the bar that ends this return, in ``close``
            nxt = lr[i + 1] if i + 1 < len(lr) else 0.0
            if abs(nxt) > threshold and np.sign(nxt) != np.sign(lr[i]) and abs(lr[i] + nxt) < threshold / 2:
                spikes.append(position)
                i += 2
                continue
            outliers.append(position)
        i += 1
    return Jumps(np.array(spikes, dtype=int), np.array(outliers, dtype=int))


def split_jump(bars: pd.DataFrame, prev_close: float | None = None) -> tuple[int, float] | None:
    """(position, split price ratio) of the first of a stock's ``bars`` (open, close, volume,
    after ``prev_close``) that looks like an unadjusted split; see the module doc."""
    close, volume = bars["close"].to_numpy(dtype=float), bars["volume"].to_numpy(dtype=float)
    before = np.concatenate([[prev_close or np.nan], close[:-1]])
    lr, gap = np.log(close / before), np.log(bars["open"].to_numpy(dtype=float) / before)
    value = close * volume
    for i in np.flatnonzero(np.abs(gap) > SPLITS[0] - SPLIT_TOLERANCE):
        ratios = SPLITS if gap[i] < 0 else REVERSE_SPLITS
        nearest = np.sign(gap[i]) * ratios[np.argmin(np.abs(np.abs(gap[i]) - ratios))]
        if abs(gap[i] - nearest) > SPLIT_TOLERANCE or abs(lr[i] - nearest) > abs(nearest) / 2:
            continue  # opened off every split ratio, or closed nearer the old level than the new
        usual = value[max(0, i - VALUE_BASELINE):i]
        if len(usual) and volume[i] * min(close[i], before[i]) > VALUE_SURGE * np.median(usual):
            continue
        return int(i), float(np.exp(nearest))
    return None


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
    k = Fraction(1 / ratio if ratio < 1 else ratio).limit_denominator(4)
    return f"{k.numerator}:{k.denominator} split" if ratio < 1 else f"1:{k.numerator} reverse split"


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
    outliers = list(frame.loc[ok_index[found.outliers], "ts"])
    ok_index = frame.index[reason == ""]
    split = split_jump(frame.loc[ok_index], prev_close) if asset_class == "stocks" else None
    batch_reason = None
    if split is not None:
        position, ratio = split
        day = frame.loc[ok_index[position], "ts"].date()
        batch_reason = (f"suspected unadjusted {_split_text(ratio)} on {day}; "
                        "supply adjusted prices or split coefficients")
        flag(frame.index.isin(ok_index), batch_reason)
        outliers = []

    bad = reason != ""
    quarantined = pd.DataFrame({
        "ts": frame.loc[bad, "ts"],
        "source": frame.loc[bad, "source"],
        "reason": reason[bad],
        "payload": [_payload(row) for _, row in frame.loc[bad].iterrows()],
    }).reset_index(drop=True)
    clean = frame.loc[~bad, ["ts", *BAR_COLUMNS, "source"]].reset_index(drop=True)
    return Validated(clean=clean, quarantined=quarantined, outliers=outliers, batch_reason=batch_reason)
