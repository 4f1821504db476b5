"""Every query a board runs, and Grafana's variable/macro expansion for running them elsewhere.

Without a Grafana server, checking a board means running its queries the way Grafana would:
variables interpolated (``${v:sqlstring}``, ``$v``), time macros expanded to the PostgreSQL
SQL that Grafana's data source generates, ``$__rate_interval`` fixed for PromQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["PanelQuery", "panel_queries", "variable_queries", "render_sql", "render_promql"]

_INTERVALS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class PanelQuery:
    board: str
    panel: str
    panel_type: str
    datasource: str  # data source type
    text: str  # rawSql or PromQL expr
    fmt: str | None  # SQL: table | time_series


def panel_queries(board: Mapping[str, Any]) -> Iterator[PanelQuery]:
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            source = (target.get("datasource") or panel.get("datasource") or {}).get("type", "")
            text = target.get("rawSql") or target.get("expr")
            if text:
                yield PanelQuery(board["uid"], panel.get("title", ""), panel["type"], source, text,
                                 target.get("format"))


def variable_queries(board: Mapping[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(name, query, multi) of each query variable, in dependency (declaration) order."""
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            yield variable["name"], variable["query"], bool(variable.get("multi"))


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _variables(text: str, values: Mapping[str, Sequence[str]], join) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        if name.startswith("__") or name not in values:
            return match.group(0)
        return join(values[name], match.group("fmt"))

    return re.sub(r"\$\{(?P<braced>\w+)(?::(?P<fmt>\w+))?\}|\$(?P<plain>\w+)", sub, text)


def render_sql(sql: str, values: Mapping[str, Sequence[str]], start: datetime, end: datetime) -> str:
    """The SQL Grafana's PostgreSQL data source would send for this time range and these values."""
    frm, to = _quote(start.isoformat()), _quote(end.isoformat())

    def group(match: re.Match[str]) -> str:
        column, interval = match.group(1).strip(), match.group(2).strip().strip("'")
        seconds = int(interval[:-1]) * _INTERVALS[interval[-1]]
        return f'floor(extract(epoch from {column})/{seconds})*{seconds} AS "time"'

    sql = re.sub(r"\$__timeGroupAlias\(([^,]+),([^)]+)\)", group, sql)
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m.group(1).strip()} BETWEEN {frm} AND {to}", sql)
    sql = sql.replace("$__timeFrom()", frm).replace("$__timeTo()", to)

    def join(chosen: Sequence[str], fmt: str | None) -> str:
        if fmt == "sqlstring" or len(chosen) > 1:
            return ",".join(_quote(v) for v in chosen)
        return chosen[0]

    return _variables(sql, values, join)


def render_promql(expr: str, values: Mapping[str, Sequence[str]], *, rate_interval: str = "1m") -> str:
    """PromQL with variables as Grafana formats them (several values become a regex alternation)."""
    expr = expr.replace("$__rate_interval", rate_interval)

    def join(chosen: Sequence[str], _fmt: str | None) -> str:
        return chosen[0] if len(chosen) == 1 else "(" + "|".join(re.escape(v) for v in chosen) + ")"

    return _variables(expr, values, join)
