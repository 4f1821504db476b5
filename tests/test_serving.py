"""The Serve prediction service, for real: a Serve app on loopback, a real registry (SQLite),
tiny real XGBoost models, and httpx over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert

from lab.config import load_config
from lab.db import connect
from lab.db import models as db
from lab.errors import LabError
from lab.features import get_feature_set
from lab.models.predictor import XGBPredictor, load_predictor
from lab.registry import ModelRegistry, VersionInfo
from lab.settings import Settings
from lab.strategy import get_strategy
from lab.trading.market import load_market
from lab.trading.predictions import ModelWithoutPayoff, NoActiveModel, Payoff, PredictionSource
from serving.client import PredictionServiceError, ServePredictionClient

FEATURES = ["ret_5", "ret_20", "volume_ratio_20", "rsi_14"]
MAX_ROWS = 1000
MAX_BODY = 200_000
TOKEN = "serve-test-token"
REPO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "trading.json"
#: stored bars: two universe stocks with a year of history, and one listed a week before AS_OF
HISTORY = {"AAA": "2023-05-01", "BBB": "2023-05-01", "NEWCO": "2024-06-20"}
AS_OF = date(2024, 6, 28)
#: momentum v1's payoff as tuning stores it; v2 and the others are stored without one
MOMENTUM_PAYOFF = {"win": 0.031, "loss": -0.024}


@dataclass
class Service:
    url: str
    secure_url: str
    registry: ModelRegistry
    momentum: list[VersionInfo]  # v1 active at start, v2 registered
    config_path: Path  # LAB_CONFIG of the replicas

    def predictor(self, version: VersionInfo):
        return load_predictor(self.registry.model_file(version))


def _train(path: Path, strategy: str, seed: int, features: list[str] = FEATURES) -> Path:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(300, len(features))), columns=features)
    label = (frame[features[1]] + rng.normal(scale=0.5 + seed, size=len(frame)) > 0).astype(int)
    model = XGBPredictor("classification", {"n_estimators": 15, "max_depth": 3}, strategy=strategy, seed=seed)
    return model.train(frame, label).save(path)


def _store_bars(engine, last: date) -> None:
    """A deterministic random walk per symbol of ``HISTORY``, business days up to ``last``."""
    rows = []
    for seed, (symbol, first) in enumerate(HISTORY.items()):
        days = pd.bdate_range(first, last, tz="UTC")
        rng = np.random.default_rng(seed)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, len(days))))
        volume = rng.integers(1_000, 5_000, len(days)).astype(float)
        rows += [{"asset_type": "stocks", "symbol": symbol, "interval": "1d", "ts": ts.to_pydatetime(),
                  "source": "test", "open": c, "high": c * 1.01, "low": c * 0.99, "close": c, "volume": v}
                 for ts, c, v in zip(days, close, volume, strict=True)]
    with engine.begin() as conn:
        conn.execute(insert(db.PriceBar), rows)


def _store_fundamentals(engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(db.Fundamental), [
            {"symbol": symbol, "known_at": datetime(2023, 6, 1, tzinfo=UTC), "pe_ratio": 15.0, "pb_ratio": 2.0,
             "market_cap": 1e9, "sector": "Energy", "source": "test"} for symbol in HISTORY])


def _feature_columns(strategy: str) -> list[str]:
    return list(get_feature_set(get_strategy(strategy).feature_set).columns)


def _config(path: Path) -> Path:
    config = json.loads(REPO_CONFIG.read_text())
    config["universe"]["stocks"] = {"symbols": ["AAA", "BBB"], "benchmark": "AAA"}
    path.write_text(json.dumps(config))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(check, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def service(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from ray import serve
    from ray.serve.context import _get_global_client

    from serving.app import PredictionService
    from serving.launch import start_serve

    home = tmp_path_factory.mktemp("serving")
    url = f"sqlite:///{home / 'lab.db'}"
    registry = ModelRegistry(connect(url), home / "models")
    momentum = [registry.save_version("trading", "momentum", _train(home / f"m{s}.ubj", "momentum", s),
                                      metrics={"payoff": MOMENTUM_PAYOFF} if s == 1 else None)
                for s in (1, 2)]
    registry.activate(momentum[0].id)
    breakout = registry.activate(
        registry.save_version("trading", "breakout", _train(home / "b.ubj", "breakout", 3)).id)
    breakout.model_path.write_bytes(b"not the registered bytes")  # the replica must refuse it
    for seed, strategy in enumerate(("pairs", "value"), start=4):  # neither is enabled in the config
        registry.activate(registry.save_version(
            "trading", strategy, _train(home / f"{strategy}.ubj", strategy, seed, _feature_columns(strategy))).id)
    _store_bars(registry.engine, AS_OF)
    _store_fundamentals(registry.engine)
    config_path = _config(home / "trading.json")
    env = {"LAB_HOME": str(home), "LAB_CONFIG": str(config_path)}  # the replicas' models folder is home's

    start_serve(port=_free_port())  # the settings `lab serve` runs with
    port = _get_global_client().http_config.port  # another module may have started Serve already
    options = {"poll_interval_s": 0.2, "max_rows": MAX_ROWS, "max_body_bytes": MAX_BODY}
    serve.run(PredictionService.options(
        user_config=options, ray_actor_options={"num_cpus": 0.1, "runtime_env": {"env_vars": env}},
    ).bind(database_url=url), name="serving-test", route_prefix="/")
    serve.run(PredictionService.options(
        user_config=options,
        ray_actor_options={"num_cpus": 0.1, "runtime_env": {"env_vars": {**env, "LAB_SERVE_TOKEN": TOKEN}}},
    ).bind(database_url=url), name="serving-test-secure", route_prefix="/secure")
    try:
        yield Service(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/secure", registry, momentum,
                      config_path)
    finally:
        serve.shutdown()


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as http:
        yield http


def _rows(n: int, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [dict(zip(FEATURES, map(float, values), strict=True)) for values in rng.normal(size=(n, len(FEATURES)))]


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=FEATURES, dtype=float)


def _detail(response: httpx.Response) -> dict:
    return response.json()["detail"]


# --- predictions ---------------------------------------------------------------------------


def test_predictions_equal_the_in_process_predictor(service: Service, client: httpx.Client) -> None:
    rows = _rows(50)
    response = client.post("/predict", json={"strategy": "momentum", "rows": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == 1 and body["model_id"] == service.momentum[0].id
    assert body["feature_names"] == FEATURES
    expected = service.predictor(service.momentum[0]).predict(_frame(rows))
    np.testing.assert_array_equal(np.asarray(body["predictions"]), expected)


def test_predictions_come_with_the_payoff_their_version_stores(client: httpx.Client) -> None:
    """The signal engine prices a prediction at its model's payoff, so Serve returns it: the
    version's, or null for one stored without it (the engine then refuses it)."""
    momentum = client.post("/predict", json={"strategy": "momentum", "rows": _rows(3)})
    assert momentum.status_code == 200, momentum.text
    assert momentum.json()["payoff"] == MOMENTUM_PAYOFF
    rows = [dict.fromkeys(_feature_columns("value"), 1.0)]
    value = client.post("/predict", json={"strategy": "value", "rows": rows})
    assert value.status_code == 200, value.text
    assert value.json()["payoff"] is None


