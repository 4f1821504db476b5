"""``lab serve``: the prediction service on local Ray (or the cluster at ``RAY_ADDRESS``)."""

from __future__ import annotations

import signal
import time

import typer

from lab.cli._common import console, err_console, free_port
from lab.runtime import open_lab
from lab.settings import get_settings

__all__ = ["serve_cmd"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="address the HTTP proxy binds (loopback unless you mean it)"),
    port: int = typer.Option(8000, min=1, max=65535, help="HTTP port"),
    replicas: int = typer.Option(1, min=1, help="replicas of the prediction deployment"),
    num_cpus: float = typer.Option(0.25, min=0.01, help="CPUs reserved per replica (fractional leaves room for Tune)"),
    wait: bool | None = typer.Option(None, help="stay in the foreground (default: yes on local Ray, no on a cluster)"),
) -> None:
    """Serve every strategy's active model over HTTP; activations hot-swap within seconds.
    Run again on a cluster whose Serve runs, it updates the app in place (same host and port)."""
    settings = get_settings()
    if not settings.ray_address:  # a private local Ray has no Serve yet: refuse a busy port before any work
        free_port(host, port)
    open_lab(settings)  # migrates the registry database before replicas read it
    if host not in _LOOPBACK and settings.serve_token is None:
        err_console.print(f"[yellow]warning:[/] binding {host} without LAB_SERVE_TOKEN: anyone who can reach "
                          "this port can call the service")
    from serving.launch import start_service

    url = start_service(settings, host=host, port=port, replicas=replicas, num_cpus=num_cpus)
    console.print(f"prediction service: [bold]{url}[/]  (POST {url}/predict, GET {url}/models, docs {url}/docs)")
    if settings.serve_token is not None:
        console.print("bearer token required (LAB_SERVE_TOKEN)")
    if wait if wait is not None else not settings.ray_address:
        console.print("serving; Ctrl-C stops it")
        # a SIGTERM (kill, a supervisor) takes Ctrl-C's path: Serve shut down, then Ray at exit.
        # Otherwise the process dies mid-way, printing Ray's stack traces, and can leave Serve's
        # proxy running without a parent, holding the port.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            from ray import serve

            serve.shutdown()
