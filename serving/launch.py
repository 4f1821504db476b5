"""Start the prediction service on the lab's Ray (local, or the cluster at ``RAY_ADDRESS``)."""

from __future__ import annotations

import time

import httpx

from lab.errors import LabError
from lab.runtime import ensure_ray
from lab.settings import Settings

__all__ = ["start_service", "wait_until_serving"]


def start_service(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
                  num_cpus: float = 0.25) -> str:
    """Deploy (or update in place) the prediction app and return its base URL."""
    ensure_ray(settings)
    from ray import serve

    from serving.app import APP_NAME, PredictionService

    serve.start(http_options={"host": host, "port": port})
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
