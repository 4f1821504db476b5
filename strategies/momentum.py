"""Momentum: buy recent top performers whose move the model expects to continue."""

import pandas as pd

from lab.strategy import Label, Param, Strategy


class Momentum(Strategy):
    name = "momentum"
    description = "Top performers over the lookback with volume confirmation; ML continuation."
    asset_classes = ("stocks", "crypto")
    feature_set = "momentum@1"
    label = Label(kind="direction", horizon=10)
    holding_days = (5, 20)
    stop_loss = 0.07
    take_profit = 0.15
    min_confidence = 0.6
    params = {
        "top_quantile": Param(default=0.8, low=0.5, high=0.95),
        "min_volume_ratio": Param(default=1.0, low=0.5, high=3.0),
        # the feature set carries the 5-, 20- and 60-day returns
        "lookback_days": Param(default=20, low=5, high=60, choices=(5, 20, 60)),
    }

    def entry_rule(self, latest: pd.DataFrame) -> pd.Series:
        performance = latest[f"ret_{self.values['lookback_days']}"]
        strong = performance >= performance.quantile(self.values["top_quantile"])
        volume_confirms = latest["volume_ratio_20"] >= self.values["min_volume_ratio"]
        return strong & volume_confirms
