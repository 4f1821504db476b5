"""Entry point of the ``lab`` command: subcommands are registered here, one line each."""

from __future__ import annotations

import sys

import typer

from lab.cli import config, db, models
from lab.cli._common import err_console
from lab.errors import LabError

app = typer.Typer(
    help="Strategy lab: universe -> features -> tuned models -> Serve -> paper trading -> boards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
app.add_typer(models.app, name="models")
app.add_typer(config.app, name="config")


@app.command()
def demo() -> None:
    """Run the main job on the embedded default (SQLite, local Ray, offline data)."""
    from lab.demo import run_demo

    run_demo()


def main() -> None:
    """Run the CLI; a LabError prints one clear message and exits 1, without a traceback."""
    try:
        app()
    except LabError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
