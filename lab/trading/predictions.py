"""Where the signal engine gets ML confidence: one protocol, two implementations.

``RegistryPredictions`` loads the active model in process (backtests, tests, the embedded
default); ``serving.client`` implements the same protocol over the Ray Serve endpoint (the
live cycle). The engine never knows which one it has.

Every prediction carries its model's ``Payoff``, the mean forward return of each of its two
classes on the rows it was trained on (``lab.models.scoring.label_payoff``, stored in the
model version's metrics): the engine prices expected value and Kelly odds at it. A version
stored without one (trained before the lab measured it) is refused (``ModelWithoutPayoff``,
a ``NoActiveModel``: the strategy makes no signals and the cycle notes why), never priced at
the strategy's take-profit and stop-loss, which a direction model's probability is not about.
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

__all__ = ["Payoff", "Prediction", "PredictionSource", "NoActiveModel", "ModelWithoutPayoff",
           "RegistryPredictions"]


@dataclass(frozen=True)
class Payoff:
    """Mean forward price return, over the label horizon, of a model's class-1 (``win``) and
    class-0 (``loss``) training rows: what each outcome the model gives odds of is worth to a
    buyer (a seller gets the negatives)."""

    win: float
    loss: float

    @classmethod
    def of(cls, stored: Any, *, strategy: str, version: int) -> Payoff:
        """From a version's ``metrics["payoff"]`` ({"win", "loss"}); ``ModelWithoutPayoff``
        naming the strategy and version when it has none."""
        try:
            payoff = cls(float(stored["win"]), float(stored["loss"]))
        except (TypeError, KeyError, ValueError):
            raise ModelWithoutPayoff(
                f"strategy {strategy!r} model v{version} has no payoff (the mean forward return of its "
                f"two classes on its training rows, which expected value and sizing are priced at): it "
                f"was trained before the lab measured it; retrain it with `lab tune --strategy {strategy}`"
            ) from None
        if not (np.isfinite(payoff.win) and np.isfinite(payoff.loss)):
            raise ModelWithoutPayoff(f"strategy {strategy!r} model v{version} has a non-finite payoff "
                                     f"{stored!r}; retrain it with `lab tune --strategy {strategy}`")
        return payoff


@dataclass(frozen=True)
class Prediction:
    """Class-1 probability per input row (same order), the model version that made it, and
    that model's payoff."""

    values: np.ndarray
    model_version: int
    payoff: Payoff


class NoActiveModel(TradingError):
    """A strategy has no active model version, so it cannot produce signals."""


class ModelWithoutPayoff(NoActiveModel):
    """The active model version stores no payoff, so its signals cannot be priced."""


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
        payoff = Payoff.of(version.metrics.get("payoff"), strategy=strategy, version=version.version)
        predictor = self._loaded.get(version.id)
        if predictor is None:
            predictor = self._loaded[version.id] = _load(self._registry.model_file(version))
        if rows.empty:
            return Prediction(np.empty(0), version.version, payoff)
        missing = [c for c in predictor.feature_names if c not in rows.columns]
        if missing:
            raise TradingError(f"strategy {strategy!r} model v{version.version} needs features "
                               f"missing from the input: {', '.join(missing)}")
        values = np.asarray(predictor.predict(rows[list(predictor.feature_names)]), dtype=float)
        return Prediction(values, version.version, payoff)


def _load(path: Path) -> Any:
    from lab.models import load_predictor

    return load_predictor(path)
