"""Crypto volatility breakout: a Bollinger squeeze resolving upwards with volume; ML breakout odds."""

import pandas as pd

from lab.strategy import Label, Param, Strategy


class VolatilityBreakout(Strategy):
    name = "breakout"
    description = "Bollinger squeeze + ML breakout probability + volume (crypto)."
    asset_classes = ("crypto",)
    feature_set = "breakout@1"
    holding_days = (1, 10)
    stop_loss = 0.06
    take_profit = 0.15
    # the model learns the odds of this trade's own exits (the signal engine prices its
    # expected value at them): the take-profit before the stop-loss within the holding time
    label = Label(kind="triple_barrier", horizon=holding_days[1], threshold=take_profit, stop=stop_loss)
    min_confidence = 0.65
    params = {
        "max_width_pctile": Param(default=0.3, low=0.05, high=0.6),
        "min_volume_ratio": Param(default=1.0, low=0.5, high=3.0),
    }

    def entry_rule(self, latest: pd.DataFrame) -> pd.Series:
        squeezed = latest["bb_width_pctile"] <= self.values["max_width_pctile"]
        volume = latest["volume_ratio_20"] >= self.values["min_volume_ratio"]
        return squeezed & volume
