"""The weekly Prefect flow ``tune_strategies`` on a real temporary Prefect server."""

import json

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