def test_feature_order_in_the_request_does_not_matter(service: Service, client: httpx.Client) -> None:
    rows = _rows(5, seed=1)
    shuffled = [dict(reversed(list(row.items()))) for row in rows]
    a = client.post("/predict", json={"strategy": "momentum", "rows": rows}).json()["predictions"]
    b = client.post("/predict", json={"strategy": "momentum", "rows": shuffled}).json()["predictions"]
    assert a == b


def test_null_and_nan_are_missing_values(service: Service, client: httpx.Client) -> None:
    rows = _rows(3, seed=2)
    rows[0]["rsi_14"] = None
    rows[1]["ret_5"] = float("nan")
    response = client.post("/predict", content=json.dumps({"strategy": "momentum", "rows": rows}),
                           headers={"content-type": "application/json"})  # json.dumps writes NaN
    assert response.status_code == 200, response.text
    expected = service.predictor(service.momentum[0]).predict(_frame(rows))
    np.testing.assert_array_equal(np.asarray(response.json()["predictions"]), expected)


def test_empty_rows_give_empty_predictions(client: httpx.Client) -> None:
    response = client.post("/predict", json={"strategy": "momentum", "rows": []})
    assert response.status_code == 200
    assert response.json()["predictions"] == [] and response.json()["model_version"] == 1


