"""``lab tune``: tunes with a live progress bar and prints the leaderboard."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lab.cli.main import app
from lab.db import connect
from tests.test_models_pipeline import _store_random_walks


def test_tune_command_tunes_registers_and_prints_the_leaderboard(ray_session, sqlite_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # the progress bar holds locks that Tune cannot pickle with the run's state
    monkeypatch.setenv("LAB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("COLUMNS", "200")  # the leaderboard's reasons on one line
    _store_random_walks(connect(sqlite_url), ["AAPL", "MSFT", "IBM", "GOOG"], days=400)
    result = CliRunner().invoke(app, ["tune", "--strategy", "swing", "--trials", "2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "Tuning leaderboard" in result.output and "swing" in result.output
    # the columns lab demo shows too: whether the version is active, the gate's verdict below
    assert "┃ strategy ┃ metric ┃ oos score ┃ Sharpe ┃ deflated Sharpe ┃ trials ┃ version ┃ active ┃" in {
        " ".join(line.split()) for line in result.output.splitlines()}
    listed = CliRunner().invoke(app, ["models", "list"])
    assert "swing" in listed.output and "candidate" in listed.output
