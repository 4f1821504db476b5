"""The Ray Serve prediction service: every strategy's active model behind one HTTP API.

Design (why it looks like this):

* **One deployment holds the active model of every strategy** (a dict keyed by strategy),
  rather than one deployment per strategy or ``@serve.multiplexed``. The lab has a handful
  of strategies with small Boosters (kilobytes to a few MB), so every replica can hold all
  of them; one deployment means one replica pool to size (fractional CPUs on small boxes),
  and no per-strategy app to create when a strategy is added. Multiplexing pays off when
  models outnumber what a replica can hold, which is not the case here, and its LRU keeps
  old versions alive unless the version is in the key.
* **Hot swap = a model watcher in each replica that follows the registry.** The registry's
  database is the single source of truth for "which version is active", whoever changes it
  (``lab models activate``, the training flow, a rollback). Each replica polls it every
  ``poll_interval_s`` (one indexed query per strategy), loads a changed version off the
  event loop, verifies its hash, and swaps one immutable ``ActiveModel`` into place. No
  ``serve deploy``/``serve.run`` is involved, so no replica restarts and no request fails:
  a request uses the model it picked when it started and is tagged with that model's
  version. A version that fails to load leaves the old one serving (reported in ``/models``).
* **Batching**: when other requests are in the replica, a request's rows go through
  ``@serve.batch``, which runs one ``predict`` per distinct model over the requests queued by
  then. ``batch_wait_timeout_s`` is 0 by default: the batch is what piled up while the replica
  was busy, and no request waits for company (with 32 concurrent 1-row callers a 2 ms wait
  gave 0.75x the throughput of no batching on the dev box, since the callers' own round
  trips, not predict, bound it; without the wait, 0.8-1.2x over runs). A lone request
  predicts at once, and so does every request with ``max_batch_size`` 1 (batching off).
  Batching saves the fixed cost of a ``predict`` call per request (~0.1 ms); the HTTP round
  trip costs more.
* **Hot path**: HAProxy hands the request straight to the replica's own HTTP server (Ray
  2.60's direct ingress; no Python proxy, no actor call: ``serving.launch.SERVE_ENV``). The
  body is read once and parsed by pydantic's JSON parser straight into ``PredictRequest``;
  rows become the matrix in one pass (``serving.rows``); the response is encoded with orjson
  and returned as bytes, skipping FastAPI's response re-validation (``PredictResponse``
  still documents it in the OpenAPI schema). No per-request access log.
* **Features from stored bars** (``{strategy, symbols, as_of}``): computed off the event loop
  by the trading engine's own path (``lab.trading.market``, see ``serving.symbols``), with the
  trading config the replica reads from ``LAB_CONFIG`` (per request, so edits apply). Symbols
  without a usable row are a 422 ``bad_symbols`` naming them by reason (``not_pairs``,
  ``not_single``, ``unknown``, ``no_bars``, ``undefined`` features at ``as_of``).
* **Limits and rules**: the body is read with a byte cap (413) before parsing; rows are
  capped too (413). Missing, extra or non-numeric features are a 422 naming them; ``null``
  and ``NaN`` are "missing value" (XGBoost's learned default branch) and ``inf`` is a 422
  (see ``serving.rows``). Unknown strategy 404; known strategy without a loadable active
  version 503 with the reason. Every error is an HTTP answer; none escapes the replica.
* **Auth**: with a token (``lab serve`` passes its ``LAB_SERVE_TOKEN`` as an app argument;
  ``serve deploy`` replicas read their own ``LAB_SERVE_TOKEN``), ``/predict`` and ``/models``
  need ``Authorization: Bearer <token>``; ``/healthz`` and the OpenAPI schema stay open.
  HAProxy binds 127.0.0.1 unless ``lab serve --host`` says otherwise.
* **Metrics** (``ray.util.metrics``, exported by Ray with a ``ray_`` prefix):
  ``lab_serve_requests_total{strategy,status}``, ``lab_serve_request_latency_s{strategy}``,
  ``lab_serve_model_version{strategy}`` and ``lab_serve_batch_size``.

Runtime knobs live in ``user_config`` (``ServingOptions``), so ``serve deploy`` changes them
in place; the database URL is an application argument (``build_app``).
"""

import asyncio
import hmac
import logging
import time
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from ray import serve
from ray.serve import Application

from lab.errors import LabError
from lab.trading.calendar import in_future
from lab.trading.market import HISTORY_DAYS
from serving.rows import FeatureProblems, rows_to_matrix
from serving.store import ActiveModel, ModelStore, StrategyState
from serving.symbols import EARLIEST_AS_OF, SymbolProblems, before_earliest, decision_time, symbol_matrix

