"""Serve the lab's metrics over HTTP for Prometheus (``lab metrics serve``)."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from sqlalchemy import Engine

from lab.observability.collector import LabCollector

__all__ = ["DEFAULT_PORT", "lab_registry", "start_exporter"]

DEFAULT_PORT = 9108


def lab_registry(engine: Engine, *, min_interval_s: float = 5.0) -> CollectorRegistry:
    """A registry holding the lab collector and the exporter's own process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LabCollector(engine, min_interval_s=min_interval_s))
    ProcessCollector(registry=registry)
    return registry


def start_exporter(engine: Engine, *, port: int = DEFAULT_PORT, addr: str = "127.0.0.1",
                   min_interval_s: float = 5.0) -> tuple[WSGIServer, threading.Thread]:
    """Start serving ``/metrics`` in a daemon thread; ``port=0`` picks a free port
    (read it from ``server.server_port``). Stop with ``server.shutdown()``."""
    return start_http_server(port, addr=addr, registry=lab_registry(engine, min_interval_s=min_interval_s))
