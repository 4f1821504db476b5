"""The trading cycle on real SQLite and PostgreSQL: idempotent re-runs, the ledger invariant,
and consistent books after a SIGKILL at several points of a cycle."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update
from typer.testing import CliRunner

from lab.cli.main import app
from lab.db import models as db
from lab.errors import TradingError
from lab.runtime import LabContext
from lab.settings import Settings
from lab.trading.cycle import CycleResult, run_trading_cycle
from lab.trading.store import replay_ledger, set_halt, sole_writer
from tests.fakes.trading import FixedPredictions, seed_bars, sessions, write_config

ROOT = Path(__file__).resolve().parents[1]
DAYS = [d.to_pydatetime() for d in sessions("stocks", "2023-03-01", "2023-03-10")]


@pytest.fixture
def ctx(engine, tmp_path, monkeypatch) -> LabContext:
    monkeypatch.setenv("LAB_CONFIG", str(write_config(tmp_path / "trading.json")))
    seed_bars(engine)
    return LabContext(settings=Settings(), engine=engine)


def count(ctx, model) -> int:
    with ctx.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def assert_books_consistent(ctx, portfolio: str = "paper") -> None:
    """cash + positions = equity, and replaying the trades reproduces positions and cash exactly."""
    ledger = replay_ledger(ctx.engine, portfolio)
    with ctx.engine.connect() as conn:
        cash = conn.execute(select(db.Account.cash).where(db.Account.portfolio == portfolio)).scalar_one_or_none()
        if cash is None:  # killed before the account was opened: nothing may have been booked
            assert conn.execute(select(func.count()).select_from(db.Trade)).scalar_one() == 0
            return
        rows = conn.execute(select(db.Position).where(db.Position.portfolio == portfolio)).all()
        snap = conn.execute(select(db.PortfolioSnapshot).where(db.PortfolioSnapshot.portfolio == portfolio)
                            .order_by(db.PortfolioSnapshot.ts.desc())).first()
        orders = conn.execute(select(db.Order.client_order_id)).scalars().all()
    assert ledger.cash == cash
    stored = {(r.strategy, r.symbol): (r.qty, r.avg_price, r.realized_pnl) for r in rows if r.qty != 0}
    replayed = {k: (p.qty, p.avg_price, p.realized_pnl) for k, p in ledger.positions.items() if p.qty != 0}
    assert stored == replayed
    assert cash >= 0
    assert len(orders) == len(set(orders))
    if snap is not None:
        assert math.isclose(snap.cash + snap.positions_value, snap.equity, rel_tol=1e-12)


def test_a_cycle_places_orders_that_fill_at_the_next_open_and_books_them(ctx):
    first = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    assert first.orders_placed > 0 and first.fills == 0
    second = run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions())
    assert second.fills >= first.orders_placed
    with ctx.engine.connect() as conn:
        trade_ts = set(conn.execute(select(db.Trade.ts)).scalars())
    assert trade_ts == {DAYS[1]}  # the next bar, never the decision bar
    assert_books_consistent(ctx)


def test_a_cycles_market_entries_count_against_the_daily_budget_before_they_fill(engine, tmp_path, monkeypatch):
    # each entry is about 5,000 (5% of equity): the budget takes two of the cycle's entries,
    # while open market orders counted nothing towards it until they filled the next day
    execution = {"initial_cash": 100_000, "slippage_bps": 10, "fee_bps": {"stocks": 1.0, "crypto": 10.0},
                 "max_daily_notional": 12_000}
    monkeypatch.setenv("LAB_CONFIG", str(write_config(tmp_path / "trading.json", execution=execution)))
    seed_bars(engine)
    ctx = LabContext(settings=Settings(), engine=engine)
    result = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(db.Order.status, db.Order.reason, db.Order.qty, db.Signal.entry).join(
            db.Signal, (db.Signal.symbol == db.Order.symbol) & (db.Signal.strategy == db.Order.strategy))).all()
    placed = [qty * entry for status, _, qty, entry in rows if status != "rejected"]
    refused = [reason for status, reason, _, _ in rows if status == "rejected"]
    assert result.orders_placed == len(placed) >= 2 and sum(placed) <= 12_000
    assert refused and all("would exceed max_daily_notional 12,000.00" in reason for reason in refused)
    with ctx.engine.connect() as conn:
        statuses = sorted(conn.execute(select(db.Signal.status)).scalars())
    assert statuses.count("skipped") == len(refused) and statuses.count("ordered") == len(placed)


def test_rerunning_a_cycle_places_no_second_order(ctx):
    run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    orders, signals = count(ctx, db.Order), count(ctx, db.Signal)
    again = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    assert again.already_completed
    assert (count(ctx, db.Order), count(ctx, db.Signal)) == (orders, signals)


def test_a_rerun_cycle_says_when_it_completed_and_its_summary_reads_back_the_same(ctx):
    first = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    again = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    with ctx.engine.connect() as conn:
        finished = conn.execute(select(db.TradingCycle.finished_at)).scalar_one()

    assert first.completed_at is None and again.completed_at == finished
    assert CycleResult.from_summary(again.summary()) == again
    assert again.explain() == first.explain()


def test_low_confidence_produces_no_orders(ctx):
    result = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(0.5))
    assert result.signals == 0 and count(ctx, db.Order) == 0


def test_a_recorded_halt_blocks_entries_until_lifted(ctx):
    run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    set_halt(ctx.engine, "paper", True, "drawdown 21% from peak")
    halted = run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions())
    assert halted.halted and halted.orders_placed == halted.exits
    set_halt(ctx.engine, "paper", False, None)
    assert not run_trading_cycle(ctx, DAYS[2], predictions=FixedPredictions()).halted


def test_a_pre_trade_check_rejects_with_its_reason_and_the_order_is_stored(ctx):
    run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(), pre_trade_checks=[lambda o: "kill switch is on"])
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(db.Order.status, db.Order.reason)).all()
    assert rows and all(r == ("rejected", "kill switch is on") for r in rows)


def test_a_cycle_reports_how_far_each_strategys_symbols_got_and_keeps_it(ctx):
    result = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(0.55))
    momentum = result.screening["momentum"]
    assert (momentum["screened"], momentum["confident"], momentum["best"]) == (4, 0, 0.55)
    assert momentum["rule"] > 0 and momentum["min_confidence"] == 0.6
    assert run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions()).screening == result.screening


def test_a_cycle_names_each_signal_the_books_refused_or_cut_and_why(ctx):
    run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    result = run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions())
    with ctx.engine.connect() as conn:
        signals = conn.execute(select(db.Signal).where(db.Signal.as_of == DAYS[1]).order_by(db.Signal.id)).all()
    expected = [f"{s.symbol} {s.strategy} signal " + ("not ordered: " if s.status == "skipped" else "ordered, limited by ")
                + s.reason for s in signals if s.reason is not None]
    assert any("already held or being entered" in note for note in expected)
    assert [note for note in result.notes if " signal " in note] == expected


def test_a_cycle_after_the_close_places_no_stock_order_and_says_so(ctx):
    after_close = DAYS[0].replace(hour=21)
    result = run_trading_cycle(ctx, after_close, predictions=FixedPredictions())
    with ctx.engine.connect() as conn:
        symbols = set(conn.execute(select(db.Order.symbol)).scalars())
        stock_signals = conn.execute(select(db.Signal).where(db.Signal.symbol != "BTC")).all()
    assert symbols <= {"BTC"} and not stock_signals and result.rejected == 0
    assert ("stocks market closed at 2023-03-01T21:00:00+00:00, next open 2023-03-02T14:30:00+00:00: "
            "no stocks entries or exits this cycle") in result.notes
    assert "momentum" not in result.screening and "breakout" in result.screening  # crypto trades on
    crypto_only = run_trading_cycle(ctx, after_close, portfolio="crypto", predictions=FixedPredictions(),
                                    asset_classes=["crypto"])
    assert not any("market closed" in note for note in crypto_only.notes)  # no stock held, none wanted


def test_exits_due_after_the_close_wait_for_the_next_cycle_in_market_hours(ctx):
    run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions())  # the entries fill
    with ctx.engine.begin() as conn:  # every stock position's stop is hit
        conn.execute(update(db.Position).where(db.Position.asset_type == "stocks").values(stop_loss=1e9))
    after_close = run_trading_cycle(ctx, DAYS[2].replace(hour=21), predictions=FixedPredictions(0.5))
    assert after_close.exits == 0
    in_hours = run_trading_cycle(ctx, DAYS[3].replace(hour=15), predictions=FixedPredictions(0.5))
    with ctx.engine.connect() as conn:
        held = conn.scalar(select(func.count()).select_from(db.Position).where(
            db.Position.asset_type == "stocks", db.Position.qty != 0))
    assert held > 0 and in_hours.exits == held


def test_a_cycle_before_the_portfolios_latest_is_refused_and_changes_nothing(ctx):
    run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions())
    before = [count(ctx, model) for model in (db.TradingCycle, db.Signal, db.Order, db.Trade)]
    with pytest.raises(TradingError, match=r"portfolio 'paper' already ran a cycle at 2023-03-02.*"
                                           r"one at 2023-03-01T00:00:00\+00:00 cannot run on its books"):
        run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    assert [count(ctx, model) for model in (db.TradingCycle, db.Signal, db.Order, db.Trade)] == before
    assert run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions()).already_completed
    assert run_trading_cycle(ctx, DAYS[0], portfolio="replay", predictions=FixedPredictions()).orders_placed > 0


class ServeDown:
    """The prediction service unreachable: the cycle fails at its prediction stage."""

    def predict(self, strategy, rows):
        raise TradingError("http://127.0.0.1:8000 unreachable: connection refused")


def test_a_later_cycle_is_refused_while_an_earlier_one_is_unfinished_and_the_earlier_resumes_on_rerun(ctx):
    with pytest.raises(TradingError, match="unreachable"):
        run_trading_cycle(ctx, DAYS[0], predictions=ServeDown())
    with pytest.raises(TradingError, match=r"portfolio 'paper' has an unfinished cycle at 2023-03-01T00:00:00\+00:00 "
                                           r"\(it failed or was stopped mid-way\): re-run it \(it resumes\) before the cycle at "
                                           r"2023-03-02T00:00:00\+00:00"):
        run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions())
    assert count(ctx, db.TradingCycle) == 1  # the refused one left no row
    resumed = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    assert not resumed.already_completed and resumed.orders_placed > 0
    assert run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions()).fills > 0
    assert_books_consistent(ctx)


def test_a_cycle_for_an_asset_class_the_universe_lacks_is_refused_by_name_and_stores_nothing(ctx):
    with pytest.raises(TradingError, match=r"asset class 'bond' is not in the config's universe \(known: crypto, "
                                           r"stocks\)"):
        run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(), asset_classes=["bond"])
    assert [count(ctx, model) for model in (db.TradingCycle, db.Signal, db.Order, db.Account)] == [0, 0, 0, 0]
    assert run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(), asset_classes=["stocks"]).orders_placed


def test_a_cycle_in_the_future_is_refused_and_changes_nothing(ctx):
    later = datetime.now(UTC) + timedelta(days=3)  # past the calendar's last session too, some years on
    for as_of in (later, later.replace(year=later.year + 4)):
        with pytest.raises(TradingError, match=r"as_of .* is in the future \(now .*\): a cycle decides on bars that"):
            run_trading_cycle(ctx, as_of, predictions=FixedPredictions())
    assert [count(ctx, model) for model in (db.TradingCycle, db.Signal, db.Order)] == [0, 0, 0]


@pytest.mark.parametrize(("portfolio", "message"), [
    ("backtest:0123456789ab", r"portfolio 'backtest:0123456789ab': names starting 'backtest:' hold stored backtests "
                              r"\(`lab backtests`\), which no cycle may trade on"),
    ("*", r"portfolio name '\*': it stands for every account \(the kill switch's default\)"),
])
def test_a_cycle_on_books_no_account_may_have_is_refused_and_changes_nothing(ctx, portfolio, message):
    with pytest.raises(TradingError, match=message):
        run_trading_cycle(ctx, DAYS[0], portfolio=portfolio, predictions=FixedPredictions())
    assert [count(ctx, model) for model in (db.TradingCycle, db.Signal, db.Order, db.Account)] == [0, 0, 0, 0]


def test_symbols_without_the_bar_a_cycle_decides_on_get_no_entries(ctx):
    run_trading_cycle(ctx, DAYS[1], portfolio="fresh", predictions=FixedPredictions())
    with ctx.engine.connect() as conn:
        symbols = set(conn.execute(select(db.Order.symbol).where(db.Order.portfolio == "fresh")).scalars())
    stale = sorted(symbols - {"BTC"})[0]
    with ctx.engine.begin() as conn:  # a cycle at a date decides on that session's bar: it is missing
        conn.execute(delete(db.PriceBar).where(db.PriceBar.symbol == stale, db.PriceBar.ts >= DAYS[1]))
    result = run_trading_cycle(ctx, DAYS[1], portfolio="stale", predictions=FixedPredictions())
    with ctx.engine.connect() as conn:
        stored = set(conn.execute(select(db.Order.symbol).where(db.Order.portfolio == "stale")).scalars())
    assert stale not in stored and stored  # the others still trade (another may take its place)
    assert result.screening["momentum"]["screened"] == 3
    assert f"no entries in {stale} (latest bar 2023-03-01; a cycle at 2023-03-02T00:00:00+00:00 decides on the " \
           f"stocks bar of 2023-03-02): ingest first (`lab ingest`)" in result.notes


def test_a_cycle_before_a_symbols_stored_history_says_where_its_bars_start_not_to_ingest(ctx):
    result = run_trading_cycle(ctx, datetime(2021, 6, 1, tzinfo=UTC), predictions=FixedPredictions(),
                               asset_classes=["crypto"])

    assert result.orders_placed == 0
    assert ["no entries in BTC (stored bars start at 2022-01-01; a cycle at 2021-06-01T00:00:00+00:00 decides on "
            "the crypto bar of 2021-06-01): nothing to decide on before then"] == result.notes


def test_a_cycle_at_a_past_time_in_market_hours_decides_on_the_last_closed_sessions_bars(ctx):
    in_hours = DAYS[1].replace(hour=15)  # that session trades until 21:00 UTC: its bar is not known yet
    run_trading_cycle(ctx, in_hours, predictions=FixedPredictions())
    with ctx.engine.connect() as conn:
        entries = dict(conn.execute(select(db.Signal.symbol, db.Signal.entry)).all())
        closes = dict(conn.execute(select(db.PriceBar.symbol, db.PriceBar.close).where(db.PriceBar.ts == DAYS[0])).all())
    assert entries and entries == {symbol: closes[symbol] for symbol in entries}  # BTC's day of DAYS[0] too


def test_several_days_keep_the_books_consistent(ctx):
    for day in DAYS:
        run_trading_cycle(ctx, day, predictions=FixedPredictions())
    assert count(ctx, db.Trade) > 0
    assert_books_consistent(ctx)


# --- crash safety: a real subprocess killed with SIGKILL at a named stage --------------------

SCRIPT = """
import os, sys, time
from datetime import datetime
from pathlib import Path
from lab.runtime import open_lab
from lab.trading.cycle import CycleResult, run_trading_cycle
from tests.fakes.trading import FixedPredictions

