"""Tuning on Ray Tune + Optuna and promotion: the tests that prove the method.

Trials are tiny (a few shallow trees, three folds and a holdout); the shared ``ray_session``
runs them.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from lab.db import session_scope
from lab.db.models import TuningRun
from lab.errors import ConfigError, DataError
from lab.models import load_predictor, tune_strategy
from lab.models.promotion import Gate, promote
from lab.models.synthetic import random_walk_market
from lab.models.tuning import TuneJob, tune_strategies
from lab.registry import ModelRegistry
from lab.strategy import Param

SPACE = {
    "max_depth": Param(default=3, low=2, high=4),
    "learning_rate": Param(default=0.1, low=0.03, high=0.3, log=True),
    "n_estimators": Param(default=40, low=20, high=60),
}
COST = 2 * (1.0 + 10.0) / 1e4  # stocks: fee + slippage, entry and exit


def _tune(data, storage: Path, **kwargs):
    options = {"trials": 4, "time_budget_s": 300, "seed": 7, "folds": 3, "search_space": SPACE, "cost": COST}
    return tune_strategy("swing", data, storage_dir=storage, **options | kwargs)


@pytest.fixture(scope="module")
def planted(ray_session, tmp_path_factory):
    data = random_walk_market(symbols=6, days=500, signal=0.6, seed=11)
    return _tune(data, tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def null(ray_session, tmp_path_factory):
    data = random_walk_market(symbols=10, days=800, signal=0.0, seed=12)
    return _tune(data, tmp_path_factory.mktemp("null"))


def _registry(engine, tmp_path) -> ModelRegistry:
    return ModelRegistry(engine, tmp_path / "models")


def test_planted_signal_is_found_out_of_sample(planted):
    assert planted.oos_score >= 0.6 and planted.tuning_score >= 0.6
    assert all(fold["auc"] >= 0.6 for fold in planted.fold_metrics)
    assert planted.deflated_sharpe >= 0.95 and planted.sharpe > 0
    assert planted.n_trials == 4


def test_the_out_of_sample_figures_are_the_chosen_params_scored_once_on_the_holdout_after_the_tuning_folds(planted):
    """No trial saw the holdout, so its score is not raised by picking the best of the trials."""
    problem = planted.problem
    holdout = problem.score_holdout(planted.best_params)
    assert planted.oos_score == holdout.metrics["auc"] == planted.metrics["oos_auc"]
    assert planted.holdout_metrics["test_start"] == problem.holdout.test_start.isoformat()
    assert all(fold.test_end < problem.holdout.test_start for fold in problem.folds)
    assert planted.metrics["tuning_score"] == planted.tuning_score != planted.oos_score


def test_the_registered_payoff_is_the_mean_forward_return_of_each_class_of_the_training_rows(
        planted, engine, tmp_path):
    """The deployed model is fitted on every row, so its payoff is measured on every row."""
    data = random_walk_market(symbols=6, days=500, signal=0.6, seed=11)  # the planted run's rows
    means = data.groupby("label")["forward_return"].mean()
    promote(_registry(engine, tmp_path), engine, planted, gate=Gate(min_auc_margin=0.02))
    stored = _registry(engine, tmp_path).list_versions("trading", "swing")[-1].metrics["payoff"]
    assert stored == {"win": pytest.approx(means[1]), "loss": pytest.approx(means[0])}
    assert stored["win"] > 0 > stored["loss"]  # the planted up-moves pay, the rest cost


def test_a_result_whose_tuning_folds_pass_but_whose_holdout_fails_is_not_promoted(planted, engine, tmp_path):
    registry = _registry(engine, tmp_path)
    overfit = replace(planted, oos_score=0.51)  # the folds it was chosen on still say >= 0.6
    decision = promote(registry, engine, overfit, gate=Gate(min_auc_margin=0.02))
    assert not decision.promoted and "OOS AUC 0.510 on the holdout is not above 0.520" in decision.reason
    assert registry.get_active_version("swing") is None


@pytest.mark.parametrize("seed", [1, 2])
def test_pure_noise_labels_are_refused_by_the_gate_on_the_holdout_after_many_trials(ray_session, engine, tmp_path,
                                                                                     seed):
    """The best of eight trials' fold means is raised by the selection alone; the gate reads
    the holdout, which the selection never saw."""
    data = random_walk_market(symbols=6, days=400, signal=0.0, seed=seed)
    data["label"] = np.random.default_rng(seed).permutation(data["label"].to_numpy())  # labels of pure noise
    result = _tune(data, tmp_path / "runs", trials=8, max_concurrent=1)
    decision = promote(_registry(engine, tmp_path), engine, result, gate=Gate(min_auc_margin=0.02))
    assert not decision.promoted and "on the holdout" in decision.reason


def test_planted_signal_is_promoted_and_its_file_loads(planted, engine, tmp_path):
    registry = _registry(engine, tmp_path)
    decision = promote(registry, engine, planted, gate=Gate(min_auc_margin=0.02))
    active = registry.get_active_version("swing")
    assert decision.promoted and active is not None and active.id == decision.version_id
    assert active.params == planted.best_params and active.metrics["oos_auc"] == planted.oos_score
    assert active.data_fingerprint == planted.problem.data_fingerprint and active.code_version
    model = load_predictor(registry.model_file(active))
    assert model.task == "classification" and "hint" in model.feature_names
    with session_scope(engine) as session:
        run = session.scalars(select(TuningRun)).one()
        assert (run.promoted, run.version_id, run.trials) == (True, decision.version_id, 4)


def test_null_market_stays_at_chance_and_nothing_is_promoted(null, engine, tmp_path):
    assert abs(null.oos_score - 0.5) <= 0.03
    registry = _registry(engine, tmp_path)
    decision = promote(registry, engine, null, gate=Gate(min_auc_margin=0.02))
    assert not decision.promoted and "OOS AUC" in decision.reason
    assert registry.get_active_version("swing") is None
    version = registry.get(decision.version_id)
    assert version.status == "candidate" and version.note == decision.reason


def test_a_candidate_that_does_not_beat_the_active_version_on_the_same_holdout_stays_candidate(
        planted, engine, tmp_path):
    registry = _registry(engine, tmp_path)
    first = promote(registry, engine, planted, gate=Gate())
    again = promote(registry, engine, planted, gate=Gate())  # same params re-scored: a tie does not beat
    assert first.promoted and not again.promoted
    assert again.active_score == pytest.approx(planted.oos_score)
    assert "does not beat active v1" in again.reason
    assert registry.get_active_version("swing").id == first.version_id


def test_serial_runs_with_the_same_seed_give_the_same_params_and_model_bytes(ray_session, tmp_path):
    data = random_walk_market(symbols=4, days=300, signal=0.5, seed=3)
    runs = [_tune(data, tmp_path / name, trials=3, max_concurrent=1) for name in ("a", "b")]
    assert runs[0].best_params == runs[1].best_params
    assert runs[0].model_path.read_bytes() == runs[1].model_path.read_bytes()


def _jobs(data, **swing_options) -> list[TuneJob]:
    return [TuneJob(strategy="swing", data=data, search_space=SPACE, cost=COST, **swing_options),
            TuneJob(strategy="momentum", data=data, search_space=SPACE, cost=COST)]


def test_strategies_tuned_in_one_run_each_get_their_own_study_and_results(ray_session, tmp_path):
    """Run serially, each strategy's TPE study proposes exactly what it proposes alone."""
    data = random_walk_market(symbols=4, days=300, signal=0.5, seed=3)
    joint = tune_strategies(_jobs(data), trials=3, time_budget_s=300, seed=7, folds=3,
                            storage_dir=tmp_path / "joint", max_concurrent=1)
    alone = _tune(data, tmp_path / "alone", trials=3, max_concurrent=1)
    swing, momentum = joint
    assert (swing.strategy, momentum.strategy) == ("swing", "momentum")
    assert swing.n_trials == momentum.n_trials == 3 and set(swing.best_params) == set(SPACE)
    assert swing.best_params == alone.best_params
    assert swing.model_path.read_bytes() == alone.model_path.read_bytes()
    assert swing.model_path != momentum.model_path and swing.storage_path == momentum.storage_path


