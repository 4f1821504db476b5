"""``lab db``: schema migrations."""

from __future__ import annotations

import typer

from lab.cli._common import console
from lab.db import connect, redact_url
from lab.db.migrate import current_revision, downgrade, head_revision, upgrade
from lab.settings import get_settings

app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)


@app.command("upgrade")
def upgrade_cmd(revision: str = typer.Argument("heads", help="target revision")) -> None:
    """Upgrade the schema (the lab also does this automatically on first use)."""
    url = get_settings().database_url
    engine = connect(url, upgrade=False)
    upgrade(engine, revision)
    console.print(f"{redact_url(url)} at [bold]{current_revision(engine)}[/]")


@app.command("downgrade")
def downgrade_cmd(revision: str = typer.Argument(..., help="target revision, e.g. 0002_model_versions_domain")) -> None:
    """Downgrade the schema to REVISION."""
    engine = connect(get_settings().database_url, upgrade=False)
    downgrade(engine, revision)
    console.print(f"now at [bold]{current_revision(engine)}[/]")


@app.command("current")
def current_cmd() -> None:
    """Show the current and head revisions."""
    url = get_settings().database_url
    engine = connect(url, upgrade=False)
    console.print(f"database: {redact_url(url)}\ncurrent:  {current_revision(engine)}\nhead:     {head_revision()}")
