"""``lab config``: validate the user's configuration file."""

from __future__ import annotations

from pathlib import Path

import typer

from lab.cli._common import console, err_console
from lab.config import check_config, config_warnings, load_config
from lab.settings import get_settings

app = typer.Typer(help="Configuration (config/trading.json).", no_args_is_help=True)


@app.command("check")
def check_cmd(path: Path | None = typer.Argument(None, help="defaults to LAB_CONFIG or config/trading.json")) -> None:
    """Validate the file: one line per problem, non-zero exit when any; then a warning line
    for each setting that is valid but cannot work as configured."""
    path = path or get_settings().lab_config
    problems = check_config(path)
    for problem in problems:
        err_console.print(problem, markup=False, highlight=False)
    if problems:
        raise typer.Exit(1)
    warnings = config_warnings(load_config(path))
    for warning in warnings:
        err_console.print(f"{path}: warning: {warning}", markup=False, highlight=False)
    console.print(f"{path}: ok" + (f" ({len(warnings)} warning{'s' * (len(warnings) > 1)})" if warnings else ""))