def test_a_strategy_with_bad_input_fails_alone_in_a_joint_run(ray_session, tmp_path):
    data = random_walk_market(symbols=4, days=300, signal=0.5, seed=3)
    bad, good = tune_strategies(_jobs(data, features=["hint", "volume_z"]), trials=2, time_budget_s=300,
                                seed=7, folds=3, storage_dir=tmp_path)
    assert isinstance(bad, DataError) and "volume_z" in str(bad)
    assert good.strategy == "momentum" and good.n_trials == 2


def test_a_strategy_named_twice_in_one_run_is_refused(tmp_path):
    data = random_walk_market(symbols=2, days=120, seed=1)
    with pytest.raises(ConfigError, match="each strategy once per run"):
        tune_strategies([*_jobs(data)[:1], *_jobs(data)[:1]], trials=2, time_budget_s=60, seed=7, folds=3,
                        storage_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("mutate", "kwargs", "error", "message"), [
    (lambda d: d.iloc[0:0], {}, DataError, "is empty"),
    (lambda d: d.assign(label=1.0), {}, DataError, "single-class label"),
    (lambda d: d, {"features": ["hint", "volume_z"]}, DataError, "lacks feature column.*volume_z"),
    (lambda d: d, {"search_space": {**SPACE, "subsample": Param(default=0.9, low=0.5, high=1.5)}},
     ConfigError, r"subsample: range \[0.5, 1.5\] is outside"),
    (lambda d: d, {"search_space": {"max_depht": Param(default=3, low=2, high=4)}},
     ConfigError, "max_depht: not a tunable"),
], ids=["empty", "single-class", "missing-feature", "invalid-range", "unknown-hyperparameter"])
def test_bad_input_fails_clearly_before_any_trial_starts(tmp_path, mutate, kwargs, error, message):
    data = mutate(random_walk_market(symbols=2, days=120, seed=1))
    storage = tmp_path / "runs"
    with pytest.raises(error, match=message):
        _tune(data, storage, **kwargs)
    assert not storage.exists()  # Tune never created an experiment