__all__ = ["PredictionService", "PredictRequest", "PredictResponse", "ServingOptions", "build_app", "APP_NAME"]

APP_NAME = "lab-predictions"
logger = logging.getLogger("ray.serve")

_LATENCY_BOUNDARIES_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
_BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]
_OPEN_PATHS = ("/healthz",)


class PredictRequest(BaseModel):
    """Either feature ``rows`` or ``symbols`` (+ ``as_of``) whose features are computed from stored bars."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = Field(description="strategy name, e.g. 'momentum'")
    rows: list[dict[str, Any]] | None = Field(
        default=None,
        description="one object per row: {feature: number | null}; null/NaN = missing value, inf is rejected",
    )
    symbols: list[str] | None = Field(default=None, description="compute the features of these symbols instead")
    as_of: datetime | date | None = Field(
        default=None,
        description="decision time for `symbols`: an ISO datetime (naive = UTC; only the bars complete by "
                    "then are used) or a date, meaning that day's bar (as_of is its midnight-UTC label); "
                    f"default: now. One in the future, or dated before {EARLIEST_AS_OF.isoformat()}, is refused")
    ignore_extra: bool = Field(default=False, description="drop features the model does not use instead of a 422")

    @model_validator(mode="after")
    def _one_input(self) -> "PredictRequest":
        if (self.rows is None) == (self.symbols is None):
            raise ValueError("give exactly one of `rows` or `symbols`")
        if self.as_of is not None and self.symbols is None:
            raise ValueError("`as_of` only applies with `symbols`")
        if self.as_of is not None and in_future(self.as_of, now := datetime.now(UTC)):
            raise ValueError(f"`as_of` {self.as_of.isoformat()} is in the future (now "
                             f"{now.isoformat(timespec='seconds')}): features exist for bars up to now")
        if self.as_of is not None and before_earliest(self.as_of):
            raise ValueError(f"`as_of` {self.as_of.isoformat()} is before {EARLIEST_AS_OF.isoformat()}, the "
                             f"earliest served: bars and their {HISTORY_DAYS}-day feature lookback start in 1677")
        return self


class PredictResponse(BaseModel):
    strategy: str
    model_version: int = Field(description="the registry version (per strategy) that made these predictions")
    model_id: int = Field(description="the registry id of that version")
    task: str = Field(description="classification: class-1 probabilities; regression: values")
    feature_names: list[str] = Field(description="the feature order the model used")
    predictions: list[float]
    payoff: dict[str, float] | None = Field(
        description="mean forward return of the model's class-1 (`win`) and class-0 (`loss`) training rows, "
                    "what the signal engine prices a prediction at; null for a version stored without one")
    symbols: list[str] | None = None
    as_of: datetime | None = Field(default=None, description="the decision time the `symbols` features are at")


class ServingOptions(BaseModel):
    """``user_config`` of the deployment: changeable in place with ``serve deploy``."""

    model_config = ConfigDict(extra="forbid")

    poll_interval_s: float = Field(default=1.0, gt=0, le=300)
    max_rows: int = Field(default=10_000, gt=0)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    max_batch_size: int = Field(default=64, ge=1, description="1 turns batching off")
    batch_wait_timeout_s: float = Field(default=0.0, ge=0)


def _error(status: int, code: str, message: str, **extra: Any) -> HTTPException:
    return HTTPException(status, detail={"error": code, "message": message, **extra})


class _Metrics:
    """Created inside the replica (Ray metrics must not be created at import time)."""

    def __init__(self) -> None:
        from ray.util import metrics

        self.requests = metrics.Counter(
            "lab_serve_requests_total", description="Prediction requests by strategy and HTTP status.",
            tag_keys=("strategy", "status"))
        self.latency = metrics.Histogram(
            "lab_serve_request_latency_s", description="Prediction request latency inside the replica.",
            boundaries=_LATENCY_BOUNDARIES_S, tag_keys=("strategy",))
        self.model_version = metrics.Gauge(
            "lab_serve_model_version", description="Model version served per strategy (0 = none).",
            tag_keys=("strategy",))
        self.batch_size = metrics.Histogram(
            "lab_serve_batch_size", description="Requests per batched predict call.", boundaries=_BATCH_BOUNDARIES)

    def publish(self, states: dict[str, StrategyState]) -> None:
        for name, state in states.items():
            self.model_version.set(state.model.version if state.model else 0, tags={"strategy": name})


def _parse(body: bytes) -> PredictRequest:
    try:
        return PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        summary = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors)
        raise _error(422, "invalid_request", summary, errors=errors) from None


def _describe(state: StrategyState) -> dict[str, Any]:
    model = state.model
    return {
        "model_version": model.version if model else None,
        "model_id": model.model_id if model else None,
        "task": model.task if model else None,
        "feature_names": list(model.feature_names) if model else None,
        "loaded_at": model.loaded_at.isoformat() if model else None,
        "problem": state.problem,
    }


api = FastAPI(
    title="Strategy lab predictions",
    version="1",
    description="Active model of every strategy, hot-swapped when the registry activates a version.",
)

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong bearer token"},
    404: {"description": "unknown strategy"},
    413: {"description": "payload over max_body_bytes or max_rows"},
    422: {"description": "invalid request; missing/extra/non-numeric/infinite features are named; "
                         "`bad_symbols`: symbols that are not a pair \"AAA/BBB\" (pairs) or not one symbol "
                         "(other strategies), are unknown, have no bars up to as_of, or have features "
                         "undefined (NaN) at as_of, named by reason"},
    503: {"description": "the strategy has no loadable active model, or features cannot be computed "
                         "(e.g. an unreadable LAB_CONFIG); the reason is given"},
}


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=128,
    logging_config={"enable_access_log": False},  # per-request CPU; the metrics count requests by status
    health_check_period_s=10,
    health_check_timeout_s=30,
    user_config=ServingOptions().model_dump(),
)
@serve.ingress(api)
class PredictionService:
    async def __init__(self, database_url: str | None = None, token: SecretStr | None = None):
        """``database_url`` and ``token`` default to the replica's LAB_DATABASE_URL (else LAB_HOME's
        SQLite file) and LAB_SERVE_TOKEN."""
        from lab.db import connect
        from lab.registry import ModelRegistry
        from lab.settings import get_settings
        from lab.strategy import available_strategies

        settings = get_settings()
        token = token or settings.serve_token
        self._token = token.get_secret_value().encode() if token else None
        self._engine = connect(database_url or settings.database_url, upgrade=False)
        self._config_path = settings.lab_config
        self._store = ModelStore(ModelRegistry(self._engine, settings.models_dir), available_strategies())
        self._options = ServingOptions()
        self._in_flight = 0  # /predict requests in this replica (batch only when others are there)
        self._metrics = _Metrics()
        await asyncio.to_thread(self._store.refresh)
        self._metrics.publish(self._store.states)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def reconfigure(self, config: dict[str, Any]) -> None:
        self._options = ServingOptions.model_validate(config)
        self._predict_batched.set_max_batch_size(self._options.max_batch_size)
        self._predict_batched.set_batch_wait_timeout_s(self._options.batch_wait_timeout_s)

    def check_health(self) -> None:
        if self._watcher.done():
            raise RuntimeError("the model watcher stopped; the replica would serve stale models")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._options.poll_interval_s)
            try:
                swapped = await asyncio.to_thread(self._store.refresh)
            except Exception:
                logger.exception("model watcher: registry refresh failed; still serving current models")
                continue
            for model in swapped:
                logger.info("hot swap: %s now serves v%d (id %d)", model.strategy, model.version, model.model_id)
            self._metrics.publish(self._store.states)

    # --- HTTP ----------------------------------------------------------------------------

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        states = self._store.states
        return {
            "status": "ok",
            "replica": serve.get_replica_context().replica_id.unique_id,
            "strategies": len(states),
            "models_ready": sum(1 for s in states.values() if s.model is not None),
        }

    @api.get("/models", responses={401: _ERRORS[401]})
    async def models(self, request: Request) -> dict[str, Any]:
        """The version each strategy is served with, and why one is missing or stale."""
        self._authorize(request)
        return {"strategies": {name: _describe(state) for name, state in self._store.states.items()}}

    @api.post("/predict", response_model=PredictResponse, openapi_extra=_PREDICT_BODY, responses=_ERRORS)
    async def predict(self, request: Request) -> Response:
        started = time.perf_counter()
        strategy, status = "unknown", 500
        self._in_flight += 1
        try:
            self._authorize(request)
            payload = _parse(await self._read_body(request))
            if payload.strategy in self._store.states:
                strategy = payload.strategy  # a metrics tag only for known names (bounded cardinality)
            model = self._model_for(payload.strategy)
            count = len(payload.rows if payload.rows is not None else payload.symbols)
            if count > self._options.max_rows:
                raise _error(413, "too_many_rows", f"{count} rows; at most {self._options.max_rows} per request")
            as_of = None
            if payload.rows is not None:
                matrix = self._rows_matrix(payload, model)
            else:
                as_of = decision_time(payload.as_of, datetime.now(UTC))
                matrix = await asyncio.to_thread(self._symbols_matrix, payload, model, as_of)
            if not len(matrix):
                values = np.empty(0)
            elif self._in_flight > 1 and self._options.max_batch_size > 1:
                values = await self._predict_batched((model, matrix))
            else:
                values = model.predict(matrix)
            status = 200
            return Response(orjson.dumps({
                "strategy": strategy, "model_version": model.version, "model_id": model.model_id,
                "task": model.task, "feature_names": model.feature_names, "predictions": values.tolist(),
                "payoff": model.payoff, "symbols": payload.symbols, "as_of": as_of,
            }), media_type="application/json")
        except HTTPException as exc:
            status = exc.status_code
            raise
        finally:
            self._in_flight -= 1
            tags = {"strategy": strategy}
            self._metrics.requests.inc(1, tags={**tags, "status": str(status)})
            self._metrics.latency.observe(time.perf_counter() - started, tags=tags)

    # --- steps ---------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        if self._token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise HTTPException(401, detail={"error": "unauthorized", "message": "a valid bearer token is required"},
                                headers={"WWW-Authenticate": "Bearer"})

    async def _read_body(self, request: Request) -> bytes:
        limit = self._options.max_body_bytes
        too_large = _error(413, "payload_too_large", f"request body over {limit} bytes")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def _model_for(self, strategy: str) -> ActiveModel:
        state = self._store.states.get(strategy)
        if state is None:
            raise _error(404, "unknown_strategy",
                         f"unknown strategy {strategy!r}; known: {', '.join(self._store.states)}")
        if state.model is None:
            raise _error(503, "no_active_model", state.problem or f"no model for {strategy!r}")
        return state.model

    @staticmethod
    def _rows_matrix(payload: PredictRequest, model: ActiveModel) -> np.ndarray:
        rows = payload.rows
        if payload.ignore_extra:
            rows = [{k: row[k] for k in model.feature_names if k in row} if isinstance(row, dict) else row
                    for row in rows]
        try:
            return rows_to_matrix(rows, model.feature_names)
        except FeatureProblems as problems:
            raise _error(422, "bad_features", f"{model.strategy} v{model.version}: {problems}",
                         **problems.as_dict()) from None

    def _symbols_matrix(self, payload: PredictRequest, model: ActiveModel, as_of: datetime) -> np.ndarray:
        """Blocking (database, feature computation): runs in a worker thread."""
        from lab.config import load_config
        from lab.strategy import get_strategy

        try:
            config = load_config(self._config_path)
            return symbol_matrix(self._engine, config, get_strategy(model.strategy).feature_set,
                                 payload.symbols, as_of, model.feature_names)
        except SymbolProblems as problems:
            raise _error(422, "bad_symbols", f"{model.strategy}: {problems}", **problems.as_dict()) from None
        except LabError as exc:
            raise _error(503, "features_unavailable", f"cannot compute {model.strategy} features: {exc}") from None

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _predict_batched(self, jobs: list[tuple[ActiveModel, np.ndarray]]) -> list[np.ndarray]:
        """One predict per distinct model in the batch; results split back per request."""
        self._metrics.batch_size.observe(len(jobs))
        results: list[np.ndarray] = [np.empty(0)] * len(jobs)
        by_model: dict[int, list[int]] = {}
        for index, (model, _) in enumerate(jobs):
            by_model.setdefault(id(model), []).append(index)
        for indexes in by_model.values():
            model = jobs[indexes[0]][0]
            matrices = [jobs[i][1] for i in indexes]
            values = model.predict(matrices[0] if len(matrices) == 1 else np.concatenate(matrices))
            bounds = np.cumsum([len(m) for m in matrices])[:-1]
            for index, part in zip(indexes, np.split(values, bounds), strict=True):
                results[index] = part
        return results


class AppArgs(BaseModel):
    """Application arguments (``args:`` in serving/config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    database_url: str | None = Field(
        default=None, description="registry database; default: LAB_DATABASE_URL / LAB_HOME of the replica")


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Application builder for ``serve deploy`` (``import_path: serving.app:build_app``)."""
    parsed = AppArgs.model_validate(args or {})
    return PredictionService.bind(database_url=parsed.database_url)
