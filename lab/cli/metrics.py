"""``lab metrics``: the Prometheus exporter of the lab's runtime state."""

from __future__ import annotations

import threading

import typer

from lab.cli._common import console, free_port
from lab.db import connect, redact_url
from lab.observability import DEFAULT_PORT, start_exporter
from lab.settings import get_settings

app = typer.Typer(help="Prometheus metrics of the lab (portfolio, orders, data, research).", no_args_is_help=True)


@app.command("serve")
def serve_cmd(
    port: int = typer.Option(DEFAULT_PORT, min=0, max=65535, help="port for /metrics"),
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 in a container)"),
    min_interval: float = typer.Option(5.0, help="seconds between two reads of the database"),
) -> None:
    """Serve /metrics until interrupted."""
    free_port(host, port)
    url = get_settings().database_url
    server, _ = start_exporter(connect(url), port=port, addr=host, min_interval_s=min_interval)
    console.print(f"metrics of {redact_url(url)} on http://{host}:{server.server_port}/metrics", highlight=False)
    try:
        threading.Event().wait()
    finally:
        server.shutdown()
