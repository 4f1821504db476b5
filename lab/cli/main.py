"""Entry point of the ``lab`` command: subcommands are registered here, one line each."""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from lab.cli import backtest as backtest_cli
from lab.cli import broker as broker_cli
from lab.cli import config, db, grafana, metrics, models
from lab.cli import demo as demo_cli
from lab.cli import features as features_cli
from lab.cli import flows as flows_cli
from lab.cli import ingest as ingest_cli
from lab.cli import serve as serve_cli
from lab.cli import trade as trade_cli
from lab.cli import tune as tune_cli
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
app.add_typer(flows_cli.app, name="flows")
app.command("demo")(demo_cli.demo)
app.add_typer(broker_cli.app, name="broker")
app.add_typer(broker_cli.kill_switch_app, name="kill-switch")
app.add_typer(grafana.app, name="grafana")
app.add_typer(metrics.app, name="metrics")
app.command("serve")(serve_cli.serve_cmd)
app.command("tune")(tune_cli.tune_cmd)
app.command("ingest")(ingest_cli.ingest)
app.command("features")(features_cli.features_cmd)
app.add_typer(trade_cli.app, name="trade")
app.command("portfolio")(trade_cli.portfolio)
app.command("backtest")(backtest_cli.backtest)
app.command("backtests")(backtest_cli.backtests)
app.command("report")(backtest_cli.report)


def main() -> None:
    """Run the CLI; a LabError prints one clear message and exits 1, without a traceback.

    The temporary Prefect server that flow runs start sends usage telemetry to Prefect unless
    told not to: the lab calls no one by itself (and offline each flow run logged an ERROR
    for it), so it is off unless ``PREFECT_SERVER_ANALYTICS_ENABLED`` says otherwise."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        app()
    except LabError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
