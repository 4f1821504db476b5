"""The boards as files: generated from code, valid against Grafana's dashboard schema (the
grafana-foundation-sdk models), and wired to the provisioned data sources."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as gm

from lab.dashboards import INDICATORS, build_dashboards, write_dashboards
from lab.dashboards.queries import panel_queries

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "infra/grafana/dashboards"
PROVISIONED = {d["uid"]: d["type"] for d in yaml.safe_load(
    (ROOT / "infra/grafana/provisioning/datasources/lab.yaml").read_text())["datasources"]}
BOARDS = build_dashboards()
ISSUE_BOARDS = {"Portfolio overview", "Positions", "Trade history", "Strategy performance", "Prices", "Signals",
                "Research", "Operations"}


def test_there_is_one_board_per_view_the_issue_names() -> None:
    assert {board["title"].removeprefix("Lab / ") for board in BOARDS.values()} == ISSUE_BOARDS


def test_checked_in_json_is_what_the_code_generates(tmp_path: Path) -> None:
    write_dashboards(tmp_path)
    generated = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    checked_in = {p.name: p.read_text() for p in DASHBOARD_DIR.glob("*.json")}
    assert checked_in == generated, "run `lab grafana render` and commit infra/grafana/dashboards"


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_board_round_trips_through_grafanas_dashboard_schema(uid: str) -> None:
    """Parsing with the SDK's typed schema models and writing back loses nothing (no unknown
    or mistyped keys) and keeps the schema version the SDK targets."""
    board = BOARDS[uid]
    parsed = gm.Dashboard.from_json(board)
    assert json.loads(json.dumps(parsed, cls=JSONEncoder)) == {k: v for k, v in board.items() if k != "id"}
    assert board["schemaVersion"] == gm.Dashboard().schema_version


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_panels_have_unique_ids_and_use_provisioned_datasources(uid: str) -> None:
    panels = BOARDS[uid]["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"] if "datasource" in t)]
        assert panel["targets"], f"{panel['title']} has no query"
        for ref in refs:
            assert PROVISIONED.get(ref["uid"]) == ref["type"], f"{panel['title']}: unknown data source {ref}"
    for variable in BOARDS[uid]["templating"].get("list", []):
        assert PROVISIONED.get(variable["datasource"]["uid"]) == variable["datasource"]["type"]


def test_candlestick_fields_are_columns_of_its_query() -> None:
    panel = next(p for p in BOARDS["lab-prices"]["panels"] if p["type"] == "candlestick")
    aliases = set(re.findall(r"(?:AS|p\.)\s*(\w+)", panel["targets"][0]["rawSql"]))
    assert set(panel["options"]["fields"].values()) <= aliases
    assert {"sma_20", "sma_50", "bb_upper", "bb_lower", "buy_fill", "sell_fill"} <= aliases


def test_prices_board_reads_every_indicator_it_documents() -> None:
    sql = " ".join(q.text for q in panel_queries(BOARDS["lab-prices"]))
    assert all(f"'{name}'" in sql for name in INDICATORS)


def test_trade_history_filters_by_strategy_symbol_and_dates() -> None:
    board = BOARDS["lab-trades"]
    names = {v["name"] for v in board["templating"]["list"]}
    assert {"strategy", "symbol"} <= names
    fills = next(q.text for q in panel_queries(board) if q.panel == "Fills")
    assert "${strategy:sqlstring}" in fills and "${symbol:sqlstring}" in fills and "$__timeFilter(ts)" in fills


def test_dashboard_provider_mounts_the_folder_compose_provides() -> None:
    provider = yaml.safe_load((ROOT / "infra/grafana/provisioning/dashboards/lab.yaml").read_text())["providers"][0]
    compose = yaml.safe_load((ROOT / "infra/compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
