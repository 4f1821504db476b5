"""Swing: technical confluence in an uptrend (oversold RSI, MACD cross, MA support) plus ML direction."""

import pandas as pd

from lab.strategy import Label, Param, Strategy


class Swing(Strategy):
    name = "swing"
    description = "RSI oversold in an uptrend, MACD bullish cross or price at MA support; ML direction."
    asset_classes = ("stocks",)
    feature_set = "technical@1"
    label = Label(kind="direction", horizon=5)
    holding_days = (2, 14)
    stop_loss = 0.06
    take_profit = 0.12
    min_confidence = 0.65
    params = {
        "rsi_oversold": Param(default=40, low=20, high=50),
        "support_band": Param(default=0.02, low=0.0, high=0.05),
        "min_signals": Param(default=1, low=1, high=3),
    }

    def entry_rule(self, latest: pd.DataFrame) -> pd.Series:
        uptrend = latest["close_to_sma_200"] > 0
        oversold = latest["rsi_14"] < self.values["rsi_oversold"]
        macd_cross = latest["macd_cross_up"] > 0
        at_support = latest["close_to_sma_50"].abs() <= self.values["support_band"]
        confluence = oversold.astype(int) + macd_cross.astype(int) + at_support.astype(int)
        return uptrend & (confluence >= self.values["min_signals"])
