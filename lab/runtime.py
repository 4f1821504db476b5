"""What a command needs to run: settings, validated config, the migrated database, the
registry; and how the lab joins or starts Ray.

Ray auth: Ray 2.60 enables token authentication for the local clusters it starts, and the
lab keeps that default for its own local Ray (the token is written to ``~/.ray/auth_token``).
To join a cluster (``RAY_ADDRESS``) the driver's ``RAY_AUTH_MODE`` must match how that
cluster was started (``token``, or ``disabled``): measured here, a token driver on a cluster
started without it fails with ``OwnerDiedError`` on the first object fetch (and Ray's notes
report the reverse failing with ``InvalidAuthToken``). The lab cannot see the cluster's
mode, so it does not guess or rewrite the variable; it passes the user's setting through and
names it when joining fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine

from lab.config import TradingConfig, load_config
from lab.db import connect
from lab.errors import ConfigError, LabError
from lab.registry import ModelRegistry
from lab.settings import Settings, get_settings

__all__ = ["LabContext", "open_lab", "ensure_ray"]


@dataclass
class LabContext:
    settings: Settings
    engine: Engine

    @cached_property
    def config(self) -> TradingConfig:
        """The trading config LAB_CONFIG names (default: config/trading.json, from the working folder)."""
        path = self.settings.lab_config
        if not path.exists():
            raise ConfigError([f"{path}: file not found (the trading config, set by LAB_CONFIG; relative to "
                               f"{Path.cwd()}): run from the project folder or point LAB_CONFIG at the file"])
        return load_config(path)

    @cached_property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.engine, self.settings.models_dir)


def open_lab(settings: Settings | None = None) -> LabContext:
    """Connect (and migrate) the configured database."""
    settings = settings or get_settings()
    return LabContext(settings=settings, engine=connect(settings.database_url))


def ensure_ray(settings: Settings | None = None, *, num_cpus: int | None = None,
               include_dashboard: bool = False) -> None:
    """Join ``RAY_ADDRESS`` when set, else start a private local Ray sized for this machine."""
    import ray

    if ray.is_initialized():
        return
    settings = settings or get_settings()
    runtime_env = {"env_vars": {"LAB_HOME": str(settings.home)}}
    if settings.ray_address:
        try:
            ray.init(address=settings.ray_address, runtime_env=runtime_env, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            mode = os.environ.get("RAY_AUTH_MODE", "unset")
            raise LabError(f"cannot join the Ray cluster at RAY_ADDRESS={settings.ray_address}: {exc} "
                           f"(RAY_AUTH_MODE={mode}: it must match how the cluster was started)") from None
        return
    ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count() or 2,
        object_store_memory=512 * 1024**2,
        include_dashboard=include_dashboard,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
        runtime_env=runtime_env,
    )
