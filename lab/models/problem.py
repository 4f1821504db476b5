"""A tuning problem: validated arrays, folds, a final holdout and costs, and the evaluation
of one set of hyper-parameters on them.

Everything that can be wrong with the inputs is checked here, before any trial starts. The
same ``walk_forward`` over the tuning folds runs inside every Ray Tune trial and in the
sequential reference of the benchmark; ``score_holdout`` scores the chosen params once on
the holdout after those folds (see ``walk_forward_holdout``), and promotion scores the
active version's params on the same holdout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lab.errors import ConfigError, DataError
from lab.models.folds import Fold, walk_forward_holdout
from lab.models.predictor import XGBPredictor, predictor_class
from lab.models.scoring import (
    classification_scores,
    holding_periods,
    label_payoff,
    period_returns,
    regression_scores,
    sharpe_ratio,
)
from lab.strategy import Param

__all__ = ["Problem", "FoldScore", "LABEL_END_COLUMN", "RESERVED_COLUMNS", "RETURN_COLUMN", "TUNABLE",
           "check_search_space"]

RETURN_COLUMN = "forward_return"
#: the time of the last bar a row's label reads (its symbol's bar ``horizon`` bars later)
LABEL_END_COLUMN = "label_end"
RESERVED_COLUMNS = ("symbol", "timestamp", "label", LABEL_END_COLUMN, RETURN_COLUMN, "asset_class")

#: XGBoost hyper-parameters the lab tunes, with the range XGBoost accepts for each
_DOMAINS: dict[str, tuple[float, float]] = {
    "max_depth": (1, 20), "learning_rate": (1e-4, 1.0), "n_estimators": (1, 5000),
    "subsample": (1e-3, 1.0), "colsample_bytree": (1e-3, 1.0), "min_child_weight": (0.0, 1e4),
    "gamma": (0.0, 1e3), "reg_alpha": (0.0, 1e3), "reg_lambda": (0.0, 1e3),
}
TUNABLE = frozenset(_DOMAINS)


def check_search_space(space: Mapping[str, Param]) -> None:
    """ConfigError listing every unknown hyper-parameter or range XGBoost would reject."""
    problems = []
    if not space:
        problems.append("search space is empty")
    for name, param in space.items():
        domain = _DOMAINS.get(name)
        if domain is None:
            problems.append(f"search_space.{name}: not a tunable XGBoost hyper-parameter "
                            f"(known: {', '.join(sorted(_DOMAINS))})")
        elif not isinstance(param, Param):
            problems.append(f"search_space.{name}: expected a Param(low, high, default), got {param!r}")
        elif not param.low < param.high:
            problems.append(f"search_space.{name}: low {param.low} must be below high {param.high}")
        elif param.low < domain[0] or param.high > domain[1]:
            problems.append(f"search_space.{name}: range [{param.low}, {param.high}] is outside "
                            f"what XGBoost accepts [{domain[0]}, {domain[1]}]")
    if problems:
        raise ConfigError(problems)


def _binary(label: pd.Series) -> np.ndarray:
    """0/1 labels stay; others (triple barrier -1/0/1, returns) become "label > 0"."""
    values = label.to_numpy(dtype=float)
    return values if np.isin(values, (0.0, 1.0)).all() else (values > 0).astype(float)


@dataclass(frozen=True)
class FoldScore:
    fold: int
    metrics: dict[str, float]
    returns: np.ndarray = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class Problem:
    strategy: str
    task: str
    asset_class: str | None
    label: dict[str, Any]
    feature_names: list[str]
    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    forward_return: np.ndarray = field(repr=False)
    #: the tuning folds, which read no holdout bar
    folds: list[Fold] = field(repr=False)
    #: per fold, the holding period each test row opens (see ``holding_periods``)
    periods: list[np.ndarray] = field(repr=False)
    #: the last test window, after the tuning folds: what the chosen params are judged by
    holdout: Fold = field(repr=False)
    holdout_periods: np.ndarray = field(repr=False)
    cost: float
    seed: int
    data_fingerprint: str
    feature_fingerprint: str

    @classmethod
    def build(cls, strategy: str, data: pd.DataFrame, *, task: str, label: dict[str, Any], n_folds: int,
              embargo: int, cost: float, seed: int, asset_class: str | None = None,
              features: list[str] | None = None, feature_fingerprint: str | None = None) -> Problem:
        """Validate ``data`` (symbol, timestamp, <features>, label, label_end, forward_return) and cut
        ``n_folds`` tuning folds and the holdout after them."""
        where = f"training data for {strategy!r}"
        if data is None or len(data) == 0:
            raise DataError(f"{where} is empty")
        needed = ["symbol", "timestamp", "label", LABEL_END_COLUMN, RETURN_COLUMN]
        absent = [c for c in needed if c not in data.columns]
        if absent:
            raise DataError(f"{where} lacks column(s) {', '.join(absent)}")
        if features is None:
            features = [c for c in data.columns if c not in RESERVED_COLUMNS]
        missing = [c for c in features if c not in data.columns]
        if missing:
            raise DataError(f"{where} lacks feature column(s): {', '.join(missing)}")
        if not features:
            raise DataError(f"{where} has no feature columns")
        if data[["label", LABEL_END_COLUMN, RETURN_COLUMN]].isna().any().any():
            raise DataError(f"{where} has missing labels, label ends or forward returns; drop those rows first")
        data = data.sort_values(["timestamp", "symbol"], kind="stable")
        y = _binary(data["label"]) if task == "classification" else data["label"].to_numpy(dtype=float)
        if task == "classification" and np.unique(y).size < 2:
            raise DataError(f"{where} has a single-class label ({int(y[0])} everywhere); nothing to learn")
        try:
            X = data[features].to_numpy(dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: features must be numeric ({exc})") from None
        stamps = pd.DatetimeIndex(pd.to_datetime(data["timestamp"], utc=True))
        ends = pd.DatetimeIndex(pd.to_datetime(data[LABEL_END_COLUMN], utc=True))
        symbols = data["symbol"].to_numpy()
        folds, holdout = walk_forward_holdout(symbols, stamps, ends, n_folds, embargo)
        for fold in (*folds, holdout):
            if task == "classification" and np.unique(y[fold.train]).size < 2:
                raise DataError(f"{where}: fold {fold.index} trains on a single class; use fewer folds")
        digest = hashlib.blake2b(digest_size=16)
        digest.update(pd.util.hash_pandas_object(data[[*features, "label", RETURN_COLUMN]], index=False).to_numpy())
        digest.update(stamps.asi8.tobytes())
        digest.update(ends.asi8.tobytes())

        def periods(fold: Fold) -> np.ndarray:
            return holding_periods(symbols[fold.test], stamps.asi8[fold.test], ends.asi8[fold.test])

        return cls(strategy=strategy, task=task, asset_class=asset_class, label=label, feature_names=list(features),
                   X=X, y=y, forward_return=data[RETURN_COLUMN].to_numpy(dtype=float), folds=folds,
                   periods=[periods(f) for f in folds], holdout=holdout, holdout_periods=periods(holdout),
                   cost=cost, seed=seed, data_fingerprint=digest.hexdigest(),
                   feature_fingerprint=feature_fingerprint
                   or hashlib.blake2b("|".join(features).encode(), digest_size=16).hexdigest())

    @property
    def metric(self) -> str:
        """What tuning maximises over the folds and the holdout is judged by: AUC, or minus RMSE for regression."""
        return "auc" if self.task == "classification" else "neg_rmse"

    def predictor(self, params: Mapping[str, Any]) -> XGBPredictor:
        return predictor_class(self.asset_class)(self.task, dict(params), feature_names=self.feature_names,
                                                 strategy=self.strategy, label=self.label, seed=self.seed)

    def walk_forward(self, params: Mapping[str, Any]) -> Iterator[FoldScore]:
        """Fit on each tuning fold's training rows, score its test rows; one FoldScore per fold."""
        for fold, period in zip(self.folds, self.periods, strict=True):
            yield self._score(fold, period, params)

    def score_holdout(self, params: Mapping[str, Any]) -> FoldScore:
        """Fit on the rows before the holdout (purged, embargoed), score the holdout: the
        figure a tuned model is judged by, as no trial of its tuning ever saw these rows."""
        return self._score(self.holdout, self.holdout_periods, params)

    def _score(self, fold: Fold, period: np.ndarray, params: Mapping[str, Any]) -> FoldScore:
        model = self.predictor(params).train(self.X[fold.train], self.y[fold.train])
        pred = model.predict(self.X[fold.test])
        y = self.y[fold.test]
        if self.task == "classification":
            metrics = classification_scores(y, pred)
            take = pred > 0.5
        else:
            metrics = regression_scores(y, pred)
            metrics["neg_rmse"] = -metrics["rmse"]
            take = pred > self.cost
        returns = period_returns(period, take, self.forward_return[fold.test], self.cost)
        metrics |= {"return": float(np.prod(1 + returns) - 1), "sharpe": sharpe_ratio(returns),
                    "trades": int(take.sum())}
        return FoldScore(fold.index, metrics, returns)

    def payoff(self) -> dict[str, float] | None:
        """The deployable model's ``label_payoff``: measured on every row, the rows ``fit``
        trains it on (None for a regression, whose prediction is itself a return)."""
        return label_payoff(self.y, self.forward_return) if self.task == "classification" else None

    def fit(self, params: Mapping[str, Any], *, threads: int | None = None) -> XGBPredictor:
        """The deployable model: the given params fit on every row (``threads``: see ``train``)."""
        return self.predictor(params).train(self.X, self.y, threads=threads)
