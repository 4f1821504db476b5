"""Value: cheap on P/E and P/B with an ML quality / forward-return view."""

import pandas as pd

from lab.strategy import Label, Param, Strategy


class Value(Strategy):
    name = "value"
    description = "Low P/E and P/B plus ML quality and forward-return prediction."
    asset_classes = ("stocks",)
    feature_set = "value@1"
    label = Label(kind="direction", horizon=20)
    holding_days = (20, 120)
    stop_loss = 0.15
    take_profit = 0.30
    min_confidence = 0.7
    params = {
        "max_pe": Param(default=20.0, low=5.0, high=40.0),
        "max_pb": Param(default=3.0, low=0.5, high=10.0),
    }

    def entry_rule(self, latest: pd.DataFrame) -> pd.Series:
        pe, pb = latest["pe_ratio"], latest["pb_ratio"]
        return (pe > 0) & (pe <= self.values["max_pe"]) & (pb > 0) & (pb <= self.values["max_pb"])
