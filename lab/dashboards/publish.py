"""Publish the data sources, the folder and every board to a running Grafana, idempotently.

Each object is read first and written only when it is missing or differs, so a second push
changes nothing (no new dashboard versions). The data sources carry the same names, uids and
types as ``infra/grafana/provisioning/datasources/lab.yaml``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException
from sqlalchemy.engine import make_url

from lab.dashboards._sdk import PG, PG_TYPE, PROM, PROM_TYPE
from lab.errors import LabError

__all__ = ["FOLDER_UID", "FOLDER_TITLE", "GrafanaPushError", "PushReport", "datasources", "push"]

FOLDER_UID = "strategy-lab"
FOLDER_TITLE = "Strategy Lab"
_VOLATILE = {"id", "version"}


class GrafanaPushError(LabError):
    """Grafana refused or could not be reached; the message says which object and why."""


@dataclass
class PushReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def datasources(database_url: str, prometheus_url: str) -> list[dict[str, Any]]:
    """API bodies of the two data sources; PostgreSQL settings come from the lab's database URL."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise GrafanaPushError(
            f"Grafana reads the trading tables from PostgreSQL; the database URL is {url.get_backend_name()}. "
            "Pass --database-url postgresql://user:pass@host:5432/lab")
    if not url.host or not url.database:
        raise GrafanaPushError("the PostgreSQL URL must name a host and a database")
    postgres: dict[str, Any] = {
        "name": "Lab PostgreSQL", "uid": PG.uid, "type": PG_TYPE, "access": "proxy",
        "url": f"{url.host}:{url.port or 5432}", "user": url.username or "",
        "jsonData": {"database": url.database, "sslmode": "disable", "postgresVersion": 1500,
                     "timescaledb": False, "maxOpenConns": 5},
    }
    if url.password:
        postgres["secureJsonData"] = {"password": url.password}
    prometheus = {"name": "Lab Prometheus", "uid": PROM.uid, "type": PROM_TYPE, "access": "proxy",
                  "url": prometheus_url, "isDefault": True,
                  "jsonData": {"timeInterval": "15s", "httpMethod": "POST"}}
    return [postgres, prometheus]


def _get(call, *args: Any) -> dict[str, Any] | None:
    """The object, or None when Grafana answers 404."""
    try:
        return call(*args)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def _differs(wanted: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
    secret_keys = set(wanted.get("secureJsonData", {}))
    if not secret_keys <= {k for k, v in (existing.get("secureJsonFields") or {}).items() if v}:
        return True
    return any(existing.get(k) != v for k, v in wanted.items() if k != "secureJsonData")


def _sync_datasource(api: GrafanaApi, body: dict[str, Any], report: PushReport) -> None:
    name = f"datasource {body['uid']}"
    existing = _get(api.datasource.get_datasource_by_uid, body["uid"])
    if existing is None:
        api.datasource.create_datasource(body)
        report.created.append(name)
    elif _differs(body, existing):
        api.datasource.update_datasource_by_uid(body["uid"], body)
        report.updated.append(name)
    else:
        report.unchanged.append(name)


def _sync_folder(api: GrafanaApi, report: PushReport) -> None:
    name = f"folder {FOLDER_UID}"
    existing = _get(api.folder.get_folder, FOLDER_UID)
    if existing is None:
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        report.created.append(name)
    elif existing.get("title") != FOLDER_TITLE:
        api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True)
        report.updated.append(name)
    else:
        report.unchanged.append(name)


def _sync_dashboard(api: GrafanaApi, board: dict[str, Any], report: PushReport) -> None:
    name = f"dashboard {board['uid']}"
    existing = _get(api.dashboard.get_dashboard, board["uid"])
    if existing is not None:
        stored = {k: v for k, v in existing["dashboard"].items() if k not in _VOLATILE}
        if stored == board and existing.get("meta", {}).get("folderUid") == FOLDER_UID:
            report.unchanged.append(name)
            return
    api.dashboard.update_dashboard({"dashboard": {**board, "id": None}, "folderUid": FOLDER_UID,
                                    "overwrite": True, "message": "lab grafana push"})
    (report.created if existing is None else report.updated).append(name)


def _require_grafana(api: GrafanaApi) -> None:
    """Grafana answers ``GET /api/health`` with a JSON object naming its database, or refuses
    with a JSON ``message`` (a bad token: the first real call reports it, with its hint).
    Anything else (a web page some other server returns with 200) is not its HTTP API: the
    client would hand its text back as if it were an object, and the push fail on it later."""
    client = api.client
    response = client.s.get(f"{client.url}/health", auth=client.auth, timeout=client.timeout, verify=client.verify)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not (isinstance(answer, dict) and {"database", "message"} & answer.keys()):
        content_type = response.headers.get("Content-Type") or "no content type"
        raise GrafanaPushError(f"{client.url.removesuffix('/api')} did not answer as Grafana's HTTP API: GET "
                               f"/api/health gave {response.status_code} {content_type}, "
                               f"starting {(response.content or b'')[:80]!r}")


def push(api: GrafanaApi, *, sources: Iterable[dict[str, Any]],
         boards: Iterable[dict[str, Any]]) -> PushReport:
    """Create or update data sources, the folder and boards; unchanged objects are not written.

    A URL that does not answer as Grafana's HTTP API is refused before anything is written."""
    report = PushReport()
    step = "connecting"
    try:
        _require_grafana(api)
        for body in sources:
            step = f"datasource {body['uid']}"
            _sync_datasource(api, body, report)
        step = f"folder {FOLDER_UID}"
        _sync_folder(api, report)
        for board in boards:
            step = f"dashboard {board['uid']}"
            _sync_dashboard(api, board, report)
    except GrafanaException as exc:
        hint = " (check GRAFANA_TOKEN: a service-account token with the Editor or Admin role)" \
            if exc.status_code in (401, 403) else ""
        raise GrafanaPushError(f"Grafana refused {step}: {exc.message}{hint}") from None
    except OSError as exc:
        raise GrafanaPushError(f"cannot reach Grafana while pushing {step}: {exc}") from None
    return report
