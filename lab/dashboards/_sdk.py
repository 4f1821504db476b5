"""Thin helpers over grafana-foundation-sdk: the two data sources, SQL targets, variables.

The SDK has typed builders for panels, Prometheus queries and dashboards, but no model for
the PostgreSQL data source's queries; ``SqlQuery`` fills that gap with the JSON shape Grafana
saves for a raw-SQL ("code" editor) query.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gdb
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as gm

__all__ = [
    "PG", "PROM", "PG_TYPE", "PROM_TYPE", "SqlQuery", "sql", "promql", "sql_variable", "portfolio_variable",
    "to_json", "value_text",
]

PG_TYPE = "grafana-postgresql-datasource"
PROM_TYPE = "prometheus"
PG = gm.DataSourceRef(type_val=PG_TYPE, uid="lab-pg")
PROM = gm.DataSourceRef(type_val=PROM_TYPE, uid="lab-prom")


class SqlQuery(cogvariants.Dataquery):
    """A raw SQL target of Grafana's PostgreSQL data source."""

    def __init__(self, ref_id: str, raw_sql: str, fmt: str) -> None:
        self.ref_id, self.raw_sql, self.fmt = ref_id, raw_sql, fmt

    def to_json(self) -> dict[str, object]:
        return {"refId": self.ref_id, "datasource": PG.to_json(), "editorMode": "code",
                "format": self.fmt, "rawQuery": True, "rawSql": self.raw_sql}


class _Built(cogbuilder.Builder[Any]):
    def __init__(self, value: Any) -> None:
        self._value = value

    def build(self) -> Any:
        return self._value


def sql(raw_sql: str, *, fmt: str = "table", ref_id: str = "A") -> cogbuilder.Builder[cogvariants.Dataquery]:
    """A SQL target; ``fmt`` is ``table`` or ``time_series`` (long format: time, metric, value)."""
    return _Built(SqlQuery(ref_id, " ".join(raw_sql.split()), fmt))


def promql(expr: str, *, legend: str = "__auto", ref_id: str = "A", instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(PROM)
    return query.instant() if instant else query.range()


def sql_variable(name: str, query: str, *, multi: bool = False, label: str | None = None) -> gdb.QueryVariable:
    """A variable filled by a SQL query; multi-value ones include "All"."""
    variable = (gdb.QueryVariable(name).label(label or name.capitalize()).datasource(PG)
                .query(" ".join(query.split())).refresh(gm.VariableRefresh.ON_DASHBOARD_LOAD)
                .sort(gm.VariableSort.ALPHABETICAL_ASC).multi(multi).include_all(multi))
    return variable


def portfolio_variable() -> gdb.QueryVariable:
    """The one portfolio a board shows: paper, live, or a stored backtest (each writes snapshots
    under its own name, and mixing their fills or equity would mean nothing)."""
    return sql_variable("portfolio", "SELECT DISTINCT portfolio FROM portfolio ORDER BY 1")


def value_text(mapping: dict[str, tuple[str, str]]) -> list[gm.ValueMapping]:
    """Value mappings such as {"0": ("OK", "green"), "1": ("HALTED", "red")}."""
    return [gm.ValueMap(options={k: gm.ValueMappingResult(text=text, color=color)
                                 for k, (text, color) in mapping.items()})]


def to_json(board: gdb.Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana JSON, with panel ids numbered in layout order."""
    data = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for number, panel in enumerate(data.get("panels", []), start=1):
        panel["id"] = number
    return data
