"""``lab models``: the model registry."""

from __future__ import annotations

import typer

from lab.cli._common import console, print_table
from lab.runtime import open_lab

app = typer.Typer(help="Model registry: versions per (domain, strategy), one active.", no_args_is_help=True)


@app.command("list")
def list_cmd(
    domain: str | None = typer.Option(None, help="trading or betting; all domains when omitted"),
    strategy: str | None = typer.Option(None, help="only this strategy's versions; all strategies when omitted"),
) -> None:
    """List registered versions."""
    versions = open_lab().registry.list_versions(domain=domain, strategy=strategy)
    print_table(
        "Model versions",
        ["id", "domain", "strategy", "version", "status", "active", "auc", "created"],
        [
            (v.id, v.domain, v.strategy, v.version, v.status, "yes" if v.is_active else "",
             _fmt(v.metrics.get("oos_auc")), v.created_at.strftime("%Y-%m-%d %H:%M"))
            for v in versions
        ],
    )
    for v in versions:  # below the table: a gate's reason is a sentence
        if v.note:
            console.print(f"id {v.id} ({v.strategy} v{v.version}): {v.note}", markup=False, highlight=False)


@app.command("activate")
def activate_cmd(version_id: int = typer.Argument(..., help="the version id (see `lab models list`)")) -> None:
    """Make a version the active one for its (domain, strategy), even one the gate kept back."""
    registry = open_lab().registry
    before = registry.get(version_id)
    v = registry.activate(version_id, reason="activated from the CLI")
    console.print(f"active: {v.domain}/{v.strategy} v{v.version} (id {v.id})")
    if before.status == "candidate" and before.note:
        console.print(f"note: the promotion gate kept it back ({before.note}); it trades now because you asked")


@app.command("rollback")
def rollback_cmd(version_id: int = typer.Argument(..., help="the earlier version id to re-activate")) -> None:
    """Re-activate an earlier version."""
    v = open_lab().registry.rollback_to_version(version_id, reason="rollback from the CLI")
    console.print(f"rolled back: {v.domain}/{v.strategy} now v{v.version} (id {v.id})")


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ""
