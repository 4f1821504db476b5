"""Pairs: a correlated pair whose spread diverged beyond the z threshold; ML reversion odds.

A pair "AAA/BBB" is traded as two legs: buying the spread is long AAA and short
``hedge_ratio`` times its value in BBB (selling it, the reverse), so it needs
``risk.allow_shorts``. Its stop-loss and take-profit are on the pair's P&L as a fraction of
its gross notional; it exits when the spread is back near its mean.

Its model learns the direction of that same hedged spread, log AAA - beta log BBB with the
row's own hedge ratio, over the label horizon (``lab.features.make_label`` on a pair's bars):
the spread the entry signal ``spread_z`` measures and the position holds.
"""

import numpy as np
import pandas as pd

from lab.strategy import Label, Param, Strategy


class Pairs(Strategy):
    name = "pairs"
    description = "Correlated pairs (corr > 0.7), spread beyond 2 std, ML mean-reversion probability."
    asset_classes = ("stocks",)
    feature_set = "pairs@1"
    label = Label(kind="direction", horizon=10)  # of the hedged spread log AAA - beta log BBB
    holding_days = (2, 20)
    stop_loss = 0.05  # of the pair's gross notional
    take_profit = 0.10
    min_confidence = 0.7
    needs_shorts = True
    params = {
        "min_correlation": Param(default=0.7, low=0.5, high=0.95),
        "entry_z": Param(default=2.0, low=1.0, high=3.5),
        "exit_z": Param(default=0.5, low=0.0, high=1.5),
    }

    def entry_rule(self, latest: pd.DataFrame) -> pd.Series:
        correlated = latest["pair_corr"] >= self.values["min_correlation"]
        diverged = latest["spread_z"].abs() >= self.values["entry_z"]
        return correlated & diverged

    def sides(self, latest: pd.DataFrame) -> pd.Series:
        """Sell a rich spread (z > 0), buy a cheap one: both bet on reversion to the mean."""
        return pd.Series(np.where(latest["spread_z"] > 0, "sell", "buy"), index=latest.index, dtype=object)

    def exit_rule(self, latest: pd.DataFrame) -> pd.Series:
        """Back near its mean: the spread the legs hold (the entry's hedge ratio), not today's
        re-fitted ``spread_z``, whose hedge ratio, mean and sd have moved since."""
        return latest["held_spread_z"].abs() <= self.values["exit_z"]
