"""``lab features``: stored bars in, one long Parquet file of the set out, problems listed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from lab.cli.main import app
from lab.db import connect
from lab.db.models import PriceBar
from lab.features import get_feature_set
from lab.featurestore import universe_features
from lab.runtime import open_lab
from tests.test_features_support import random_bars


@pytest.fixture
def stored(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    rows = [
        {"asset_type": "stocks", "symbol": symbol, "interval": "1d", "ts": ts.to_pydatetime(), "source": "test",
         **{k: float(v) for k, v in bar.items()}}
        for symbol, n, seed in (("AAPL", 260, 1), ("MSFT", 260, 2), ("IBM", 40, 3))
        for ts, bar in random_bars(n, seed=seed).iterrows()
    ]
    with connect(sqlite_url).begin() as conn:
        conn.execute(insert(PriceBar), rows)
    return sqlite_url


def test_features_command_writes_the_set_as_parquet_and_lists_problem_symbols(stored: str, tmp_path: Path) -> None:
    out = tmp_path / "f.parquet"
    result = CliRunner().invoke(app, ["features", "--symbols", "MSFT,IBM", "--feature-set", "momentum@1",
                                      "--out", str(out), "--no-ray"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert set(frame["symbol"]) == {"MSFT", "IBM"} and len(frame) == 300
    assert set(get_feature_set("momentum@1").columns) <= set(frame.columns)
    assert "IBM" in result.output and "too little history" in result.output


def test_features_command_names_unknown_sets_and_symbols(stored: str) -> None:
    runner = CliRunner()
    bad_set = runner.invoke(app, ["features", "--feature-set", "momentum@9", "--no-ray"])
    assert bad_set.exit_code != 0 and "unknown feature set 'momentum@9'" in str(bad_set.exception)
    bad_symbol = runner.invoke(app, ["features", "--symbols", "NOPE", "--no-ray"])
    assert bad_symbol.exit_code != 0 and "no stored bars for NOPE" in str(bad_symbol.exception)


def test_features_command_says_a_symbol_is_not_in_the_universe_before_starting_ray(stored: str) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lab.cli.main", "features", "--symbols", "ZZZ"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    config = os.environ["LAB_CONFIG"]
    assert result.returncode != 0
    assert (f"no stored bars for ZZZ: not in the universe ({config}); add it there, or "
            "`lab ingest --symbols ZZZ --asset-class stocks|crypto` stores its bars") in result.stderr
    assert "ingest first" not in result.stderr and "Ray" not in result.stderr + result.stdout


def test_features_command_refuses_an_output_it_cannot_write_before_computing(stored: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(app, ["features", "--out", str(blocker / "f.parquet"), "--no-ray"])
    assert result.exit_code != 0 and f"--out {blocker}: a file, not a folder" in str(result.exception)


@pytest.mark.parametrize("out", ["folder", ""])
def test_features_command_refuses_a_folder_as_its_output_file_before_computing(
        stored: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    monkeypatch.setattr("lab.cli.features.universe_features", lambda *a, **k: pytest.fail("computed first"))
    result = CliRunner().invoke(app, ["features", "--out", out, "--no-ray"])
    assert result.exit_code != 0
    assert f"--out {Path(out)}: a folder, not a file path" in str(result.exception)


def test_features_command_names_a_benchmark_without_stored_bars_as_a_problem(
        stored: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "trading.json"
    config.write_text(json.dumps({"universe": {"stocks": {"symbols": ["AAPL", "MSFT"], "benchmark": "ZZZ"}}}))
    monkeypatch.setenv("LAB_CONFIG", str(config))
    result = CliRunner().invoke(app, ["features", "--feature-set", "momentum@1", "--out", str(tmp_path / "f.parquet"),
                                      "--no-ray"])
    assert result.exit_code == 0, result.output
    assert {"ZZZ", "benchmark", "stored", "bars:", "rel_strength_20"} <= set(result.output.split())  # any width
    run = universe_features(open_lab(), "momentum@1", use_ray=False)
    assert ("ZZZ", "benchmark with no stored bars: rel_strength_20 is NaN for AAPL, MSFT") in run.problems


def test_features_command_shows_one_progress_row_per_benchmark_group(stored: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["features", "--symbols", "AAPL,MSFT", "--feature-set", "momentum@1",
                                      "--out", str(tmp_path / "f.parquet"), "--no-ray"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("momentum@1 (benchmark AAPL)")]
    assert len(rows) == 1 and "2/2" in rows[0]


def test_a_configured_coin_s_gaps_are_counted_in_calendar_days(
        stored: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BTC trades every day: its bars missing Saturday to Monday are a gap (one NYSE session)."""
    coin = random_bars(260, seed=4, start="2021-01-01")
    with connect(stored).begin() as conn:
        conn.execute(insert(PriceBar), [
            {"asset_type": "crypto", "symbol": "BTC", "interval": "1d", "ts": ts.to_pydatetime(), "source": "test",
             **{k: float(v) for k, v in bar.items()}}
            for ts, bar in coin.drop(pd.date_range("2021-03-06", "2021-03-08", tz="UTC")).iterrows()])
    config = tmp_path / "trading.json"
    config.write_text(json.dumps({"universe": {"stocks": {"symbols": ["AAPL"], "benchmark": "AAPL"},
                                               "crypto": {"symbols": ["BTC"], "benchmark": "BTC"}}}))
    monkeypatch.setenv("LAB_CONFIG", str(config))
    run = universe_features(open_lab(), "technical@1", use_ray=False)
    assert ("BTC", "1 gap of more than 2 missing days (largest: 3 days)") in run.problems
    assert not [p for s, p in run.problems if s == "AAPL" and "gap" in p]


def test_features_help_states_where_the_output_goes_by_default() -> None:
    result = CliRunner().invoke(app, ["features", "--help"], env={"COLUMNS": "300"})
    assert "Parquet file (default: LAB_HOME/features/<set name>-v<version>.parquet)" in result.output