stage, nth, marker = os.environ.get("PAUSE_AT", ""), int(os.environ.get("PAUSE_NTH", "1")), Path(sys.argv[2])
seen = {"n": 0}

resume = Path(os.environ["RESUME_AT"]) if os.environ.get("RESUME_AT") else None

def hook(name):
    if name == stage:
        seen["n"] += 1
        if seen["n"] == nth:
            marker.write_text(name)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not (resume and resume.exists()):
                time.sleep(0.05)

run_trading_cycle(open_lab(), datetime.fromisoformat(sys.argv[1]), predictions=FixedPredictions(), hook=hook)
"""


def paused_cycle_process(ctx, tmp_path, as_of, *, pause_at: str, nth: int = 1,
                         resume_at: Path | None = None) -> subprocess.Popen:
    """A cycle in its own process, returned once it waits at the ``nth`` ``pause_at`` stage
    (until ``resume_at`` exists, or ten minutes)."""
    script = tmp_path / "cycle.py"
    script.write_text(SCRIPT)
    marker = tmp_path / f"paused-{pause_at}-{nth}"
    env = {**os.environ, "LAB_DATABASE_URL": ctx.engine.url.render_as_string(hide_password=False),
           "PAUSE_AT": pause_at, "PAUSE_NTH": str(nth), "RESUME_AT": str(resume_at or ""), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), as_of.isoformat(), str(marker)], env=env, cwd=ROOT)
    while not marker.exists():
        assert proc.poll() is None, f"the cycle ended before reaching {pause_at}"
        time.sleep(0.05)
    return proc


def run_cycle_process(ctx, tmp_path, as_of, *, pause_at: str, nth: int = 1) -> None:
    """A cycle killed (SIGKILL) at the ``nth`` ``pause_at`` stage."""
    proc = paused_cycle_process(ctx, tmp_path, as_of, pause_at=pause_at, nth=nth)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize(("day", "stage", "nth"), [
    (0, "order_stored", 2),
    (0, "signals_stored", 1),
    (1, "fill_booked", 2),
    (1, "snapshot", 1),
])
def test_a_cycle_killed_mid_way_resumes_with_consistent_books_and_no_duplicates(ctx, tmp_path, day, stage, nth):
    if day == 1:
        run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    run_cycle_process(ctx, tmp_path, DAYS[day], pause_at=stage, nth=nth)
    assert_books_consistent(ctx)
    run_trading_cycle(ctx, DAYS[day], predictions=FixedPredictions())
    assert_books_consistent(ctx)
    reference_orders = count(ctx, db.Order)
    assert run_trading_cycle(ctx, DAYS[day], predictions=FixedPredictions()).already_completed
    assert count(ctx, db.Order) == reference_orders
    with ctx.engine.connect() as conn:
        status = conn.execute(select(db.TradingCycle.status).where(db.TradingCycle.as_of == DAYS[day])).scalar_one()
    assert status == "completed"


def test_a_second_cycle_on_a_portfolio_is_refused_while_one_runs_on_it(ctx, tmp_path):
    """Two cycles on one book at once would each size entries on the cash and positions the
    other is about to change (and the later one could finish first)."""
    resume = tmp_path / "resume"
    running = paused_cycle_process(ctx, tmp_path, DAYS[0], pause_at="signals_stored", resume_at=resume)
    try:
        with pytest.raises(TradingError, match=r"portfolio 'paper' is busy: another trading cycle.*"
                                               r"the cycle at 2023-03-01T15:00:00\+00:00 was not started"):
            run_trading_cycle(ctx, DAYS[0].replace(hour=15), predictions=FixedPredictions())
        assert run_trading_cycle(ctx, DAYS[0], portfolio="other", predictions=FixedPredictions()).orders_placed
    finally:
        resume.touch()
        assert running.wait(timeout=120) == 0
    with ctx.engine.connect() as conn:
        cycles = conn.execute(select(db.TradingCycle.as_of).where(db.TradingCycle.portfolio == "paper")).scalars()
        assert list(cycles) == [DAYS[0]]  # the refused one left no row
    later = run_trading_cycle(ctx, DAYS[0].replace(hour=15), predictions=FixedPredictions())
    with ctx.engine.connect() as conn:
        entered = conn.execute(select(db.Order.strategy, db.Order.symbol).where(db.Order.portfolio == "paper")).all()
    assert later.signals > 0 and len(entered) == len(set(entered))  # the first cycle's entries are pending
    assert_books_consistent(ctx)


def crash_at(stage: str):
    """A cycle hook that stops the cycle in this process at ``stage``, as a crash there would."""
    def hook(name: str) -> None:
        if name == stage:
            raise RuntimeError(f"killed at {stage}")

    return hook


def test_an_order_recorded_before_a_crash_and_not_sent_is_refused_once_the_kill_switch_is_on(ctx):
    from lab.trading import killswitch

    with pytest.raises(RuntimeError):  # killed between recording an order and sending it
        run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(), hook=crash_at("order_stored"))
    killswitch.engage(ctx.engine, "paper", "operator stop")
    resumed = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    second = run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions())
    with ctx.engine.connect() as conn:
        orders = conn.execute(select(db.Order.status, db.Order.reason)).all()
    assert resumed.orders_placed == 0 and second.fills == 0
    assert orders and all(status == "rejected" and "kill switch" in reason for status, reason in orders)


def kill_switch_on(ctx, monkeypatch, portfolio: str):
    """`lab kill-switch on` for ``portfolio``, on the cycle's database and config."""
    monkeypatch.setenv("LAB_DATABASE_URL", ctx.engine.url.render_as_string(hide_password=False))
    return CliRunner().invoke(app, ["kill-switch", "on", "--reason", "operator stop", "--portfolio", portfolio])


