"""Serving benchmark: the Serve endpoint vs the same model behind plain FastAPI/uvicorn vs in-process.

Loopback only and bounded: a temporary LAB_HOME with a SQLite registry, one real XGBoost
model (12 features, 100 trees), a private local Ray (2 CPUs). Each HTTP target gets the same
pre-serialized payloads (1 row and 500 rows) for ``--requests`` (2,000) requests at
``--concurrency`` (16); the FastAPI/uvicorn reference parses, validates (``PredictRequest``,
``serving.rows``) and encodes (orjson) exactly like the service and uses the same loader, so
the difference is Serve's ingress (HAProxy to the replica's own HTTP server, as ``lab serve``
runs it) and batching. The floor is raw XGBoost ``inplace_predict`` in process. Latencies are
client-side wall times. Serve is started by ``serving.launch.start_serve``, with the settings
``lab serve`` runs with.

Keys as the issue defines them: ``p50_ratio_vs_fastapi_500rows`` and ``p99_ms_500rows``
from the 500-row runs; ``p50_1row_ms_over_raw`` is Serve's 1-row p50 (the concurrency-16
run) minus the raw predict's p50; ``batch_throughput_gain`` is rows/s of 32 concurrent 1-row
callers against the deployment as configured over the same deployment with
``max_batch_size`` 1 (batching off: each request predicts on its own). For context (not
goals): the same figures for one sequential caller (``*_sequential``), a no-op Serve
deployment behind the same HAProxy (``serve_noop``: Serve's own floor on this machine), and
the load average before and after. Every HTTP run also reports ``cpu_ms_per_request`` by
process (client: this process, httpx and the Ray driver; HAProxy; Serve's Python proxy, here
only HAProxy's fallback while no replica is up; each replica; the FastAPI worker; the rest of
Ray, HAProxy's manager included): where the time goes, and what bounds throughput on few
cores.

Prints one JSON object as the last line. ``--quick`` runs 300 requests per measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
from fastapi import FastAPI, HTTPException, Request, Response

# this file is named like the package it measures: keep `import serving` pointing at the package
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

FEATURES = [f"f{i:02d}" for i in range(12)]
STRATEGY = "momentum"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stats(latencies_s: list[float], elapsed_s: float, errors: int, rows: int) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "requests_per_s": round(len(ms) / elapsed_s, 1),
        "rows_per_s": round(len(ms) * rows / elapsed_s, 1),
        "errors": errors,
    }


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of this process and every process under it, by role (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, cpu, roles = {}, {}, {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rpartition(")")[2].split()
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        pid = int(proc.name)
        parents[pid], cpu[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
        roles[pid] = ("fastapi" if "--fastapi-worker" in title else "serve_proxy" if "ray::ProxyActor" in title
                      else "haproxy" if "haproxy" in title.split(" ", 1)[0]
                      else f"replica_{title.split(':')[3]}" if title.startswith("ray::ServeReplica:") else "ray_other")
    totals = {"client": cpu.get(os.getpid(), 0.0)}
    for pid in cpu:
        ancestor = parents.get(pid, 0)
        while ancestor > 1 and ancestor != os.getpid():
            ancestor = parents.get(ancestor, 0)
        if ancestor == os.getpid():
            totals[roles[pid]] = totals.get(roles[pid], 0.0) + cpu[pid]
    return totals


async def _load(url: str, body: bytes, requests: int, concurrency: int, rows: int) -> dict:
    latencies: list[float] = []
    errors = 0
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits,
                                 headers={"content-type": "application/json"}) as http:
        async def caller() -> None:
            nonlocal errors
            for _ in remaining:
                started = time.perf_counter()
                try:
                    response = await http.post(url, content=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        for _ in range(min(50, requests)):  # warm-up: connections, caches
            await http.post(url, content=body)
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = {role: (seconds - cpu_before.get(role, 0.0)) * 1000 / requests
               for role, seconds in _cpu_seconds().items()}
    return {**_stats(latencies, elapsed, errors, rows),
            "cpu_ms_per_request": {role: round(ms, 2) for role, ms in sorted(cpu.items()) if ms >= 0.05}}


def _in_process(booster, matrix: np.ndarray, repeats: int) -> dict[str, float]:
    latencies = []
    for _ in range(repeats):
        started = time.perf_counter()
        booster.inplace_predict(matrix)
        latencies.append(time.perf_counter() - started)
    return _stats(latencies, sum(latencies), 0, len(matrix))


def _payload(rows: pd.DataFrame) -> bytes:
    return json.dumps({"strategy": STRATEGY, "rows": rows.to_dict("records")}).encode()


def _train(path: Path) -> Path:
    from lab.models.predictor import XGBPredictor

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(5000, len(FEATURES))), columns=FEATURES)
    label = (frame.iloc[:, :3].sum(axis=1) + rng.normal(size=len(frame)) > 0).astype(int)
    params = {"n_estimators": 100, "max_depth": 4}
    return XGBPredictor("classification", params, strategy=STRATEGY).train(frame, label).save(path)


def _fastapi_worker(model_path: str, port: int) -> None:
    """The reference: one uvicorn process, same loader, parsing, validation and encoding, no Serve."""
    import uvicorn

    from serving.app import PredictRequest
    from serving.rows import FeatureProblems, rows_to_matrix
    from serving.store import load_model

    predictor = load_model(Path(model_path))
    api = FastAPI()

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @api.post("/predict")
    async def predict(request: Request) -> Response:
        payload = PredictRequest.model_validate_json(await request.body())
        try:
            matrix = rows_to_matrix(payload.rows, predictor.feature_names)
        except FeatureProblems as problems:
            raise HTTPException(422, str(problems)) from None
        return Response(orjson.dumps({"strategy": payload.strategy, "feature_names": predictor.feature_names,
                                      "predictions": predictor.predict(matrix).tolist()}),
                        media_type="application/json")

    uvicorn.run(api, host="127.0.0.1", port=port, log_level="warning")


def _wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _serve_noop():
    """A bare Serve deployment: HAProxy to the replica and back, with no work."""
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=128)  # as the service
    class NoOp:
        async def __call__(self, request: Request) -> dict:
            await request.body()
            return {}

    return NoOp.bind()


def run(requests: int, concurrency: int, quick: bool) -> dict:
    load_before = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="lab-bench-serving-"))
    os.environ["LAB_HOME"] = str(home)
    import ray
    from ray import serve

    from lab.db import connect
    from lab.registry import ModelRegistry
    from serving.app import PredictionService
    from serving.launch import start_serve
    from serving.store import load_model

    url = f"sqlite:///{home / 'lab.db'}"
    registry = ModelRegistry(connect(url), home / "models")
    version = registry.activate(registry.save_version("trading", STRATEGY, _train(home / "m.ubj")).id)
    model_path = registry.model_file(version)
    predictor = load_model(model_path)

    rng = np.random.default_rng(1)
    one, five_hundred = (pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES) for n in (1, 500))
    bodies = {"1row": (_payload(one), 1), "500rows": (_payload(five_hundred), 500)}
    results: dict = {"requests": requests, "concurrency": concurrency, "quick": quick}
    repeats = max(requests, 1000)
    results["in_process"] = {"1row": _in_process(predictor.booster, one.to_numpy(), repeats),
                             "500rows": _in_process(predictor.booster, five_hundred.to_numpy(), repeats)}

    fastapi_port = _free_port()
    worker = subprocess.Popen([sys.executable, __file__, "--fastapi-worker", str(model_path), str(fastapi_port)])
    ray.init(address="local", num_cpus=2, object_store_memory=300 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    try:
        start_serve(port=_free_port())
        from ray.serve.context import _get_global_client

        serve_url = f"http://127.0.0.1:{_get_global_client().http_config.port}"
        deployment = PredictionService.options(ray_actor_options={"num_cpus": 0.25})
        serve.run(deployment.bind(database_url=url), name="bench", route_prefix="/")
        unbatched = PredictionService.options(ray_actor_options={"num_cpus": 0.25},
                                              user_config={"max_batch_size": 1})
        serve.run(unbatched.bind(database_url=url), name="bench-nobatch", route_prefix="/nobatch")
        serve.run(_serve_noop(), name="bench-noop", route_prefix="/noop")
        _wait_http(f"http://127.0.0.1:{fastapi_port}/healthz")
        targets = {"serve": f"{serve_url}/predict", "fastapi": f"http://127.0.0.1:{fastapi_port}/predict"}
        for name, target in targets.items():
            results[name] = {size: asyncio.run(_load(target, body, requests, concurrency, rows))
                             for size, (body, rows) in bodies.items()}
            results[name]["1row_sequential"] = asyncio.run(_load(target, bodies["1row"][0], requests, 1, 1))
        results["serve_noop"] = {
            "1row": asyncio.run(_load(f"{serve_url}/noop", bodies["1row"][0], requests, concurrency, 1)),
            "1row_sequential": asyncio.run(_load(f"{serve_url}/noop", bodies["1row"][0], requests, 1, 1))}
        batched = asyncio.run(_load(targets["serve"], bodies["1row"][0], requests, 32, 1))
        plain = asyncio.run(_load(f"{serve_url}/nobatch/predict", bodies["1row"][0], requests, 32, 1))
        results["batching"] = {"callers": 32, "batched": batched, "unbatched": plain}
    finally:
        serve.shutdown()
        ray.shutdown()
        worker.terminate()
        worker.wait(timeout=30)

    errors = sum(block["errors"] for target in ("serve", "fastapi") for block in results[target].values())
    errors += batched["errors"] + plain["errors"]
    raw_1 = results["in_process"]["1row"]["p50_ms"]
    return {
        "errors": errors,
        "p50_ratio_vs_fastapi_500rows": round(results["serve"]["500rows"]["p50_ms"]
                                              / results["fastapi"]["500rows"]["p50_ms"], 3),
        "p99_ms_500rows": results["serve"]["500rows"]["p99_ms"],
        "p50_1row_ms_over_raw": round(results["serve"]["1row"]["p50_ms"] - raw_1, 3),
        "batch_throughput_gain": round(batched["rows_per_s"] / plain["rows_per_s"], 3),
        "p50_1row_ms_over_raw_sequential": round(results["serve"]["1row_sequential"]["p50_ms"] - raw_1, 3),
        "p50_1row_ms_serve_noop_sequential": results["serve_noop"]["1row_sequential"]["p50_ms"],
        "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        **results,
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--fastapi-worker":
        _fastapi_worker(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 requests per measurement (under a minute)")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    requests = args.requests or (300 if args.quick else 2000)
    print(json.dumps(run(requests, args.concurrency, args.quick)))


if __name__ == "__main__":
    main()