def test_ignore_extra_drops_columns_the_model_does_not_use(client: httpx.Client) -> None:
    rows = [{**row, "symbol": "AAPL"} for row in _rows(2)]
    response = client.post("/predict", json={"strategy": "momentum", "rows": rows, "ignore_extra": True})
    assert response.status_code == 200, response.text


def test_models_lists_served_versions_and_problems(client: httpx.Client) -> None:
    strategies = client.get("/models").json()["strategies"]
    assert strategies["momentum"]["model_version"] == 1
    assert strategies["momentum"]["feature_names"] == FEATURES
    assert strategies["swing"]["model_version"] is None
    assert "no active model version" in strategies["swing"]["problem"]
    assert "sha256" in strategies["breakout"]["problem"]


def test_healthz_and_openapi_schema(client: httpx.Client) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["models_ready"] == 3  # momentum, pairs, value
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/models", "/healthz"} <= set(schema["paths"])
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"strategy", "rows", "symbols", "as_of"} <= set(body["properties"])


# --- errors --------------------------------------------------------------------------------


def test_unknown_strategy_is_404(client: httpx.Client) -> None:
    response = client.post("/predict", json={"strategy": "nope", "rows": _rows(1)})
    assert response.status_code == 404
    assert "nope" in _detail(response)["message"] and "momentum" in _detail(response)["message"]


def test_missing_features_are_422_naming_them(client: httpx.Client) -> None:
    rows = _rows(2)
    del rows[1]["rsi_14"]
    response = client.post("/predict", json={"strategy": "momentum", "rows": rows})
    assert response.status_code == 422
    assert _detail(response)["missing"] == ["rsi_14"] and "rsi_14" in _detail(response)["message"]


def test_extra_features_are_422_naming_them(client: httpx.Client) -> None:
    rows = [{**row, "pe_ratio": 12.0} for row in _rows(2)]
    response = client.post("/predict", json={"strategy": "momentum", "rows": rows})
    assert response.status_code == 422
    assert _detail(response)["extra"] == ["pe_ratio"]


@pytest.mark.parametrize("value", ["1.5", True, [1.0], {"v": 1}])
def test_non_numeric_features_are_422_naming_them(client: httpx.Client, value) -> None:
    rows = _rows(2)
    rows[0]["ret_20"] = value
    response = client.post("/predict", json={"strategy": "momentum", "rows": rows})
    assert response.status_code == 422
    assert _detail(response)["non_numeric"] == ["ret_20"]


def test_infinite_features_are_422_naming_them(client: httpx.Client) -> None:
    rows = _rows(2)
    rows[1]["volume_ratio_20"] = float("-inf")
    response = client.post("/predict", content=json.dumps({"strategy": "momentum", "rows": rows}),
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert _detail(response)["non_finite"] == ["volume_ratio_20"]


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"rows": []}', b'{"strategy": "momentum"}',
                                  b'{"strategy": "momentum", "rows": [], "symbols": ["AAPL"]}',
                                  b'{"strategy": "momentum", "rows": [], "colour": "red"}'])
def test_malformed_requests_are_422(client: httpx.Client, body: bytes) -> None:
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert _detail(response)["error"] == "invalid_request"