def cycle_orders(ctx, as_of: datetime) -> list[tuple[str, str | None]]:
    with ctx.engine.connect() as conn:
        return conn.execute(select(db.Order.status, db.Order.reason).where(db.Order.cycle_as_of == as_of)).all()


def test_the_kill_switch_cancels_the_paper_orders_so_the_next_cycle_fills_none(ctx, monkeypatch):
    first = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())

    on = kill_switch_on(ctx, monkeypatch, "*")
    second = run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions())

    assert on.exit_code == 0, on.output + repr(on.exception)
    assert f"cancelled {first.orders_placed} open orders at paper" in on.output
    assert first.orders_placed > 1 and second.fills == 0 and second.orders_placed == 0
    assert set(cycle_orders(ctx, DAYS[0])) == {("cancelled", "kill switch: operator stop")}
    assert_books_consistent(ctx)


def test_the_kill_switch_books_what_the_paper_orders_filled_in_an_unfinished_cycle(ctx, monkeypatch):
    first = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    with pytest.raises(RuntimeError):  # killed before its sync booked the fills of the first cycle's orders
        run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions(), hook=crash_at("claimed"))

    on = kill_switch_on(ctx, monkeypatch, "paper")
    resumed = run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions())

    assert on.exit_code == 0, on.output + repr(on.exception)
    assert first.orders_placed > 1 and resumed.fills == 0  # filled at its open, before the switch
    assert set(cycle_orders(ctx, DAYS[0])) == {("filled", None)} and count(ctx, db.Trade) == first.orders_placed
    assert_books_consistent(ctx)


