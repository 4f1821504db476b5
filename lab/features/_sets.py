"""Named, versioned feature sets: a strategy asks for a set, never for columns by hand.

``columns`` are the model inputs and are all scale-free (ratios, returns, z-scores,
percentiles), so one model can be trained across symbols. The computed frame holds more:
the raw indicators (SMA, Bollinger, MACD, ATR, ...) the boards plot. The fingerprint
changes with the set's version or columns and keys the feature cache.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass

from lab.errors import ConfigError

__all__ = ["FeatureSet", "FEATURE_SETS", "get_feature_set"]

#: bump when the indicator code changes results, so every cached frame is recomputed
ENGINE_VERSION = 2


@dataclass(frozen=True, kw_only=True)
class FeatureSet:
    name: str
    version: int
    columns: tuple[str, ...]
    #: "symbol" (one symbol's bars), "fundamental" (plus point-in-time fundamentals),
    #: "pair" (two symbols' closes; the universe runs it per candidate pair "AAA/BBB")
    kind: str = "symbol"

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def fingerprint(self) -> str:
        text = "|".join([self.key, self.kind, f"engine={ENGINE_VERSION}", *self.columns])
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


_TECHNICAL = FeatureSet(name="technical", version=1, columns=(
    "rsi_14", "macd_pct", "macd_signal_pct", "macd_hist_pct", "macd_cross_up",
    "close_to_sma_20", "close_to_sma_50", "close_to_sma_200",
    "bb_width", "bb_pctb", "atr_pct", "volume_ratio_20", "ret_1", "ret_5",
))
_MOMENTUM = FeatureSet(name="momentum", version=1, columns=(
    "ret_1", "ret_5", "ret_20", "ret_60", "vol_chg_1", "vol_chg_5", "vol_chg_20",
    "volatility_20", "rel_strength_20", "volume_ratio_20", "rsi_14",
    "close_to_sma_50", "close_to_sma_200",
))
_BREAKOUT = FeatureSet(name="breakout", version=1, columns=(
    "bb_width", "bb_width_pctile", "bb_pctb", "squeeze", "atr_pct", "volume_ratio_20",
    "volatility_20", "ret_1", "ret_5", "ret_20", "close_to_sma_20",
))
_VALUE = FeatureSet(name="value", version=1, kind="fundamental", columns=(
    "pe_ratio", "pb_ratio", "log_market_cap", "sector_code",
    "ret_20", "ret_60", "volatility_20", "close_to_sma_200", "rel_strength_20",
))
_PAIRS = FeatureSet(name="pairs", version=1, kind="pair", columns=(
    "pair_corr", "hedge_ratio", "spread_z", "ratio_ret_5", "ratio_ret_20",
))

FEATURE_SETS: dict[str, FeatureSet] = {
    fs.key: fs for fs in (_TECHNICAL, _MOMENTUM, _BREAKOUT, _VALUE, _PAIRS)
}


def get_feature_set(name: str) -> FeatureSet:
    """The set called ``name`` ("technical@1"); an unknown name lists the known ones."""
    if name in FEATURE_SETS:
        return FEATURE_SETS[name]
    hint = difflib.get_close_matches(name, list(FEATURE_SETS), n=1)
    raise ConfigError([
        f"unknown feature set {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        + f"; known: {', '.join(sorted(FEATURE_SETS))}"
    ])
