"""The Prometheus exporter: values agree with the database, names pass promtool's lint, and a
real Prometheus scrapes it and answers every lab PromQL expression on the boards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from sqlalchemy import create_engine, select

from lab.dashboards import build_dashboards
from lab.dashboards.ops import SERVE_EXPRS
from lab.dashboards.queries import panel_queries, render_promql
from lab.db import connect, session_scope
from lab.db.models import Order, PortfolioSnapshot, Signal, TradingControl
from lab.observability import LabCollector, lab_registry, start_exporter
from tests.observability_seed import seed_lab

ROOT = Path(__file__).resolve().parents[1]
LAB_EXPRS = sorted({q.text for board in build_dashboards().values() for q in panel_queries(board)
                    if q.datasource == "prometheus" and q.text not in SERVE_EXPRS.values()})
VALUES = {"portfolio": ["paper"], "strategy": ["momentum", "breakout"]}


def _sample(registry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_portfolio_gauges_are_the_latest_snapshot(engine) -> None:
    seed_lab(engine)
    registry = lab_registry(engine, min_interval_s=0)
    with session_scope(engine) as s:
        latest = s.scalars(select(PortfolioSnapshot).where(PortfolioSnapshot.portfolio == "paper")
                           .order_by(PortfolioSnapshot.ts.desc()).limit(1)).one()
    assert _sample(registry, "lab_portfolio_equity_usd", portfolio="paper") == pytest.approx(latest.equity)
    assert _sample(registry, "lab_portfolio_cash_usd", portfolio="paper") == pytest.approx(latest.cash)
    assert _sample(registry, "lab_portfolio_drawdown_ratio", portfolio="paper") == pytest.approx(latest.drawdown)
    assert _sample(registry, "lab_portfolio_unrealized_pnl_usd", portfolio="paper") == \
        pytest.approx(latest.unrealized_pnl)


def test_orders_are_counted_by_status_and_backtests_are_not_labels(engine) -> None:
    seed_lab(engine)
    with session_scope(engine) as s:
        s.add(Order(client_order_id="bt-1", portfolio="backtest:1", strategy="momentum", symbol="AAPL",
                    asset_type="stocks", side="buy", order_type="market", qty=1, status="filled"))
    registry = lab_registry(engine, min_interval_s=0)
    assert _sample(registry, "lab_orders", portfolio="paper", status="filled") == 6
    assert _sample(registry, "lab_orders", portfolio="paper", status="rejected") == 1
    assert "backtest:" not in generate_latest(registry).decode()


def test_signals_created_never_decrease_when_a_signal_gets_its_outcome(engine) -> None:
    """A cycle journals a signal as 'new' and then marks it ordered or skipped: the counter
    counts signals made (it may only grow), the gauge shows where they stand now."""
    seed_lab(engine)
    registry = lab_registry(engine, min_interval_s=0)
    created = _sample(registry, "lab_signals_created_total", portfolio="paper", strategy="momentum")
    assert created
    assert _sample(registry, "lab_signals", portfolio="paper", strategy="momentum", status="new") == 1
    with session_scope(engine) as s:
        s.scalars(select(Signal).where(Signal.status == "new")).one().status = "skipped"
    assert _sample(registry, "lab_signals_created_total", portfolio="paper", strategy="momentum") == created
    assert _sample(registry, "lab_signals", portfolio="paper", strategy="momentum", status="new") is None
    assert _sample(registry, "lab_signals", portfolio="paper", strategy="momentum", status="skipped") == 1


def test_kill_switch_and_halt_flags_follow_trading_controls(engine) -> None:
    seed_lab(engine)
    with session_scope(engine) as s:
        control = s.get(TradingControl, "paper")
        control.kill_switch, control.halted = True, True
    registry = lab_registry(engine, min_interval_s=0)
    assert _sample(registry, "lab_kill_switch_engaged", portfolio="paper", engaged_by="paper") == 1
    assert _sample(registry, "lab_portfolio_halted", portfolio="paper") == 1


def test_the_global_kill_switch_engages_every_portfolio_and_says_so(engine) -> None:
    seed_lab(engine)
    registry = lab_registry(engine, min_interval_s=0)
    assert _sample(registry, "lab_kill_switch_engaged", portfolio="paper", engaged_by="") == 0
    with session_scope(engine) as s:
        s.add(TradingControl(portfolio="*", halted=False, kill_switch=True, kill_reason="market halt"))
    assert _sample(registry, "lab_kill_switch_engaged", portfolio="paper", engaged_by="*") == 1


def test_ingestion_research_and_model_metrics(engine) -> None:
    seed_lab(engine)
    registry = lab_registry(engine, min_interval_s=0)
    assert _sample(registry, "lab_ingestion_fetches_total", provider="coingecko", status="failed") == 1
    assert _sample(registry, "lab_tuning_trials_total", strategy="momentum") == 24
    assert _sample(registry, "lab_tuning_best_score", strategy="momentum", metric="auc") == pytest.approx(0.55)
    assert _sample(registry, "lab_model_active_version", domain="stocks", strategy="momentum") == 2


def test_one_pass_is_reused_within_the_minimum_interval(sqlite_url: str) -> None:
    engine = connect(sqlite_url)
    seed_lab(engine)
    now = [0.0]
    collector = LabCollector(engine, min_interval_s=10, clock=lambda: now[0])

    def rejected() -> float:
        family = next(m for m in collector.collect() if m.name == "lab_orders")
        return sum(s.value for s in family.samples if s.labels["status"] == "rejected")

    assert rejected() == 1
    with session_scope(engine) as s:
        s.add(Order(client_order_id="late", strategy="momentum", symbol="AAPL", asset_type="stocks", side="buy",
                    order_type="market", qty=1, status="rejected"))
    now[0] = 5.0
    assert rejected() == 1
    now[0] = 10.0
    assert rejected() == 2


def test_an_unreachable_database_reports_down_instead_of_failing_the_scrape() -> None:
    engine = create_engine(f"postgresql+psycopg://lab:lab@127.0.0.1:{_free_port()}/nope",
                           connect_args={"connect_timeout": 2})
    registry = lab_registry(engine, min_interval_s=0)
    assert _sample(registry, "lab_exporter_database_up") == 0


def test_metric_names_pass_promtool_lint(engine, prometheus_binary: str) -> None:
    seed_lab(engine)
    promtool = Path(prometheus_binary).with_name("promtool")
    result = subprocess.run([str(promtool), "check", "metrics"], input=generate_latest(lab_registry(engine)),
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_infra_prometheus_config_is_valid(prometheus_binary: str) -> None:
    promtool = Path(prometheus_binary).with_name("promtool")
    result = subprocess.run([str(promtool), "check", "config", str(ROOT / "infra/prometheus/prometheus.yml")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def prometheus_scraping(prometheus_binary: str, pg_url: str, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping the real exporter over a seeded PostgreSQL every second."""
    engine = connect(pg_url)
    seed_lab(engine)
    server, _ = start_exporter(engine, port=0, min_interval_s=0)
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n"
                      f"scrape_configs:\n  - job_name: lab\n    static_configs:\n"
                      f"      - targets: ['127.0.0.1:{server.server_port}']\n")
    proc = subprocess.Popen([prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _query(base, 'lab_exporter_database_up{job="lab"} == 1'), "the first scrape")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.shutdown()


def _query(base: str, expr: str) -> list:
    response = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    response.raise_for_status()  # a starting Prometheus answers 503 in plain text: waited on as an HTTPError
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.postgres
@pytest.mark.slow
def test_every_lab_promql_on_the_boards_returns_series_from_a_real_scrape(prometheus_scraping: str) -> None:
    assert LAB_EXPRS
    # rate()/range selectors need two samples: wait for a second scrape
    time.sleep(2.5)
    empty = [expr for expr in LAB_EXPRS if not _query(prometheus_scraping, render_promql(expr, VALUES))]
    assert not empty, f"no series for {empty}"


def test_lab_metrics_serve_command_serves_the_metrics(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    seed_lab(connect(url))
    port = _free_port()
    env = {**os.environ, "LAB_DATABASE_URL": url}
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli.main", "metrics", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        text = _wait(lambda: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text, "the exporter", 60)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert 'lab_portfolio_equity_usd{portfolio="paper"}' in text