def test_the_kill_switch_leaves_the_paper_orders_of_a_running_cycle_and_says_so(ctx, monkeypatch):
    run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    with sole_writer(ctx.engine, "paper", what="a cycle"):
        on = kill_switch_on(ctx, monkeypatch, "paper")

    assert on.exit_code == 1 and "open orders at paper were NOT cancelled" in on.output
    assert "portfolio 'paper' is busy" in on.output
    assert set(cycle_orders(ctx, DAYS[0])) == {("pending", None)}


def test_a_cycle_at_a_time_in_another_zone_is_the_cycle_at_that_instant(ctx):
    from zoneinfo import ZoneInfo

    first = run_trading_cycle(ctx, DAYS[0].astimezone(ZoneInfo("America/New_York")), predictions=FixedPredictions())
    again = run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    assert first.as_of == DAYS[0] and first.as_of.tzinfo is UTC
    assert again.already_completed and count(ctx, db.TradingCycle) == 1


def test_a_cash_sized_entry_killed_after_its_fill_was_booked_resumes_without_a_second_fill(engine, tmp_path,
                                                                                              monkeypatch):
    monkeypatch.setenv("LAB_CONFIG", str(write_config(
        tmp_path / "trading.json", sizing={"method": "all_in", "all_in_fraction": 0.2},
        risk={"max_positions": 6, "max_position_pct": 1.0, "cash_reserve_pct": 0.0, "max_sector_pct": 1.0},
        execution={"initial_cash": 100_000, "slippage_bps": 10, "fee_bps": {"stocks": 1.0, "crypto": 10.0},
                   "max_order_notional": 1e9, "max_daily_notional": 1e9})))
    seed_bars(engine)
    ctx = LabContext(settings=Settings(), engine=engine)
    run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())

    with pytest.raises(RuntimeError):  # killed after booking a fill
        run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions(0.5), hook=crash_at("fill_booked"))
    run_trading_cycle(ctx, DAYS[1], predictions=FixedPredictions(0.5))
    run_trading_cycle(ctx, DAYS[2], predictions=FixedPredictions(0.5))
    with ctx.engine.connect() as conn:
        orders = conn.execute(select(db.Order.qty, db.Order.filled_qty, db.Order.notional, db.Order.status)).all()
        fills_per_order = conn.execute(select(func.count()).select_from(db.Trade).group_by(db.Trade.order_id)).scalars()
    assert orders and all(status == "filled" and filled == qty for qty, filled, _, status in orders)
    assert set(fills_per_order) == {1}  # each resolved at its fill price, once; no top-up to the estimate
    assert_books_consistent(ctx)


def test_a_resumed_cycle_records_each_signals_outcome_as_its_order_stands(ctx):
    with pytest.raises(RuntimeError):  # killed between recording an order and the signal's outcome
        run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions(), hook=crash_at("order_stored"))
    run_trading_cycle(ctx, DAYS[0], predictions=FixedPredictions())
    with ctx.engine.connect() as conn:
        outcomes = conn.execute(select(db.Signal.status, db.Order.status).join(
            db.Order, db.Order.signal_id == db.Signal.id)).all()
    assert outcomes and all(signal == ("skipped" if order == "rejected" else "ordered") for signal, order in outcomes)
