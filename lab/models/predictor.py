"""Predictors: one XGBoost Booster per strategy, saved as ONE self-describing ``.ubj`` file.

The file is the contract with serving and the registry: ``booster.feature_names`` holds the
ordered inputs and booster attributes hold ``lab_task``, ``lab_strategy``, ``lab_label``
(JSON) and ``lab_asset_class``, so ``load_predictor(path)`` needs nothing else.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import xgboost as xgb

from lab.errors import DataError, ModelFileError

__all__ = ["BasePredictor", "XGBPredictor", "StockPredictor", "CryptoPredictor", "load_predictor", "fit_threads",
           "TASKS"]

TASKS = ("classification", "regression")
#: ``lab_asset_class`` of a model trained across asset classes (XGBoost attributes cannot be empty)
ANY_ASSET_CLASS = "any"
#: hyper-parameters handled by the predictor itself rather than passed to xgb.train
_ROUNDS = "n_estimators"


def fit_threads() -> int:
    """The threads a fit outside Tune's trials may use (``train(threads=...)``): the process's
    ``OMP_NUM_THREADS`` where set (Ray sets it to a task's CPUs), else every CPU it may run on."""
    try:
        return max(int(os.environ.get("OMP_NUM_THREADS", "")), 1)
    except ValueError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class BasePredictor(ABC):
    """Train on a feature frame, predict P(class 1) or a value, save to and load from one file."""

    task: str
    feature_names: list[str]
    metadata: dict[str, Any]

    @abstractmethod
    def train(self, X: pd.DataFrame | np.ndarray, y: pd.Series | np.ndarray) -> BasePredictor: ...

    @abstractmethod
    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def save(self, path: Path | str) -> Path: ...

    @classmethod
    def load(cls, path: Path | str) -> BasePredictor:
        return load_predictor(path)


class XGBPredictor(BasePredictor):
    """XGBoost for classification (binary:logistic) or regression (squared error)."""

    asset_class: ClassVar[str | None] = None
    #: defaults under any tuned values; nthread=1 keeps fits reproducible and matches one Tune CPU
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "max_depth": 3, "learning_rate": 0.05, "n_estimators": 200, "subsample": 0.8,
        "colsample_bytree": 0.8, "min_child_weight": 5.0, "tree_method": "hist", "nthread": 1,
    }

    def __init__(self, task: str = "classification", params: dict[str, Any] | None = None, *,
                 feature_names: list[str] | None = None, strategy: str = "unnamed", label: dict[str, Any] | None = None,
                 seed: int = 0, booster: xgb.Booster | None = None):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.params = {**self.DEFAULTS, **(params or {})}
        self.seed = seed
        self.feature_names = list(feature_names or [])
        self.metadata = {"strategy": strategy, "label": label or {}, "asset_class": self.asset_class}
        self.booster = booster

    # --- fitting -------------------------------------------------------------------------

    def train(self, X: pd.DataFrame | np.ndarray, y: pd.Series | np.ndarray, *,
              threads: int | None = None) -> XGBPredictor:
        """``threads`` overrides ``nthread`` for this fit only: hist trees, and so the saved
        file, do not depend on the thread count, so a refit may use every idle core."""
        if isinstance(X, pd.DataFrame):
            self.feature_names = [str(c) for c in X.columns]
        elif not self.feature_names:
            raise DataError("training from an array needs feature_names")
        matrix = self._matrix(X)
        target = np.asarray(y, dtype=np.float32)
        if matrix.shape[0] == 0:
            raise DataError("cannot train on an empty training set")
        if self.task == "classification" and np.unique(target).size < 2:
            raise DataError("the training label has a single class; a classifier needs both 0 and 1")
        params = {k: v for k, v in self.params.items() if k != _ROUNDS}
        params |= {"seed": self.seed, "objective": self._objective, "verbosity": 0}
        if threads is not None:
            params["nthread"] = threads
        dtrain = xgb.DMatrix(matrix, label=target, feature_names=self.feature_names, nthread=params["nthread"])
        self.booster = xgb.train(params, dtrain, num_boost_round=int(self.params[_ROUNDS]))
        self.booster.feature_names = self.feature_names
        self.booster.set_attr(lab_task=self.task, lab_strategy=self.metadata["strategy"],
                              lab_label=json.dumps(self.metadata["label"], sort_keys=True),
                              lab_asset_class=self.metadata["asset_class"] or ANY_ASSET_CLASS,
                              lab_params=json.dumps(self.params, sort_keys=True))
        return self

    @property
    def _objective(self) -> str:
        return "binary:logistic" if self.task == "classification" else "reg:squarederror"

    # --- predicting ----------------------------------------------------------------------

    def _matrix(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            missing = [c for c in self.feature_names if c not in X.columns]
            if missing:
                raise DataError(f"frame lacks the model's features: {', '.join(missing)}")
            X = X[self.feature_names].to_numpy()
        matrix = np.asarray(X, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.feature_names):
            raise DataError(f"expected a 2-D array with {len(self.feature_names)} columns "
                            f"({', '.join(self.feature_names)}), got shape {matrix.shape}")
        return matrix

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """P(class 1) for classification, the value for regression; one per row."""
        if self.booster is None:
            raise DataError("this predictor has not been trained or loaded")
        return np.asarray(self.booster.inplace_predict(self._matrix(X)), dtype=np.float64)

    # --- files ---------------------------------------------------------------------------

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        if path.suffix != ".ubj":
            raise ModelFileError(f"model files are UBJSON: {path} must end in .ubj")
        if self.booster is None:
            raise ModelFileError("cannot save a predictor that has not been trained")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path))
        return path


class StockPredictor(XGBPredictor):
    """Daily equities: shallow trees, moderate learning rate."""

    asset_class = "stocks"


class CryptoPredictor(XGBPredictor):
    """Crypto trades every day with fat tails: more regularisation and row subsampling."""

    asset_class = "crypto"
    DEFAULTS = {**XGBPredictor.DEFAULTS, "min_child_weight": 10.0, "subsample": 0.7, "reg_lambda": 5.0}


_BY_ASSET_CLASS: dict[str, type[XGBPredictor]] = {"stocks": StockPredictor, "crypto": CryptoPredictor}


def predictor_class(asset_class: str | None) -> type[XGBPredictor]:
    """The predictor specialised for ``asset_class`` (the generic one when None/unknown)."""
    return _BY_ASSET_CLASS.get(asset_class or "", XGBPredictor)


def load_predictor(path: Path | str) -> XGBPredictor:
    """Rebuild a predictor from a ``.ubj`` file written by ``save`` (or the registry)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    booster = xgb.Booster()
    try:
        booster.load_model(str(path))
    except xgb.core.XGBoostError as exc:
        raise ModelFileError(f"{path} is not an XGBoost model file: {exc}") from None
    task = booster.attr("lab_task")
    if task not in TASKS or not booster.feature_names:
        raise ModelFileError(f"{path} lacks the lab's metadata (lab_task, feature_names)")
    cls = predictor_class(booster.attr("lab_asset_class"))
    return cls(task, json.loads(booster.attr("lab_params") or "{}"), feature_names=list(booster.feature_names),
               strategy=booster.attr("lab_strategy") or "unnamed", label=json.loads(booster.attr("lab_label") or "{}"),
               booster=booster)
