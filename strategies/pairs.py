"""Pairs: a correlated pair whose spread diverged beyond the z threshold; ML reversion odds."""

import pandas as pd

from lab.strategy import Label, Param, Strategy


class Pairs(Strategy):
    name = "pairs"
    description = "Correlated pairs (corr > 0.7), spread beyond 2 std, ML mean-reversion probability."
    asset_classes = ("stocks",)
    feature_set = "pairs@1"
    label = Label(kind="direction", horizon=10)  # of the spread, towards its mean
    holding_days = (2, 20)
    stop_loss = 0.05  # on the spread's value, as a fraction of the gross pair notional
    take_profit = 0.10
    min_confidence = 0.7
    params = {
        "min_correlation": Param(default=0.7, low=0.5, high=0.95),
        "entry_z": Param(default=2.0, low=1.0, high=3.5),
    }

    def entry_rule(self, latest: pd.DataFrame) -> pd.Series:
        correlated = latest["pair_corr"] >= self.values["min_correlation"]
        diverged = latest["spread_z"].abs() >= self.values["entry_z"]
        return correlated & diverged
