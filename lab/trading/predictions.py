"""Where the signal engine gets ML confidence: one protocol, two implementations.

``RegistryPredictions`` loads the active model in process (backtests, tests, the embedded
default); ``serving.client`` implements the same protocol over the Ray Serve endpoint (the
live cycle). The engine never knows which one it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from lab.errors import TradingError
from lab.registry import ModelRegistry, VersionInfo

__all__ = ["Prediction", "PredictionSource", "NoActiveModel", "RegistryPredictions"]


@dataclass(frozen=True)
class Prediction:
    """Class-1 probability per input row (same order), and the model version that made it."""

    values: np.ndarray
    model_version: int


class NoActiveModel(TradingError):
    """A strategy has no active model version, so it cannot produce signals."""


@runtime_checkable
class PredictionSource(Protocol):
    def predict(self, strategy: str, rows: pd.DataFrame) -> Prediction:
        """``rows`` holds the strategy's feature columns (extra columns are ignored)."""
        ...


class RegistryPredictions:
    """The registry version of each strategy, loaded once per version: the one pinned in
    ``versions`` (a backtest's, which names the run: an activation during the run must not
    change its model), else the active one at each call (the live cycle takes up an activation)."""

    def __init__(self, registry: ModelRegistry, *, domain: str = "trading",
                 versions: Mapping[str, VersionInfo] | None = None):
        self._registry = registry
        self._domain = domain
        self._versions = dict(versions or {})
        self._loaded: dict[int, Any] = {}

    def predict(self, strategy: str, rows: pd.DataFrame) -> Prediction:
        version = self._versions.get(strategy) or self._registry.get_active_version(strategy, self._domain)
        if version is None:
            raise NoActiveModel(f"strategy {strategy!r} has no active model version; "
                                f"train one with `lab tune --strategy {strategy}`")
        predictor = self._loaded.get(version.id)
        if predictor is None:
            predictor = self._loaded[version.id] = _load(self._registry.model_file(version))
        if rows.empty:
            return Prediction(np.empty(0), version.version)
        missing = [c for c in predictor.feature_names if c not in rows.columns]
        if missing:
            raise TradingError(f"strategy {strategy!r} model v{version.version} needs features "
                               f"missing from the input: {', '.join(missing)}")
        values = np.asarray(predictor.predict(rows[list(predictor.feature_names)]), dtype=float)
        return Prediction(values, version.version)


def _load(path: Path) -> Any:
    from lab.models import load_predictor

    return load_predictor(path)
