"""The `lab` CLI for the foundation: clear errors, non-zero exits, no traceback spew."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=120)


@pytest.mark.parametrize(("name", "value", "shown"), [
    ("max_drawdown", 0.0146, "1.46%"), ("max_drawdown", 0.004, "0.40%"), ("win_rate", 0.5862, "58.62%"),
    ("win_rate", math.nan, "-"), ("win_rate", None, "-"), ("sharpe", 1.8239, "1.82"), ("trades", 29, "29"),
    ("profit_factor", math.inf, "inf"), ("profit_factor", "inf", "inf"),  # fresh, and as Metrics.as_dict stores it
])
def test_a_figure_reads_the_same_in_every_cli_table(name, value, shown):
    from lab.cli._common import figure

    assert figure(name, value) == shown


def test_db_current_reports_the_head_revision_after_upgrade():
    assert lab("db", "upgrade").returncode == 0
    from lab.db.migrate import head_revision

    lines = lab("db", "current").stdout.splitlines()
    assert f"current:  {head_revision()}" in lines and f"head:     {head_revision()}" in lines


def test_unreachable_database_is_a_clear_error_with_the_password_hidden():
    result = lab("models", "list", env={"LAB_DATABASE_URL": "postgresql+psycopg://lab:s3cret@127.0.0.1:1/lab"})
    assert result.returncode == 1
    assert "cannot reach database" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("url", "reason"), [
    ("bogus://u:s3cret@h/x", "no SQLAlchemy dialect 'bogus'"),
    ("notaurl", "not a database URL"),
    ("mysql://u:s3cret@h/x", "its driver MySQLdb is not installed"),
    ("postgresql+psycopg://u:s3cret@h:port/x", "not a database URL"),
])
def test_an_unsupported_or_malformed_database_url_names_the_variable_and_what_is_supported(url, reason):
    result = lab("models", "list", env={"LAB_DATABASE_URL": url})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert message.startswith("error: LAB_DATABASE_URL ") and reason in message
    assert "supported: SQLite (sqlite:///PATH) and PostgreSQL via psycopg" in message
    assert "s3cret" not in result.stderr + result.stdout


@pytest.mark.parametrize("home", ["a-file", "a-file/home", "/proc/lab-home"])
def test_a_lab_home_that_cannot_be_a_folder_is_one_line_naming_it(tmp_path: Path, home: str):
    (tmp_path / "a-file").write_text("not a folder")
    if home.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc: a folder that takes no new folders")
    path = tmp_path / home
    result = lab("models", "list", env={"LAB_HOME": str(path)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: LAB_HOME {path}: cannot create it as a folder (" in " ".join(result.stderr.split())


def test_activating_a_version_that_does_not_exist_fails_cleanly():
    result = lab("models", "activate", "4242")
    assert result.returncode == 1
    assert "model version 4242 does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_rollback_to_a_missing_version_fails_cleanly():
    result = lab("models", "rollback", "7")
    assert result.returncode == 1 and "model version 7 does not exist" in result.stderr


def test_models_list_with_an_unknown_domain_fails_cleanly():
    result = lab("models", "list", "--domain", "sports")
    assert result.returncode == 1 and "unknown domain 'sports'" in result.stderr


def test_config_check_prints_one_line_per_problem(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"universe": {"stocks": {"symbols": ["A"], "benchmark": "B"}},
                               "risk": {"max_position_pct": 3}, "sizing": {"metod": "risk"}}))
    result = lab("config", "check", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{bad}: ") for line in lines)


def test_config_check_accepts_the_shipped_file():
    result = lab("config", "check")
    assert result.returncode == 0 and result.stdout.strip().endswith(": ok")


def test_config_check_warns_of_an_enabled_strategy_the_risk_rules_refuse(tmp_path: Path):
    config = json.loads((ROOT / "config" / "trading.json").read_text())
    config["strategies"]["pairs"]["enabled"] = True  # every pair is a short leg; shorts stay off
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(config))
    result = lab("config", "check", str(path))
    assert result.returncode == 0 and result.stdout.strip().endswith(": ok (1 warning)")
    assert f"{path}: warning: strategies.pairs: enabled, but it trades short" in result.stderr
    assert "set risk.allow_shorts to true or disable pairs" in " ".join(result.stderr.split())


@pytest.mark.parametrize("args", [("models", "list"), ("db", "current")])
def test_commands_work_on_postgresql(pg_url, args):
    assert lab(*args, env={"LAB_DATABASE_URL": pg_url}).returncode == 0


def test_activating_a_version_the_gate_kept_back_says_so_and_the_list_shows_why(lab_home: Path, tmp_path: Path):
    from lab.runtime import open_lab

    registry = open_lab().registry
    model = tmp_path / "m.ubj"
    model.write_bytes(b"a model")
    version = registry.save_version("trading", "momentum", model, note="OOS AUC 0.497 is not above 0.520")
    listed = lab("models", "list")
    assert "OOS AUC 0.497 is not above 0.520" in listed.stdout
    activated = lab("models", "activate", str(version.id))
    assert activated.returncode == 0
    assert "the promotion gate kept it back (OOS AUC 0.497 is not above 0.520); it trades now because you asked" \
        in activated.stdout
    again = lab("models", "activate", str(version.id))
    assert again.returncode == 0 and "kept it back" not in again.stdout


def test_an_unknown_migration_revision_is_a_clear_error():
    for command in ("upgrade", "downgrade"):
        result = lab("db", command, "nosuchrev")
        assert result.returncode == 1
        assert "revision 'nosuchrev': Can't locate revision identified by 'nosuchrev'" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["serve", "--port", "99999"], ["demo", "--port", "0"],
                                  ["metrics", "serve", "--port", "70000"]])
def test_a_port_outside_the_tcp_range_is_refused(args):
    result = lab(*args)
    assert result.returncode == 2 and "Invalid value for '--port'" in result.stderr


@pytest.mark.parametrize("args", [["tune", "--trials", "0"], ["demo", "--trials", "0"]])
def test_a_trial_budget_below_one_is_refused_by_every_command_that_tunes(args):
    result = lab(*args)
    assert result.returncode == 2 and "Input should be greater than or equal to 1" in result.stderr


@pytest.mark.parametrize("command", [["serve"], ["metrics", "serve"], ["demo"]])
def test_a_port_in_use_is_refused_before_any_work(command):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = lab(*command, "--port", str(port))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: --port {port} on 127.0.0.1: cannot listen there (Address already in use)" in result.stderr


def test_the_demo_names_a_missing_config_before_starting_ray_or_prefect(tmp_path: Path):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    result = lab("demo", "--port", str(port), env={"LAB_CONFIG": str(tmp_path / "trading.json")})
    assert result.returncode == 1 and f"error: {tmp_path / 'trading.json'}: file not found" in result.stderr
    assert "Traceback" not in result.stderr and "Ray" not in result.stderr


@pytest.mark.parametrize("args", [["backtest", "-s", "momentum", "--start", "2019-01-01", "--end", "2019-06-01",
                                   "--export"], ["grafana", "render", "--out"], ["report", "--out"]])
def test_an_output_folder_that_cannot_be_created_is_refused_before_the_work(tmp_path: Path, args):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = lab(*args, str(blocker / "out"))
    assert result.returncode == 1
    assert (f"{args[-1]} {blocker / 'out'}: cannot create it ({blocker} is a file, not a folder)"
            in " ".join(result.stderr.split()))
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["backtest", "-s", "momentum", "--start", "2019-01-01", "--end", "2019-06-01",
                                   "--export"], ["grafana", "render", "--out"], ["report", "--out"]])
def test_an_output_folder_that_is_a_file_is_refused_saying_so(tmp_path: Path, args):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = lab(*args, str(blocker))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: {args[-1]} {blocker}: a file, not a folder" in " ".join(result.stderr.split())


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc: a folder that exists but takes no files")
@pytest.mark.parametrize("args", [["backtest", "-s", "momentum", "--start", "2019-01-01", "--end", "2019-06-01",
                                   "--export"], ["grafana", "render", "--out"], ["report", "--out"],
                                  ["features", "--no-ray", "--out"]])
def test_an_output_folder_that_takes_no_files_is_refused_before_the_work(args):
    target = "/proc" if args[0] != "features" else "/proc/features.parquet"
    result = lab(*args, target)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{args[-1]} /proc: cannot write there (" in result.stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--window-days", "0"], 2, "Invalid value for '--window-days': Input should be greater than or equal to 7"),
    (["--walk-forward", "sideways"], 2, "Invalid value for '--walk-forward': Value error, 'sideways' is not one of "
                                        "'retrain', 'pretrained'"),
    (["--symbol", "AAPL", "--symbol", "aapl"], 1, "error: symbols: Value error, each symbol once, got AAPL more than once"),
    (["--format", "xlsx"], 1, "error: --format 'xlsx': expected one of parquet, csv"),
])
def test_a_bad_backtest_setting_is_one_line_naming_it(args, code, message):
    result = lab("backtest", "-s", "momentum", "--start", "2019-01-01", "--end", "2019-06-01", *args)
    assert result.returncode == code and message in result.stderr
    assert "Traceback" not in result.stderr


def test_without_the_trading_config_the_error_says_where_it_looked_and_how_to_point_at_it(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "LAB_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "lab.cli.main", "portfolio"], capture_output=True, text=True,
                            env={**env, "LAB_HOME": str(tmp_path / "home"), "COLUMNS": "200"}, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (f"error: config/trading.json: file not found (the trading config, set by LAB_CONFIG; relative to "
            f"{tmp_path})") in result.stderr


@pytest.mark.parametrize(("chosen", "effective"), [(None, "false"), ("true", "true")])
def test_every_command_keeps_prefect_telemetry_off_unless_the_user_turns_it_on(monkeypatch, chosen, effective):
    from lab.cli import main as cli

    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    if chosen is not None:
        monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", chosen)
    monkeypatch.setattr(sys, "argv", ["lab", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == effective


def test_every_option_of_every_command_says_what_it_does():
    import typer.main

    from lab.cli.main import app

    def silent(command, path: str) -> list[str]:
        if hasattr(command, "commands"):  # a group
            return [o for name, sub in command.commands.items() for o in silent(sub, f"{path} {name}")]
        return [f"{path} {'/'.join(p.opts)}" for p in command.params
                if getattr(p, "param_type_name", "") == "option" and not p.help]

    assert silent(typer.main.get_command(app), "lab") == []


def test_lab_serve_stopped_by_sigterm_shuts_down_as_on_ctrl_c_and_frees_its_port(tmp_path: Path):
    import signal

    import httpx

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli.main", "serve", "--port", str(port)], text=True,
                            env={**env, "COLUMNS": "200"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        shown = []
        for line in proc.stdout:  # up once it says so (its app has answered), or ended (EOF)
            shown.append(line)
            if "serving; Ctrl-C stops it" in line:
                break
        assert proc.poll() is None, "".join(shown) + proc.communicate()[1]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, out + err
    with socket.create_server(("127.0.0.1", port)):  # nothing left listening on it (an orphaned proxy)
        pass
