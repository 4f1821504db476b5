"""Start the prediction service on the lab's Ray (local, or the cluster at ``RAY_ADDRESS``)."""

from __future__ import annotations

import time

import httpx

from lab.errors import LabError
from lab.runtime import ensure_ray
from lab.settings import Settings

__all__ = ["SERVE_ENV", "start_serve", "start_service", "wait_until_serving"]

#: Serve's request path costs milliseconds of CPU per request in the proxy and the replica,
#: against ~0.1 ms for a 1-row predict. On the 2-core dev box, proxy + replica CPU per request
#: at 16 concurrent callers went from ~7 to ~4.5 ms for a no-op, ~8 to ~6 ms for a 1-row
#: predict and ~15.5 to ~8 ms for a 500-row one with these and no access log (measured by
#: process, ``cpu_ms_per_request`` of ``benchmarks/serving.py``). They reach the controller,
#: the proxies and the replicas through the controller's runtime_env (Serve reads them at
#: import, so setting them in this process alone would do nothing).
SERVE_ENV = {
    # the replica's handlers are async and short (blocking work runs in threads): run them
    # on the replica's own event loop instead of paying a thread hop per request
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    # route on the proxy's event loop, not a second loop in another thread
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    # request-path log lines are buffered (an ERROR line flushes at once)
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    # Serve's logs go to the files under the Ray session's logs/serve only
    "RAY_SERVE_LOG_TO_STDERR": "0",
    # the proxy hands the request body to the replica as a Ray object; inline it up to
    # 2 MiB (~6,000 rows) rather than through the object store (Ray's default is 100 KiB)
    "RAY_max_direct_call_object_size": str(2 * 1024**2),
}


def start_serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Start Serve (proxy on ``host:port``) with the lab's settings; on a running Serve they do not change.

    No per-request access log: ``lab_serve_requests_total{strategy,status}`` and the latency
    histogram count every request, and writing the log line costs the proxy and the replica
    CPU on every request.
    """
    from ray import serve

    serve.start(http_options={"host": host, "port": port}, logging_config={"enable_access_log": False},
                controller_options={"runtime_env": {"env_vars": SERVE_ENV}})


def start_service(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
                  num_cpus: float = 0.25) -> str:
    """Deploy (or update in place) the prediction app and return its base URL."""
    ensure_ray(settings)
    from ray import serve

    from serving.app import APP_NAME, PredictionService

    start_serve(host, port)
    # a URL with a password stays out of the Serve config: replicas read LAB_DATABASE_URL themselves
    database_url = None if settings.lab_database_url else settings.database_url
    # replicas compute {symbols, as_of} features with the trading config this process sees
    env = {"LAB_CONFIG": str(settings.lab_config.resolve())}
    deployment = PredictionService.options(num_replicas=replicas,
                                           ray_actor_options={"num_cpus": num_cpus, "runtime_env": {"env_vars": env}})
    serve.run(deployment.bind(database_url=database_url), name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def wait_until_serving(url: str, strategies: list[str], *, token: str | None = None,
                       timeout_s: float = 60.0) -> dict:
    """Block until ``/models`` shows an active, loaded version for every strategy named."""
    deadline = time.monotonic() + timeout_s
    last: dict | str = "no answer"
    while time.monotonic() < deadline:
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            last = httpx.get(f"{url}/models", headers=headers, timeout=5.0).json()
            loaded = {name for name, m in last.get("strategies", {}).items() if m.get("model_version") is not None}
            if set(strategies) <= loaded:
                return last
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise LabError(f"prediction service at {url} did not load models for {', '.join(strategies)} "
                   f"within {timeout_s:.0f}s (last /models: {last})")
