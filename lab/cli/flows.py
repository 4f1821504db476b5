"""``lab flows``: list, serve (on schedule) or run the Prefect flows."""

from __future__ import annotations

import json

import typer

from lab.cli._common import console, parse_assignment, print_table
from lab.errors import ConfigError

app = typer.Typer(help="Prefect flows and their schedules.", no_args_is_help=True)


@app.command("list")
def list_cmd() -> None:
    """The deployments and their schedules, and every flow `lab flows run` starts."""
    from flows.deployments import DEPLOYMENTS, FLOWS
    from lab.runtime import open_lab

    schedules = open_lab().config.schedules
    print_table("Deployments", ["deployment", "flow", "cron", "time zone", "parameters"], [
        (d.name, d.flow.name, schedules[d.schedule].cron, schedules[d.schedule].timezone, json.dumps(d.parameters))
        for d in DEPLOYMENTS
    ])
    console.print(f"`lab flows run NAME [-p KEY=VALUE]` starts any of: {', '.join(sorted(FLOWS))}")


@app.command("serve")
def serve_cmd() -> None:
    """Register every deployment with its schedule and run them (blocks; Ctrl-C stops)."""
    from prefect import serve

    from flows.deployments import build_deployments, ensure_concurrency_limits
    from lab.runtime import open_lab

    config = open_lab().config
    limits = ensure_concurrency_limits(config)
    console.print("concurrency limits: " + ", ".join(f"{tag}={n}" for tag, n in limits.items()))
    deployments = build_deployments(config)
    console.print(f"serving {len(deployments)} deployments: {', '.join(d.name for d in deployments)}")
    serve(*deployments)


@app.command("run")
def run_cmd(
    name: str = typer.Argument(..., help="flow name, e.g. run_stock_collection (see `lab flows list`)"),
    param: list[str] = typer.Option([], "--param", "-p", help="KEY=VALUE (VALUE parsed as JSON when it can be)"),
) -> None:
    """Run one flow now."""
    from prefect.exceptions import ParameterBindError, ParameterTypeError

    from flows.deployments import get_flow

    flow = get_flow(name)
    try:
        result = flow(**dict(parse_assignment("--param", p) for p in param))
    except (ParameterBindError, ParameterTypeError) as exc:  # Prefect names each bad or missing parameter
        raise ConfigError([f"{name}: {exc}"]) from None
    console.print_json(data=result, default=str)
