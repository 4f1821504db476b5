"""The weekly Prefect flow ``tune_strategies`` on a real temporary Prefect server."""

import json

import pytest

from lab.db import connect
from tests.test_models_pipeline import _store_random_walks


def test_flow_tunes_each_strategy_and_publishes_a_leaderboard_artifact(prefect_server, ray_session, sqlite_url,
                                                                       monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from flows.train import tune_strategies

    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    _store_random_walks(connect(sqlite_url), ["AAPL", "MSFT", "IBM", "GOOG"], days=400)
    state = tune_strategies(["swing", "momentum"], trials=1, return_state=True)
    rows = state.result()
    assert {row["strategy"] for row in rows} == {"swing", "momentum"}
    assert all(row["version"] == 1 and row["reason"] for row in rows)
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["tuning-leaderboard"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    assert artifact.type == "table"
    published = json.loads(artifact.data)  # Prefect stores the table as JSON text
    assert published == rows


def test_weekly_training_links_the_report_of_a_walk_forward_backtest_of_the_latest_days(
        prefect_server, ray_session, sqlite_url, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.training import run_trading_training
    from lab.backtest import list_backtests

    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    engine = connect(sqlite_url)
    _store_random_walks(engine, ["AAPL", "MSFT", "IBM", "GOOG"], days=400)  # business days to 2019-07-12
    rows = run_trading_training(["momentum"], trials=1, report_days=90)
    assert [row["strategy"] for row in rows] == ["momentum"]
    [stored] = list_backtests(engine)
    # 90 days from Sunday 2019-04-14 to the last bar: its first session is the Monday
    assert (str(stored["start"]), str(stored["end"])) == ("2019-04-15", "2019-07-12")
    assert stored["name"] == "stocks: the 90 days to 2019-07-12 (weekly training)"
    with get_client(sync_client=True) as client:
        links = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["backtest-report"])))
    [link] = [a for a in links if stored["name"] in (a.description or "")]
    assert link.type == "markdown" and "report.html" in link.data


@pytest.mark.parametrize(("strategy", "days", "why"), [
    ("momentum", 1000, "no training rows"),  # the period starts before the first bar
    ("pairs", 90, "risk.allow_shorts is false"),  # the config allows no shorts
])
def test_weekly_training_stands_without_its_report_and_says_why(prefect_server, ray_session, sqlite_url, monkeypatch,
                                                                 strategy, days, why):
    from prefect.artifacts import Artifact

    from flows.training import run_trading_training
    from lab.backtest import list_backtests

    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    engine = connect(sqlite_url)
    _store_random_walks(engine, ["AAPL", "MSFT", "IBM", "GOOG"], days=400)
    rows = run_trading_training([strategy], trials=1, report_days=days)
    assert [row["strategy"] for row in rows] == [strategy] and rows[0]["version"] == 1
    assert list_backtests(engine) == []
    note = Artifact.get("no-report-stocks")
    assert note is not None and f"the {days} days to 2019-07-12" in note.data and why in note.data


def test_the_weekly_report_refuses_an_asset_class_without_bars_naming_it(sqlite_url):
    from lab.backtest.periods import latest_periods
    from lab.config import load_config
    from lab.errors import DataError

    engine = connect(sqlite_url)
    _store_random_walks(engine, ["AAPL"], days=30)
    config = load_config("config/trading.json")
    with pytest.raises(DataError, match="crypto: no stored bars of its benchmark BTC to backtest on"):
        latest_periods(engine, config, ["momentum", "breakout"], days=90)
