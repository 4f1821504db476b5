"""config/trading.json is validated on load: every problem named by key path and file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.config import check_config, config_warnings, load_config
from lab.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "trading.json"


def write(tmp_path: Path, payload: object) -> Path:
    path = tmp_path / "trading.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def minimal(**extra: object) -> dict:
    return {"universe": {"stocks": {"symbols": ["AAPL"], "benchmark": "SPY"}}, **extra}


def test_the_shipped_config_is_valid():
    assert check_config(REPO_CONFIG) == []
    assert load_config(REPO_CONFIG).enabled_strategies()


def test_unknown_key_is_named_with_its_path_and_a_hint(tmp_path):
    path = write(tmp_path, minimal(risk={"max_postions": 10}))
    assert check_config(path) == [f"{path}: risk.max_postions: unknown key 'max_postions' (did you mean 'max_positions'?)"]


def test_wrong_type_is_named(tmp_path):
    path = write(tmp_path, minimal(risk={"max_positions": "ten"}))
    [problem] = check_config(path)
    assert problem.startswith(f"{path}: risk.max_positions:")


def test_position_cap_above_100_percent_is_out_of_range(tmp_path):
    path = write(tmp_path, minimal(risk={"max_position_pct": 1.5}))
    [problem] = check_config(path)
    assert "risk.max_position_pct" in problem and "less than or equal to 1" in problem


def test_every_problem_gets_its_own_line(tmp_path):
    path = write(tmp_path, minimal(risk={"max_position_pct": 2, "cash_reserve_pct": -1}, sizing={"method": "yolo"}))
    problems = check_config(path)
    assert len(problems) == 3
    assert {p.split(": ")[1] for p in problems} == {"risk.max_position_pct", "risk.cash_reserve_pct", "sizing.method"}


def test_malformed_json_names_the_line(tmp_path):
    path = write(tmp_path, '{"universe": {')
    [problem] = check_config(path)
    assert problem.startswith(f"{path}: line 1") and "invalid JSON" in problem


def test_missing_file(tmp_path):
    assert check_config(tmp_path / "nope.json") == [f"{tmp_path / 'nope.json'}: file not found"]


def test_a_file_that_is_not_json_text_or_not_a_file_is_named(tmp_path):
    binary = tmp_path / "lab.db"
    binary.write_bytes(b"SQLite format 3\x00\xbd\xff")
    assert check_config(binary) == [f"{binary}: not UTF-8 text (byte 16): expected a JSON file"]
    assert check_config(tmp_path) == [f"{tmp_path}: cannot read it (Is a directory)"]
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(binary)


def test_unknown_strategy_and_parameter_get_did_you_mean(tmp_path):
    path = write(tmp_path, minimal(strategies={"momentun": {}, "swing": {"params": {"rsi_oversld": 30}}}))
    problems = check_config(path)
    assert f"{path}: strategies.momentun: unknown strategy (did you mean 'momentum'?)" in problems
    assert f"{path}: strategies.swing.params.rsi_oversld: unknown parameter (did you mean 'rsi_oversold'?)" in problems


def test_strategy_parameter_outside_its_declared_range(tmp_path):
    path = write(tmp_path, minimal(strategies={"swing": {"params": {"rsi_oversold": 90}}}))
    assert check_config(path) == [f"{path}: strategies.swing.params.rsi_oversold: 90 is outside [20, 50]"]


def test_bad_cron_and_time_zone(tmp_path):
    path = write(tmp_path, minimal(schedules={"x": {"cron": "* *", "timezone": "Mars/Olympus"}}))
    problems = check_config(path)
    assert any("schedules.x.cron" in p for p in problems)
    assert any("schedules.x.timezone" in p and "Mars/Olympus" in p for p in problems)


def test_load_config_raises_with_all_problems(tmp_path):
    path = write(tmp_path, minimal(risk={"max_position_pct": 2}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == check_config(path)


def test_duplicate_symbols_are_rejected(tmp_path):
    path = write(tmp_path, {"universe": {"stocks": {"symbols": ["AAPL", "aapl"], "benchmark": "SPY"}}})
    [problem] = check_config(path)
    assert "duplicate symbols: AAPL" in problem


def test_a_ticker_in_both_asset_classes_is_rejected_naming_it_and_both(tmp_path):
    # price_history keys a series by symbol alone: SOL the stock and SOL the coin would overwrite each other
    path = write(tmp_path, {"universe": {"stocks": {"symbols": ["AAPL", "SOL"], "benchmark": "AAPL"},
                                         "crypto": {"symbols": ["BTC", "sol"], "benchmark": "BTC"}}})
    [problem] = check_config(path)
    assert problem.startswith(f"{path}: universe:") and "SOL is both a stocks and a crypto symbol" in problem


def test_strategy_problems_are_reported_beside_schema_problems(tmp_path):
    path = write(tmp_path, minimal(risk={"max_position_pct": 2}, strategies={"swing": {"params": {"rsi_oversold": 90}}}))
    problems = check_config(path)
    assert len(problems) == 2
    assert any("strategies.swing.params.rsi_oversold" in p for p in problems)


def test_an_exit_level_set_apart_from_the_barrier_its_model_learns_is_warned_of(tmp_path):
    config = json.loads(REPO_CONFIG.read_text())
    assert config_warnings(load_config(REPO_CONFIG)) == []
    config["strategies"]["breakout"] |= {"take_profit": 0.10, "stop_loss": 0.06}  # the label's stop: no warning
    (warning,) = config_warnings(load_config(write(tmp_path, config)))
    assert warning.startswith("strategies.breakout.take_profit: 0.1, but its model learns the odds of 0.15")


def test_a_history_start_that_is_not_a_date_is_named_and_a_date_stays_a_string_in_json(tmp_path):
    path = write(tmp_path, minimal(data={"history_start": "2004-13-01"}))
    [problem] = check_config(path)
    assert problem.startswith(f"{path}: data.history_start: ") and "month" in problem
    good = load_config(write(tmp_path, minimal(data={"history_start": "2012-03-01"})))
    assert good.model_dump(mode="json")["data"]["history_start"] == "2012-03-01"
