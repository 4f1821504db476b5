"""ModelStore follows the registry's active versions (on SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab.models import XGBPredictor
from lab.registry import ModelRegistry
from serving.store import ModelStore

FEATURES = ["ret_5", "ret_20"]


def _model(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(200, 2)), columns=FEATURES)
    label = (frame["ret_5"] + rng.normal(size=200) > 0).astype(int)
    return XGBPredictor("classification", {"n_estimators": 5}, strategy="momentum", seed=seed).train(frame, label).save(path)


@pytest.fixture
def registry(engine, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(engine, tmp_path / "models")


def test_refresh_swaps_in_the_active_version_and_reports_strategies_without_one(
        registry: ModelRegistry, tmp_path: Path) -> None:
    store = ModelStore(registry, ["momentum", "swing"])
    v1 = registry.activate(registry.save_version("trading", "momentum", _model(tmp_path / "a.ubj", 1)).id)
    assert [m.version for m in store.refresh()] == [1]
    assert store.states["momentum"].model.model_id == v1.id
    assert "no active model version" in store.states["swing"].problem
    assert store.refresh() == []  # nothing changed, nothing reloaded

    v2 = registry.activate(registry.save_version("trading", "momentum", _model(tmp_path / "b.ubj", 2)).id)
    assert [m.model_id for m in store.refresh()] == [v2.id]
    registry.rollback_to_version(v1.id)
    assert [m.model_id for m in store.refresh()] == [v1.id]


def test_an_unloadable_version_leaves_the_previous_model_serving(registry: ModelRegistry, tmp_path: Path) -> None:
    store = ModelStore(registry, ["momentum"])
    v1 = registry.activate(registry.save_version("trading", "momentum", _model(tmp_path / "a.ubj", 1)).id)
    store.refresh()
    bad = registry.activate(registry.save_version("trading", "momentum", _model(tmp_path / "b.ubj", 2)).id)
    bad.model_path.write_bytes(b"corrupted")
    assert store.refresh() == []
    state = store.states["momentum"]
    assert state.model.model_id == v1.id
    assert f"v{bad.version}" in state.problem and "sha256" in state.problem


def _v2_missing_at_load(registry: ModelRegistry, store: ModelStore, tmp_path: Path):
    """v1 served; v2 activated, its file gone when the store loads it. Returns (v1, v2, v2's bytes)."""
    v1 = registry.activate(registry.save_version("trading", "momentum", _model(tmp_path / "a.ubj", 1)).id)
    store.refresh()
    v2 = registry.activate(registry.save_version("trading", "momentum", _model(tmp_path / "b.ubj", 2)).id)
    content = v2.model_path.read_bytes()
    v2.model_path.unlink()
    assert store.refresh() == [] and "missing" in store.states["momentum"].problem
    return v1, v2, content


def test_rolling_back_to_the_served_version_clears_the_problem(registry: ModelRegistry, tmp_path: Path) -> None:
    store = ModelStore(registry, ["momentum"])
    v1, _, _ = _v2_missing_at_load(registry, store, tmp_path)
    registry.rollback_to_version(v1.id)
    store.refresh()
    assert store.states["momentum"].model.model_id == v1.id and store.states["momentum"].problem is None


def test_a_version_that_failed_to_load_is_retried_when_activated_again(
        registry: ModelRegistry, tmp_path: Path) -> None:
    store = ModelStore(registry, ["momentum"])
    _, v2, content = _v2_missing_at_load(registry, store, tmp_path)
    assert store.refresh() == []  # not retried every poll
    v2.model_path.write_bytes(content)  # restored, then activated again
    registry.activate(v2.id, reason="file restored")
    assert [m.model_id for m in store.refresh()] == [v2.id]
    assert store.states["momentum"].problem is None
