"""The Prefect flow ``ingest_universe`` on a real temporary Prefect server."""

from __future__ import annotations

import pytest

from lab.bars import load_bars
from lab.db import connect
from lab.errors import DataError
from universe.assets import known_symbols


def test_flow_ingests_offline_universe_and_publishes_a_summary_artifact(prefect_server, sqlite_url, monkeypatch):
    from prefect.artifacts import Artifact

    from flows.ingest import ingest_universe

    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    state = ingest_universe(source="offline", symbols=["IBM", "BTC"], return_state=True)
    outcome = state.result()
    assert outcome["failed"] == {} and outcome["stored"] > 0
    assert {row["symbol"] for row in outcome["rows"]} == {"IBM", "BTC"}
    assert set(load_bars(connect(sqlite_url))["symbol"]) == {"IBM", "BTC"}
    artifact = Artifact.get("ingest-summary")  # the latest version of the key: this run's
    assert artifact is not None and artifact.flow_run_id == state.state_details.flow_run_id
    assert "IBM" in str(artifact.data)


def test_a_run_where_every_symbol_failed_ends_failed_naming_them_after_publishing_its_summary(
        prefect_server, sqlite_url, monkeypatch):
    from prefect.artifacts import Artifact

    from flows.ingest import ingest_universe

    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    state = ingest_universe(source="offline", symbols=["NOPE"], asset_class="stocks", return_state=True)
    assert state.is_failed()
    with pytest.raises(DataError, match=r"every symbol failed: NOPE \(offline: no offline stocks data for NOPE"):
        state.result()
    artifact = Artifact.get("ingest-summary")
    assert artifact is not None and artifact.flow_run_id == state.state_details.flow_run_id
    assert "NOPE" in str(artifact.data)


def test_a_run_where_some_symbols_failed_ends_failed_naming_them_and_keeps_what_the_others_stored(
        prefect_server, sqlite_url, monkeypatch):
    from flows.ingest import ingest_universe

    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    state = ingest_universe(source="offline", symbols=["IBM", "NOPE"], asset_class="stocks", return_state=True)
    assert state.is_failed()
    with pytest.raises(DataError, match=r"1 of 2 symbols failed: NOPE \(offline: no offline stocks data for NOPE"):
        state.result()
    assert set(load_bars(connect(sqlite_url))["symbol"]) == {"IBM"}


def test_the_flow_stores_the_ingested_symbols_metadata_as_lab_ingest_does(prefect_server, sqlite_url, monkeypatch):
    from flows.ingest import ingest_universe

    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    ingest_universe(source="offline", symbols=["IBM", "BTC"])
    with connect(sqlite_url).connect() as conn:
        assert (known_symbols(conn, "stocks"), known_symbols(conn, "crypto")) == ({"IBM"}, {"BTC"})
