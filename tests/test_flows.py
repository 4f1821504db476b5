"""Prefect orchestration on a real temporary Prefect server: schedules, artifacts, retries."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from lab.config import load_config
from lab.db import connect
from lab.errors import DataError
from tests.fakes import Reply
from tests.fakes.yahoo import FakeYahoo
from universe.providers import RetryPolicy
from universe.synthetic import synthetic_market

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "trading.json"


def _read(coro):
    return asyncio.run(coro)


async def _deployment(name: str):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_deployment_by_name(name)


async def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


async def _artifacts(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        return await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def test_every_deployment_is_registered_with_its_cron_and_time_zone(prefect_server):
    from flows.deployments import DEPLOYMENTS, build_deployments

    config = load_config(REPO_CONFIG)
    for spec, deployment in zip(DEPLOYMENTS, build_deployments(config), strict=True):
        deployment.apply()
        stored = _read(_deployment(f"{spec.flow.name}/{spec.name}"))
        [schedule] = stored.schedules
        assert schedule.schedule.cron == config.schedules[spec.schedule].cron
        assert schedule.schedule.timezone == config.schedules[spec.schedule].timezone
        assert stored.parameters == spec.parameters


def test_flows_list_names_every_flow_that_flows_run_starts(monkeypatch):
    from typer.testing import CliRunner

    from flows.deployments import FLOWS
    from lab.cli.main import app

    monkeypatch.setenv("COLUMNS", "400")
    listed = CliRunner().invoke(app, ["flows", "list"])
    assert listed.exit_code == 0, listed.output
    line = next(line for line in listed.output.splitlines() if "lab flows run NAME" in line)
    assert sorted(line.split(": ", 1)[1].split(", ")) == sorted(FLOWS)
    assert {"run_backtest", "run_backtest_sweep"} <= set(FLOWS)


@pytest.mark.parametrize(("name", "params", "message"), [
    ("run_backtest", ["strategies=[\"momentum\"]", "start=garbage", "end=2020-01-01"], "start: Input should be a valid date"),
    ("ingest_universe", ["since=yesterday"], "since: Input should be a valid date"),
    ("tune_strategies", ["end=soon"], "end: Input should be a valid datetime"),
    ("ingest_universe", ["nosuch=1"], "got an unexpected keyword argument 'nosuch'"),
    ("run_backtest", ["start=2019-01-01"], "missing a required argument: 'strategies'"),
    ("run_trading_cycle", ["as_of=garbage"], "as_of: Input should be a valid datetime"),
    ("run_trading_training", ["report_days=-1"], "report_days: Input should be greater than or equal to 0"),
    ("tune_strategies", ["trials=0"], "trials: Input should be greater than or equal to 1"),
    ("run_trading_training", ["trials=-1"], "trials: Input should be greater than or equal to 1"),
])
def test_flows_run_refuses_a_bad_unknown_or_missing_parameter_naming_it(prefect_server, name, params, message):
    # a process of its own: a flow run in this one would bind Prefect's log handler to a captured stream
    result = subprocess.run([sys.executable, "-m", "lab.cli.main", "flows", "run", name,
                             *(arg for p in params for arg in ("-p", p))], capture_output=True, text=True,
                            env={**os.environ, "PREFECT_API_URL": prefect_server, "COLUMNS": "300"}, timeout=300)
    assert result.returncode == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_trading_cycle_for_an_asset_class_the_universe_lacks_fails_by_name_and_stores_no_cycle(prefect_server,
                                                                                                  sqlite_url):
    result = subprocess.run([sys.executable, "-m", "lab.cli.main", "flows", "run", "run_trading_cycle",
                             "-p", "asset_class=bond", "-p", "as_of=2013-02-28"], capture_output=True, text=True,
                            env={**os.environ, "PREFECT_API_URL": prefect_server, "LAB_DATABASE_URL": sqlite_url,
                                 "COLUMNS": "300"}, timeout=300)
    assert result.returncode == 1
    assert "error: asset class 'bond' is not in the config's universe (known: crypto, stocks)" in result.stderr
    with connect(sqlite_url).connect() as conn:
        assert conn.execute(text("select count(*) from trading_cycles")).scalar_one() == 0


def test_the_stock_schedules_run_in_new_york_time():
    config = load_config(REPO_CONFIG)
    assert (config.schedules["stock_collection"].cron, config.schedules["stock_collection"].timezone) == \
        ("0 16 * * 1-5", "America/New_York")
    assert (config.schedules["stock_trading_cycle"].cron, config.schedules["stock_trading_cycle"].timezone) == \
        ("30 9 * * 1-5", "America/New_York")


def test_concurrency_limits_are_set_on_the_server_per_provider_and_for_trading_cycles(prefect_server):
    from prefect.client.orchestration import get_client

    from flows.deployments import ensure_concurrency_limits

    config = load_config(REPO_CONFIG)
    ensure_concurrency_limits(config)
    limits = ensure_concurrency_limits(config)  # idempotent
    with get_client(sync_client=True) as client:
        stored = {tag: client.read_concurrency_limit_by_tag(tag).concurrency_limit for tag in limits}
    assert stored == limits
    assert stored["trading-cycle"] == 1 and stored["provider:alphavantage"] == 2


@pytest.mark.parametrize(("now", "trading_day"), [
    (datetime(2024, 7, 3, 20, 0, tzinfo=UTC), True),    # a Wednesday
    (datetime(2024, 7, 4, 20, 0, tzinfo=UTC), False),   # Independence Day
    (datetime(2024, 7, 6, 20, 0, tzinfo=UTC), False),   # a Saturday
])
def test_stock_collection_runs_only_on_nyse_trading_days(now, trading_day):
    from flows.collection import _is_trading_day

    assert _is_trading_day(now) is trading_day


@pytest.fixture
def live_stock_universe(tmp_path, monkeypatch, sqlite_url):
    """AAA has data at the (local, fake) provider; ZZZ is unknown there (a definitive error)."""
    config = {"universe": {"stocks": {"symbols": ["AAA", "ZZZ"], "benchmark": "AAA"}},
              "data": {"source": "live", "history_start": "2024-01-01"},
              "rate_limits": {p: {"per_minute": 10_000} for p in ("alphavantage", "yahoo", "binance", "coingecko")}}
    path = tmp_path / "trading.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("LAB_CONFIG", str(path))
    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    monkeypatch.delenv("ALPHAVANTAGE_API_KEY", raising=False)
    bars = synthetic_market(1, 40, 3, start="2024-01-02").assign(symbol="AAA")
    with FakeYahoo({"AAA": bars.reset_index(drop=True)}) as fake:
        monkeypatch.setenv("LAB_YAHOO_URL", fake.url)
        yield fake


def test_a_definitive_failure_is_not_retried_and_is_reported_once(prefect_server, live_stock_universe, sqlite_url):
    from flows.collection import run_stock_collection

    state = run_stock_collection(force=True, return_state=True)
    assert state.is_failed()  # one failed symbol fails the run, as `lab ingest` exits 1
    with pytest.raises(DataError, match=r"1 of 2 symbols failed: ZZZ \(.*No data found"):
        state.result()
    ingest_run = _read(_subflow_runs(state.state_details.flow_run_id))[0]
    runs = {run.name: run for run in _read(_task_runs(ingest_run.id))}
    assert runs["ingest-ZZZ"].state.is_failed() and runs["ingest-ZZZ"].run_count == 1  # an unknown symbol stays one
    assert runs["ingest-AAA"].state.is_completed() and runs["ingest-AAA"].run_count == 1
    with connect(sqlite_url).connect() as conn:
        assert conn.execute(text("select status from ingestion_runs where symbol = 'ZZZ'")).scalars().all() == ["failed"]
        assert conn.execute(text("select count(*) from price_history where symbol = 'AAA'")).scalar() == 40
    [artifact] = [a for a in _read(_artifacts(ingest_run.id)) if a.key == "ingest-summary"]
    assert "ZZZ" in str(artifact.data) and "failed" in str(artifact.data)


def test_a_transient_failure_is_retried_and_the_retry_stores_the_bars(prefect_server, live_stock_universe):
    from flows.ingest import ingest_universe

    live_stock_universe.script.extend([Reply(503, "<html>down</html>")] * RetryPolicy().attempts)  # the first try's
    state = ingest_universe(source="live", symbols=["AAA"], return_state=True)
    assert state.is_completed() and state.result()["stored"] == 40
    run = {run.name: run for run in _read(_task_runs(state.state_details.flow_run_id))}["ingest-AAA"]
    assert run.state.is_completed() and run.run_count == 2


async def _subflow_runs(parent_flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async with get_client() as client:
        return await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_flow_run_id])))
