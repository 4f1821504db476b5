"""Grafana dashboards as code (grafana-foundation-sdk), rendered to ``infra/grafana/dashboards``.

``build_dashboards()`` is the single source: the provisioned JSON files and ``lab grafana
push`` both come from it, and a test fails when the checked-in files drift from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.dashboards._sdk import PG, PROM, to_json
from lab.dashboards.ops import operations, research
from lab.dashboards.prices import INDICATORS, prices
from lab.dashboards.trading import portfolio_overview, positions, signals, strategy_performance, trade_history

__all__ = ["DATASOURCE_UIDS", "INDICATORS", "build_dashboards", "write_dashboards"]

DATASOURCE_UIDS = {"postgres": PG.uid, "prometheus": PROM.uid}
_BOARDS = (portfolio_overview, positions, trade_history, strategy_performance, prices, signals, research,
           operations)


def build_dashboards() -> dict[str, dict[str, Any]]:
    """Every board as Grafana JSON, keyed by its uid."""
    boards = [to_json(make()) for make in _BOARDS]
    return {board["uid"]: board for board in boards}


def write_dashboards(directory: Path) -> list[Path]:
    """Write ``<uid>.json`` per board (stable formatting, so diffs stay readable)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for uid, board in build_dashboards().items():
        path = directory / f"{uid}.json"
        path.write_text(json.dumps(board, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