def test_oversize_body_is_413(client: httpx.Client) -> None:
    payload = json.dumps({"strategy": "momentum", "rows": _rows(10), "pad": "x" * MAX_BODY})
    response = client.post("/predict", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert str(MAX_BODY) in _detail(response)["message"]


def test_streamed_oversize_body_without_length_is_413(client: httpx.Client) -> None:
    def chunks():
        yield b'{"strategy": "momentum", "rows": ['
        for _ in range(MAX_BODY // 1000 + 1):
            yield b" " * 1000
        yield b"]}"

    response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_too_many_rows_is_413(client: httpx.Client) -> None:
    rows = [{name: 0 for name in FEATURES}] * (MAX_ROWS + 1)
    response = client.post("/predict", json={"strategy": "momentum", "rows": rows})
    assert response.status_code == 413
    assert str(MAX_ROWS) in _detail(response)["message"]


def test_no_active_version_is_503_with_the_reason(client: httpx.Client) -> None:
    response = client.post("/predict", json={"strategy": "swing", "rows": _rows(1)})
    assert response.status_code == 503
    assert "no active model version" in _detail(response)["message"]


def test_unloadable_active_version_is_503_with_the_reason(client: httpx.Client) -> None:
    response = client.post("/predict", json={"strategy": "breakout", "rows": _rows(1)})
    assert response.status_code == 503
    assert "sha256" in _detail(response)["message"] and "v1" in _detail(response)["message"]


# --- features computed from stored bars ({symbols, as_of}) -----------------------------------


def _engine_rows(service: Service, symbols: list[str], as_of: datetime) -> pd.DataFrame:
    """What the trading engine's feature source gives for these symbols at ``as_of``."""
    market = load_market(service.registry.engine, load_config(service.config_path), as_of,
                         extra_symbols=symbols)
    return market.latest(get_strategy("momentum").feature_set, symbols, as_of)


def test_symbol_predictions_equal_the_predictor_on_the_engines_feature_rows(
        service: Service, client: httpx.Client) -> None:
    symbols = ["BBB", "AAA", "BBB"]  # request order, repeats included
    response = client.post("/predict", json={"strategy": "momentum", "symbols": symbols, "as_of": str(AS_OF)})
    assert response.status_code == 200, response.text
    body = response.json()
    session = datetime.combine(AS_OF, clock.min, tzinfo=UTC)  # a date means that day's bar, by its label
    rows = _engine_rows(service, symbols, session)
    assert body["symbols"] == symbols and body["model_version"] == 1
    assert datetime.fromisoformat(body["as_of"]) == session
    np.testing.assert_array_equal(np.asarray(body["predictions"]),
                                  service.predictor(service.momentum[0]).predict(rows.loc[symbols]))


def test_symbol_features_only_use_bars_up_to_as_of(service: Service, client: httpx.Client) -> None:
    as_of = datetime(2024, 3, 1, 12, tzinfo=UTC)
    rows = _engine_rows(service, ["AAA"], as_of)
    assert not rows.equals(_engine_rows(service, ["AAA"], datetime.combine(AS_OF, clock.max, tzinfo=UTC)))
    response = client.post("/predict", json={"strategy": "momentum", "symbols": ["AAA"], "as_of": as_of.isoformat()})
    assert response.status_code == 200, response.text
    assert datetime.fromisoformat(response.json()["as_of"]) == as_of
    np.testing.assert_array_equal(np.asarray(response.json()["predictions"]),
                                  service.predictor(service.momentum[0]).predict(rows))


def test_unknown_symbols_are_422_naming_them(client: httpx.Client) -> None:
    response = client.post("/predict", json={"strategy": "momentum", "symbols": ["AAA", "ZZZ"], "as_of": str(AS_OF)})
    assert response.status_code == 422
    assert _detail(response)["error"] == "bad_symbols" and _detail(response)["unknown"] == ["ZZZ"]
    assert "ZZZ" in _detail(response)["message"]


@pytest.mark.parametrize(("ahead", "as_date"), [(timedelta(days=2), True), (timedelta(days=2), False),
                                               (timedelta(hours=3), False)])
def test_as_of_in_the_future_is_422(client: httpx.Client, ahead: timedelta, as_date: bool) -> None:
    later = datetime.now(UTC) + ahead
    as_of = later.date().isoformat() if as_date else later.isoformat()
    response = client.post("/predict", json={"strategy": "momentum", "symbols": ["AAA"], "as_of": as_of})
    assert response.status_code == 422, response.text
    assert _detail(response)["error"] == "invalid_request"
    assert f"`as_of` {as_of} is in the future" in _detail(response)["message"]


@pytest.mark.parametrize("as_of", ["0001-01-01", "1600-06-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "1699-12-31"])
def test_as_of_before_the_earliest_served_is_422_naming_it(client: httpx.Client, as_of: str) -> None:
    response = client.post("/predict", json={"strategy": "momentum", "symbols": ["AAA"], "as_of": as_of})
    assert response.status_code == 422, response.text
    assert _detail(response)["error"] == "invalid_request"
    assert "`as_of`" in _detail(response)["message"] and "1700-01-01" in _detail(response)["message"]
    earliest = client.post("/predict", json={"strategy": "momentum", "symbols": ["AAA"], "as_of": "1700-01-01"})
    assert _detail(earliest)["no_bars"] == ["AAA"]


def test_as_of_before_any_stored_bar_is_422_naming_the_symbols(client: httpx.Client) -> None:
    response = client.post("/predict", json={"strategy": "momentum", "symbols": ["AAA", "BBB"],
                                             "as_of": "2020-01-02"})
    assert response.status_code == 422
    assert _detail(response)["no_bars"] == ["AAA", "BBB"] and "2020-01-02" in _detail(response)["message"]


def test_features_undefined_at_as_of_are_422_naming_symbol_and_features(client: httpx.Client) -> None:
    response = client.post("/predict", json={"strategy": "momentum", "symbols": ["NEWCO"], "as_of": str(AS_OF)})
    assert response.status_code == 422
    undefined = _detail(response)["undefined"]
    assert list(undefined) == ["NEWCO"] and "ret_20" in undefined["NEWCO"]  # 7 bars: no 20-day return yet
    assert "NEWCO" in _detail(response)["message"] and "ret_20" in _detail(response)["message"]


def test_pairs_symbols_that_are_not_two_different_legs_are_422_naming_them(client: httpx.Client) -> None:
    symbols = ["AAA/BBB", "AAA", "AAA/BBB/AAA", "", "AAA/", "AAA/AAA"]
    response = client.post("/predict", json={"strategy": "pairs", "symbols": symbols, "as_of": str(AS_OF)})
    assert response.status_code == 422, response.text
    assert _detail(response)["error"] == "bad_symbols"
    assert _detail(response)["not_pairs"] == symbols[1:]
    assert "AAA/BBB/AAA" in _detail(response)["message"]
    pair = client.post("/predict", json={"strategy": "pairs", "symbols": ["AAA/BBB"], "as_of": str(AS_OF)})
    assert pair.status_code == 200, pair.text


def test_a_pair_for_a_per_symbol_strategy_is_422_naming_it(client: httpx.Client) -> None:
    response = client.post("/predict", json={"strategy": "momentum", "symbols": ["AAA", "AAA/BBB"],
                                             "as_of": str(AS_OF)})
    assert response.status_code == 422, response.text
    assert _detail(response)["not_single"] == ["AAA/BBB"] and "no_bars" not in _detail(response)
    assert "AAA/BBB" in _detail(response)["message"]


def test_value_symbols_read_fundamentals_though_the_config_does_not_enable_value(
        service: Service, client: httpx.Client) -> None:
    response = client.post("/predict", json={"strategy": "value", "symbols": ["AAA"], "as_of": str(AS_OF)})
    assert response.status_code == 200, response.text
    session = datetime.combine(AS_OF, clock.min, tzinfo=UTC)
    market = load_market(service.registry.engine, load_config(service.config_path), session, fundamentals=True)
    rows = market.latest(get_strategy("value").feature_set, ["AAA"], session)
    assert rows.loc["AAA", "pe_ratio"] == 15.0
    value = load_predictor(service.registry.model_file(service.registry.get_active_version("value")))
    np.testing.assert_array_equal(np.asarray(response.json()["predictions"]), value.predict(rows))


def test_bad_requests_never_take_the_replica_down(client: httpx.Client) -> None:
    replica = client.get("/healthz").json()["replica"]
    for body in (b"\xff\xfe", b"[]", b'{"strategy": 1, "rows": 5}', b'{"strategy": "momentum", "rows": [1, "a"]}',
                 json.dumps({"strategy": "momentum", "rows": [{"ret_5": 10**400}]}).encode()):
        assert client.post("/predict", content=body).status_code in (413, 422)
    assert client.get("/healthz").json()["replica"] == replica
    assert client.post("/predict", json={"strategy": "momentum", "rows": _rows(1)}).status_code == 200


def test_token_guards_predict_and_models_when_set(service: Service) -> None:
    with httpx.Client(base_url=service.secure_url, timeout=30) as http:
        payload = {"strategy": "momentum", "rows": _rows(1)}
        assert http.post("/predict", json=payload).status_code == 401
        assert http.get("/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/healthz").status_code == 200
        authorized = http.post("/predict", json=payload, headers={"Authorization": f"Bearer {TOKEN}"})
        assert authorized.status_code == 200


def test_the_launched_app_serves_the_registry_and_token_of_the_settings_it_was_started_with(
        service: Service, tmp_path: Path) -> None:
    """Replicas on a cluster do not share `lab serve`'s environment (nor do they here: the
    raylet's has no LAB_DATABASE_URL or LAB_SERVE_TOKEN), so the app carries them itself."""
    from ray import serve

    from serving.launch import prediction_app

    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    settings = Settings(LAB_HOME=str(tmp_path / "home"), LAB_DATABASE_URL=url, LAB_CONFIG=str(service.config_path),
                        LAB_SERVE_TOKEN="launch-token")
    registry = ModelRegistry(connect(url), settings.models_dir)
    version = registry.activate(
        registry.save_version("trading", "momentum", _train(tmp_path / "m.ubj", "momentum", 4)).id)
    serve.run(prediction_app(settings, num_cpus=0.1), name="serving-test-launched", route_prefix="/launched")
    try:
        with httpx.Client(base_url=f"{service.url}/launched", timeout=30) as http:
            assert http.get("/models").status_code == 401
            models = http.get("/models", headers={"Authorization": "Bearer launch-token"}).json()
            assert models["strategies"]["momentum"]["model_id"] == version.id
        [environment] = _worker_environments("ray::ServeReplica:serving-test-launched:")
        assert environment["LAB_HOME"] == str(settings.home)
        assert environment["LAB_CONFIG"] == str(service.config_path)
        assert "launch-token" not in environment.values()  # a secret stays out of Serve's displayed config
    finally:
        serve.delete("serving-test-launched")


# --- the client (the trading engine's PredictionSource) --------------------------------------


def test_client_is_a_prediction_source_matching_in_process_predictions(service: Service) -> None:
    frame = _frame(_rows(10, seed=7)).assign(symbol=[f"S{i}" for i in range(10)])
    frame.loc[3, "ret_5"] = np.nan
    with ServePredictionClient(service.url) as source:
        assert isinstance(source, PredictionSource)
        prediction = source.predict("momentum", frame)
    assert prediction.model_version == 1 and prediction.payoff == Payoff(**MOMENTUM_PAYOFF)
    np.testing.assert_array_equal(prediction.values, service.predictor(service.momentum[0]).predict(frame))


def test_client_refuses_a_version_served_without_a_payoff_naming_it(service: Service) -> None:
    frame = pd.DataFrame([dict.fromkeys(_feature_columns("value"), 1.0)])
    with ServePredictionClient(service.url) as source, pytest.raises(
            ModelWithoutPayoff, match=r"'value' model v1 has no payoff.*retrain it with `lab tune --strategy value`"):
        source.predict("value", frame)


def test_client_raises_no_active_model_with_the_reason(service: Service) -> None:
    with ServePredictionClient(service.url) as source, pytest.raises(NoActiveModel, match="no active model"):
        source.predict("swing", _frame(_rows(1)))


def test_client_raises_the_services_message_on_bad_input(service: Service) -> None:
    frame = _frame(_rows(2)).assign(rsi_14=[1.0, np.inf])
    with ServePredictionClient(service.url) as source:
        with pytest.raises(PredictionServiceError, match="422.*rsi_14"):
            source.predict("momentum", frame)
        with pytest.raises(PredictionServiceError, match="404.*nope"):
            source.predict("nope", frame)


def test_client_sends_the_token(service: Service) -> None:
    frame = _frame(_rows(1))
    with ServePredictionClient(service.secure_url, token=TOKEN) as source:
        assert source.predict("momentum", frame).model_version == 1
    with ServePredictionClient(service.secure_url) as source, pytest.raises(PredictionServiceError, match="401"):
        source.predict("momentum", frame)


def test_client_reports_an_unreachable_service(service: Service) -> None:
    with ServePredictionClient(f"http://127.0.0.1:{_free_port()}", timeout_s=2) as source:
        with pytest.raises(PredictionServiceError, match="could not reach the prediction service at http://127.0.0.1:"):
            source.predict("momentum", _frame(_rows(1)))


# --- hot swap --------------------------------------------------------------------------------


async def _load(url: str, stop: asyncio.Event, rows: list[dict], results: list) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while not stop.is_set():
            response = await http.post("/predict", json={"strategy": "momentum", "rows": rows})
            results.append(response)


async def _swap_under_load(service: Service, rows: list[dict]) -> list[httpx.Response]:
    registry, (v1, v2) = service.registry, service.momentum
    results: list[httpx.Response] = []
    stop = asyncio.Event()
    workers = [asyncio.create_task(_load(service.url, stop, rows, results)) for _ in range(8)]

    async def served(version: int) -> None:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            for _ in range(600):  # bounded: at most ~60 s
                if (await http.get("/models")).json()["strategies"]["momentum"]["model_version"] == version:
                    return
                await asyncio.sleep(0.1)
        raise AssertionError(f"Serve never served momentum v{version}")

    try:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(registry.activate, v2.id)
        await served(2)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(registry.rollback_to_version, v1.id)
        await served(1)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    return results


def test_hot_swap_under_load_fails_no_request_and_tags_every_response(service: Service) -> None:
    replica = httpx.get(f"{service.url}/healthz").json()["replica"]
    rows = _rows(20, seed=5)
    expected = {v.version: service.predictor(v).predict(_frame(rows)) for v in service.momentum}
    assert not np.array_equal(expected[1], expected[2])  # otherwise the tags could not be checked

    results = asyncio.run(_swap_under_load(service, rows))

    assert [r.status_code for r in results if r.status_code != 200] == []
    versions = [r.json()["model_version"] for r in results]
    for response, version in zip(results, versions, strict=True):
        np.testing.assert_array_equal(np.asarray(response.json()["predictions"]), expected[version])
    assert versions[0] == 1 and 2 in versions and versions[-1] == 1
    assert httpx.get(f"{service.url}/healthz").json()["replica"] == replica  # swapped in place


# --- Serve settings --------------------------------------------------------------------------


def _worker_environments(title: str) -> list[dict[str, str]]:
    """The environment of each process under this one whose title starts with ``title`` (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    environments = []
    for pid in filter(ours, parents):
        proc = Path(f"/proc/{pid}")
        try:
            if proc.joinpath("cmdline").read_bytes().startswith(title.encode()):
                pairs = proc.joinpath("environ").read_bytes().decode(errors="replace").split("\0")
                environments.append(dict(pair.split("=", 1) for pair in pairs if "=" in pair))
        except OSError:
            continue
    return environments


def test_serve_settings_reach_haproxys_manager_the_fallback_proxy_and_the_replicas(service: Service) -> None:
    from serving.launch import HAPROXY_ENV, SERVE_ENV

    for title in ("ray::HAProxyManager", "ray::ProxyActor", "ray::ServeReplica:serving-test:"):
        environments = _worker_environments(title)
        assert environments, f"no {title} process under this test session"
        for environment in environments:
            assert (SERVE_ENV | HAPROXY_ENV).items() <= environment.items(), title


def test_launching_on_a_running_serve_keeps_its_address_and_refuses_another(service: Service) -> None:
    """Serve ignores new HTTP options once it runs: the lab must not print an address nobody
    listens on, nor refuse the address the running Serve itself holds."""
    from serving.launch import ensure_serve

    port = int(service.url.rpartition(":")[2])
    ensure_serve("127.0.0.1", port)  # the running one's: nothing to start, and its port is no conflict
    for host, other in (("127.0.0.1", _free_port()), ("0.0.0.0", port)):
        with pytest.raises(LabError, match=f"already runs .* on 127.0.0.1:{port}"):
            ensure_serve(host, other)


def test_lab_serve_on_a_cluster_whose_serve_runs_elsewhere_names_its_address(service: Service) -> None:
    import ray

    other = _free_port()
    result = subprocess.run(
        [sys.executable, "-m", "lab.cli.main", "serve", "--port", str(other), "--no-wait"], capture_output=True,
        text=True, timeout=180, env={**os.environ, "COLUMNS": "200",
                                     "RAY_ADDRESS": ray.get_runtime_context().gcs_address})
    port = int(service.url.rpartition(":")[2])
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
    assert f":{other}" not in result.stdout  # no address printed that nobody listens on


def _listeners() -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket on this machine (Linux /proc)."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                address, _, port = fields[1].rpartition(":")
                sockets[f"socket:[{fields[9]}]"] = (_ip(address), int(port, 16))
    found = []
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if (target := os.readlink(fd)) in sockets:
                found.append((*sockets[target], fd.parents[1].joinpath("comm").read_text().strip()))
        except OSError:
            continue
    return found


def _ip(hex_address: str) -> str:
    """/proc/net/tcp's address: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words)


def test_requests_reach_the_replicas_through_haproxy(service: Service, client: httpx.Client) -> None:
    """The service port is HAProxy's (direct ingress), not Serve's Python proxy actor."""
    assert client.get("/healthz").status_code == 200
    port = int(service.url.rpartition(":")[2])
    assert {name for _, bound, name in _listeners() if bound == port} == {"haproxy"}


def test_replicas_serve_http_on_loopback_only(service: Service) -> None:
    """Direct ingress gives each replica its own HTTP port (in Ray's direct-ingress range): like
    HAProxy's, it stays on 127.0.0.1. (Every Ray process also listens for Ray's own RPC.)"""
    from ray.serve._private.constants import (
        RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT,
        RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT,
    )

    http = range(RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT, RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT + 1)
    replicas = [(address, port) for address, port, name in _listeners() if name.startswith("ray::ServeRep")]
    assert {address for address, port in replicas if port in http} == {"127.0.0.1"}


# --- metrics ---------------------------------------------------------------------------------


def _ray_metrics_url() -> str:
    import ray

    node = ray.nodes()[0]
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"


def test_request_count_latency_and_model_version_are_exported_to_prometheus(
        service: Service, client: httpx.Client) -> None:
    client.post("/predict", json={"strategy": "momentum", "rows": _rows(1)})

    def scraped() -> str | None:
        text = httpx.get(_ray_metrics_url(), timeout=10).text
        wanted = ("ray_lab_serve_requests_total{", "ray_lab_serve_request_latency_s_bucket{",
                  "ray_lab_serve_model_version{")
        return text if all(w in text for w in wanted) else None

    text = _wait_for(scraped, "the lab's serving metrics on Ray's Prometheus endpoint", timeout_s=60)
    requests = [line for line in text.splitlines() if line.startswith("ray_lab_serve_requests_total{")]
    assert any('strategy="momentum"' in line and 'status="200"' in line for line in requests)
    assert any('strategy="momentum"' in line and line.startswith("ray_lab_serve_model_version{")
               for line in text.splitlines())


def test_concurrent_callers_share_predict_calls(service: Service) -> None:
    """Batching for real: 64 concurrent 1-row callers, and some predict call served several of them."""
    body = {"strategy": "momentum", "rows": _rows(1)}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            return await asyncio.gather(*(http.post("/predict", json=body) for _ in range(64)))

    assert {r.status_code for r in asyncio.run(burst())} == {200}

    def batched() -> bool:
        lines = httpx.get(_ray_metrics_url(), timeout=10).text.splitlines()
        calls = sum(float(line.split()[-1]) for line in lines if line.startswith("ray_lab_serve_batch_size_count{"))
        single = sum(float(line.split()[-1]) for line in lines
                     if line.startswith("ray_lab_serve_batch_size_bucket{") and 'le="1.0"' in line)
        return calls > single

    _wait_for(batched, "a batched predict call of more than one request on Ray's metrics", timeout_s=60)


def test_the_operations_boards_serve_promql_returns_series_from_a_real_scrape(
        service: Service, client: httpx.Client, prometheus_binary: str, tmp_path: Path) -> None:
    """The four Serve panels of the Operations board, against Prometheus scraping Ray's metrics."""
    import ray

    from lab.dashboards.ops import SERVE_EXPRS
    from lab.dashboards.queries import render_promql

    node = ray.nodes()[0]
    target = f"{node['NodeManagerAddress']}:{node['MetricsExportPort']}"
    port = _free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: ray\n    static_configs:\n      - targets: ['{target}']\n")
    proc = subprocess.Popen([prometheus_binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def series(expr: str) -> list:
        try:
            response = httpx.get(f"{base}/api/v1/query", params={"query": render_promql(expr, {})}, timeout=10)
            body = response.raise_for_status().json()  # a starting Prometheus answers 503 in plain text
        except httpx.HTTPError:
            return []
        assert body["status"] == "success", body
        return body["data"]["result"]

    try:
        deadline = time.monotonic() + 90
        missing = list(SERVE_EXPRS)
        while missing and time.monotonic() < deadline:
            client.post("/predict", json={"strategy": "momentum", "rows": _rows(3)})
            client.post("/predict", content=b"{not json")  # an error for the error panel
            missing = [title for title, expr in SERVE_EXPRS.items() if not series(expr)]
            time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not missing, f"no series for {missing}"
