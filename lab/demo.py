"""``lab demo``: the main job on the embedded default."""

from __future__ import annotations

from lab.cli._common import console, print_table
from lab.db import redact_url
from lab.db.migrate import current_revision
from lab.runtime import open_lab


def run_demo() -> None:
    lab = open_lab()
    config = lab.config
    console.print(f"database {redact_url(lab.settings.database_url)} at {current_revision(lab.engine)}")
    print_table(
        "Strategies",
        ["strategy", "enabled", "asset classes", "active model"],
        [
            (name, s.enabled, ", ".join(s.asset_classes),
             (v := lab.registry.get_active_version(name)) and f"v{v.version}")
            for name, s in config.strategies.items()
        ],
    )
