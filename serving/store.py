"""The active model of every strategy, as the registry says, loaded and swapped atomically.

``ModelStore.refresh()`` asks the registry which version of each strategy is active and
loads any that changed. A swap replaces one dict entry with a new immutable ``ActiveModel``;
a request that already picked the old one finishes with it and is tagged with its version,
so a swap never fails or mislabels a request. A version that fails to load (missing file,
hash mismatch, not a lab model) leaves the previous model serving and is reported, not
retried every poll; activating it again (after its file is restored) retries it, and the
report goes once the active version is the one served again (a rollback).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from lab.db.types import utcnow
from lab.errors import LabError
from lab.registry import ModelRegistry

__all__ = ["ActiveModel", "ModelStore", "StrategyState", "load_model"]


def load_model(path: Path) -> Any:
    """The predictor for a registry model file (``.predict``, ``.feature_names``, ``.task``)."""
    from lab.models import load_predictor

    predictor = load_predictor(path)
    predictor.booster.set_param({"nthread": 1})  # a fractional-CPU replica must not fan out threads
    return predictor


@dataclass(frozen=True, eq=False)
class ActiveModel:
    """One loaded model version; immutable so a request can hold it across a swap."""

    strategy: str
    version: int
    model_id: int
    predictor: Any
    feature_names: tuple[str, ...]
    task: str
    loaded_at: datetime
    #: the version's ``metrics["payoff"]`` (None if it stores none): returned with its
    #: predictions, as the signal engine prices them at it
    payoff: dict[str, float] | None = None

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self.predictor.predict(matrix), dtype=np.float64)


@dataclass(frozen=True)
class StrategyState:
    """What serving knows about one strategy: the model it serves and/or why it cannot."""

    strategy: str
    model: ActiveModel | None = None
    #: why the registry's active version is not (or not yet) the one served
    problem: str | None = None
    #: (registry id, activated_at) of the activation that failed to load: not retried every
    #: poll, but a new activation of the same version is
    failed: tuple[int, datetime | None] | None = field(default=None, repr=False)


class ModelStore:
    """Active models by strategy for one replica; ``refresh`` runs off the event loop."""

    def __init__(self, registry: ModelRegistry, strategies: Iterable[str], *, loader=load_model):
        self._registry = registry
        self._loader = loader
        self.states: dict[str, StrategyState] = {
            name: StrategyState(name, problem="not loaded yet") for name in sorted(strategies)
        }

    def refresh(self) -> list[ActiveModel]:
        """Follow the registry's active versions; returns the models newly swapped in."""
        swapped = []
        for name, state in self.states.items():
            new_state = self._follow(name, state)
            if new_state is not state:
                self.states = {**self.states, name: new_state}  # one atomic assignment
                if new_state.model is not None and new_state.model is not state.model:
                    swapped.append(new_state.model)
        return swapped

    def _follow(self, name: str, state: StrategyState) -> StrategyState:
        info = self._registry.get_active_version(name)
        if info is None:
            problem = (f"strategy {name!r} has no active model version in the registry "
                       f"(activate one with `lab models activate <id>`)")
            return state if state.problem == problem else StrategyState(name, state.model, problem)
        if state.model is not None and state.model.model_id == info.id:
            return state if state.problem is None else StrategyState(name, state.model)
        if state.failed == (info.id, info.activated_at):
            return state
        try:
            predictor = self._loader(self._registry.model_file(info))
        except (LabError, OSError, ValueError) as exc:
            problem = f"active version v{info.version} (id {info.id}) of {name!r} cannot be loaded: {exc}"
            return StrategyState(name, state.model, problem, failed=(info.id, info.activated_at))
        model = ActiveModel(
            strategy=name, version=info.version, model_id=info.id, predictor=predictor,
            feature_names=tuple(predictor.feature_names), task=predictor.task, loaded_at=utcnow(),
            payoff=info.metrics.get("payoff"),
        )
        return StrategyState(name, model)
