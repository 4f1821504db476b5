"""``lab grafana``: render the boards to JSON files and push everything to a Grafana server."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from lab.cli._common import console, output_dir, print_table
from lab.errors import ConfigError
from lab.settings import get_settings

app = typer.Typer(help="Grafana boards: render them as files, or push them to a Grafana.", no_args_is_help=True)


@app.command("render")
def render_cmd(
    out: Path = typer.Option(Path("infra/grafana/dashboards"), help="folder for <uid>.json files"),
) -> None:
    """Write every board as JSON (what the provisioning folder mounts)."""
    from lab.dashboards import write_dashboards

    for path in write_dashboards(output_dir("--out", out)):
        console.print(f"wrote {path}")


@app.command("push")
def push_cmd(
    url: str = typer.Option(..., help="Grafana base URL, e.g. http://127.0.0.1:3000"),
    database_url: str | None = typer.Option(
        None, help="PostgreSQL URL Grafana should read (default: LAB_DATABASE_URL)"),
    prometheus_url: str = typer.Option("http://127.0.0.1:9090", help="Prometheus URL as Grafana sees it"),
) -> None:
    """Create or update the data sources, the folder and every board (token: GRAFANA_TOKEN)."""
    from grafana_client import GrafanaApi

    from lab.dashboards import build_dashboards
    from lab.dashboards.publish import datasources, push

    token = os.environ.get("GRAFANA_TOKEN")
    if not token:
        raise ConfigError(["GRAFANA_TOKEN is not set: create a Grafana service-account token "
                           "(Editor role) and export GRAFANA_TOKEN=glsa_..."])
    sources = datasources(database_url or get_settings().database_url, prometheus_url)
    api = GrafanaApi.from_url(url, credential=token, timeout=10.0)
    with console.status(f"pushing to {url}"):
        report = push(api, sources=sources, boards=build_dashboards().values())
    print_table("Grafana push", ["object", "result"],
                [(name, outcome) for outcome, names in (("created", report.created), ("updated", report.updated),
                                                        ("unchanged", report.unchanged)) for name in names])
