"""``lab grafana push`` against a local fake of Grafana's HTTP API (no real Grafana runs here)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from grafana_client import GrafanaApi
from typer.testing import CliRunner

from lab.cli.main import app
from lab.dashboards import build_dashboards
from lab.dashboards.publish import FOLDER_UID, GrafanaPushError, datasources, push
from lab.errors import ConfigError
from tests.fakes.grafana import fake_grafana

PG_URL = "postgresql+psycopg://grafana_ro:s3cret@db.internal:5433/lab"
PROVISIONING = Path(__file__).resolve().parents[1] / "infra/grafana/provisioning/datasources/lab.yaml"


def _push(grafana, token: str | None = None):
    api = GrafanaApi.from_url(grafana.url, credential=token or grafana.token, timeout=5.0)
    return push(api, sources=datasources(PG_URL, "http://prometheus:9090"), boards=build_dashboards().values())


def test_first_push_creates_both_datasources_the_folder_and_every_board() -> None:
    with fake_grafana() as grafana:
        report = _push(grafana)
    assert set(grafana.datasources) == {"lab-pg", "lab-prom"}
    assert set(grafana.dashboards) == set(build_dashboards())
    assert all(saved["folderUid"] == FOLDER_UID for saved in grafana.dashboards.values())
    assert len(report.created) == 2 + 1 + len(build_dashboards()) and not report.updated


def test_postgres_datasource_is_derived_from_the_database_url() -> None:
    with fake_grafana() as grafana:
        _push(grafana)
    pg = grafana.datasources["lab-pg"]
    assert (pg["type"], pg["url"], pg["user"], pg["jsonData"]["database"]) == \
        ("grafana-postgresql-datasource", "db.internal:5433", "grafana_ro", "lab")
    assert pg["secureJsonData"] == {"password": "s3cret"}


def test_second_push_writes_nothing_and_keeps_dashboard_versions() -> None:
    with fake_grafana() as grafana:
        _push(grafana)
        versions = {uid: saved["dashboard"]["version"] for uid, saved in grafana.dashboards.items()}
        writes_before = len(grafana.writes())
        report = _push(grafana)
        assert len(grafana.writes()) == writes_before
    assert not report.created and not report.updated
    assert {uid: saved["dashboard"]["version"] for uid, saved in grafana.dashboards.items()} == versions


def test_a_board_changed_in_grafana_is_overwritten_with_the_code_version() -> None:
    with fake_grafana() as grafana:
        _push(grafana)
        grafana.dashboards["lab-prices"]["dashboard"]["title"] = "edited by hand"
        report = _push(grafana)
        stored = grafana.dashboards["lab-prices"]["dashboard"]
    assert report.updated == ["dashboard lab-prices"]
    assert stored["title"] == build_dashboards()["lab-prices"]["title"] and stored["version"] == 2


def test_a_changed_prometheus_url_updates_the_datasource_in_place() -> None:
    with fake_grafana() as grafana:
        _push(grafana)
        api = GrafanaApi.from_url(grafana.url, credential=grafana.token, timeout=5.0)
        report = push(api, sources=datasources(PG_URL, "http://prom.other:9090"), boards=[])
    assert report.updated == ["datasource lab-prom"]
    assert grafana.datasources["lab-prom"]["url"] == "http://prom.other:9090"


def test_a_rejected_token_is_a_clear_error() -> None:
    with fake_grafana() as grafana, pytest.raises(GrafanaPushError, match="GRAFANA_TOKEN"):
        _push(grafana, token="glsa_wrong")


def test_an_unreachable_grafana_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = GrafanaApi.from_url(f"http://127.0.0.1:{port}", credential="t", timeout=2.0)
    with pytest.raises(GrafanaPushError, match="cannot reach Grafana"):
        push(api, sources=datasources(PG_URL, "http://p:9090"), boards=[])


class _WebPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_url_that_answers_with_a_web_page_is_named_as_not_grafana_before_anything_is_pushed() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _WebPage) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            with pytest.raises(GrafanaPushError) as info:
                push(GrafanaApi.from_url(url, credential="t", timeout=5.0),
                     sources=datasources(PG_URL, "http://p:9090"), boards=build_dashboards().values())
        finally:
            server.shutdown()
    assert str(info.value) == (f"{url} did not answer as Grafana's HTTP API: GET /api/health gave 200 text/html, "
                               "starting b'<html><body>Welcome to nginx!</body></html>'")


def test_a_sqlite_database_url_is_refused_with_the_reason() -> None:
    with pytest.raises(GrafanaPushError, match="PostgreSQL"):
        datasources("sqlite:///lab.db", "http://p:9090")


def test_cli_push_reads_the_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_grafana() as grafana:
        monkeypatch.setenv("GRAFANA_TOKEN", grafana.token)
        result = CliRunner().invoke(app, ["grafana", "push", "--url", grafana.url, "--database-url", PG_URL])
    assert result.exit_code == 0, result.output
    assert set(grafana.dashboards) == set(build_dashboards())


def test_cli_push_without_token_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["grafana", "push", "--url", "http://127.0.0.1:1", "--database-url", PG_URL])
    assert isinstance(result.exception, ConfigError) and "GRAFANA_TOKEN" in str(result.exception)


def test_pushed_datasources_match_the_provisioning_file() -> None:
    provisioned = yaml.safe_load(PROVISIONING.read_text())["datasources"]
    pushed = datasources(PG_URL, "http://prometheus:9090")
    assert [(d["name"], d["uid"], d["type"]) for d in provisioned] == \
        [(d["name"], d["uid"], d["type"]) for d in pushed]
