"""Predictors and the one-file model format other parts load with ``load_predictor``."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from lab.errors import DataError, ModelFileError
from lab.models import CryptoPredictor, StockPredictor, XGBPredictor, load_predictor
from lab.models.predictor import fit_threads


@pytest.fixture
def frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(400, 3)), columns=["b_feature", "a_feature", "c_feature"])
    y = (X["b_feature"] + 0.3 * rng.normal(size=400) > 0).astype(int).to_numpy()
    return X, y


def test_saved_file_is_one_ubj_booster_with_features_and_lab_attributes(tmp_path, frame):
    X, y = frame
    path = StockPredictor("classification", {"n_estimators": 20}, strategy="swing",
                          label={"kind": "direction", "horizon": 5}).train(X, y).save(tmp_path / "m.ubj")
    booster = xgb.Booster(model_file=str(path))
    assert booster.feature_names == ["b_feature", "a_feature", "c_feature"]
    assert booster.attr("lab_task") == "classification"
    assert booster.attr("lab_strategy") == "swing"
    assert json.loads(booster.attr("lab_label")) == {"kind": "direction", "horizon": 5}
    assert booster.attr("lab_asset_class") == "stocks"


def test_a_fit_on_more_threads_writes_the_same_file(tmp_path):
    # the tuning refit and the walk-forward fits use every core they have; the file must not
    # depend on that
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(20_000, 4)), columns=list("abcd"))
    y = (X["a"] + rng.normal(size=len(X)) > 0).astype(int).to_numpy()
    params = {"n_estimators": 30, "max_depth": 4, "subsample": 0.8, "colsample_bytree": 0.8}
    files = [XGBPredictor("classification", params, seed=2).train(X, y, threads=threads).save(tmp_path / f"{threads}.ubj")
             for threads in (None, 4)]
    assert files[0].read_bytes() == files[1].read_bytes()
    assert json.loads(xgb.Booster(model_file=str(files[1])).attr("lab_params"))["nthread"] == 1


@pytest.mark.parametrize(("omp", "expected"), [("3", 3), ("0", 1), ("4,2", None), (None, None)])
def test_a_fit_takes_the_threads_ray_gives_its_task_else_every_cpu(monkeypatch, omp, expected):
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)  # Ray sets it to a task's num_cpus
    assert fit_threads() == (expected or len(os.sched_getaffinity(0)))


def test_loaded_predictor_gives_the_same_probabilities_from_a_frame_or_an_array(tmp_path, frame):
    X, y = frame
    model = XGBPredictor("classification", {"n_estimators": 20}).train(X, y)
    loaded = load_predictor(model.save(tmp_path / "m.ubj"))
    shuffled = X[["c_feature", "a_feature", "b_feature"]]  # a frame is read by name, not position
    probabilities = loaded.predict(shuffled)
    assert loaded.task == "classification" and loaded.feature_names == list(X.columns)
    np.testing.assert_allclose(probabilities, model.predict(X.to_numpy()), rtol=1e-6)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert np.mean((probabilities > 0.5) == y) > 0.8


def test_regression_predicts_values(frame):
    X, _ = frame
    target = 2.0 * X["a_feature"].to_numpy()
    model = XGBPredictor("regression", {"n_estimators": 100, "learning_rate": 0.3}).train(X, target)
    assert np.corrcoef(model.predict(X), target)[0, 1] > 0.95


def test_crypto_predictor_has_its_own_defaults_and_survives_a_round_trip(tmp_path, frame):
    X, y = frame
    assert CryptoPredictor.DEFAULTS["min_child_weight"] > StockPredictor.DEFAULTS["min_child_weight"]
    path = CryptoPredictor("classification", {"n_estimators": 10}).train(X, y).save(tmp_path / "c.ubj")
    assert isinstance(load_predictor(path), CryptoPredictor)


def test_frame_missing_a_feature_is_named(frame):
    X, y = frame
    model = XGBPredictor("classification", {"n_estimators": 5}).train(X, y)
    with pytest.raises(DataError, match="lacks the model's features: c_feature"):
        model.predict(X.drop(columns=["c_feature"]))


def test_array_with_the_wrong_width_is_rejected(frame):
    X, y = frame
    model = XGBPredictor("classification", {"n_estimators": 5}).train(X, y)
    with pytest.raises(DataError, match="3 columns"):
        model.predict(np.zeros((2, 2)))


def test_single_class_training_label_is_rejected(frame):
    X, _ = frame
    with pytest.raises(DataError, match="single class"):
        XGBPredictor("classification").train(X, np.ones(len(X)))


def test_model_files_must_be_ubj_and_foreign_files_are_refused(tmp_path, frame):
    X, y = frame
    model = XGBPredictor("classification", {"n_estimators": 5}).train(X, y)
    with pytest.raises(ModelFileError, match="must end in .ubj"):
        model.save(tmp_path / "m.json")
    plain = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(X, label=y), num_boost_round=2)
    plain.save_model(str(tmp_path / "plain.ubj"))
    with pytest.raises(ModelFileError, match="lacks the lab's metadata"):
        load_predictor(tmp_path / "plain.ubj")
    (tmp_path / "junk.ubj").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not an XGBoost model file"):
        load_predictor(tmp_path / "junk.ubj")
