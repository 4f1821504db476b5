"""The report, checked the way a person would: open it in headless Chromium and look."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from benchmarks.backtest import lab_sma
from lab.backtest import load_result, save_result
from lab.backtest.result import FILL_COLUMNS
from lab.db import connect
from lab.report import write_report, write_stored_report
from lab.report.charts import heat_limit, indicators, return_curves
from tests.conftest import missing_service
from tests.test_backtest import _adjusted, _hand_made_result, _store_bars

SYMBOL = "MSFT"


@pytest.fixture(scope="module")
def sma_run(shared_data):
    bars = _adjusted(shared_data, SYMBOL).loc["2016-01-01":"2018-12-31"]
    result = lab_sma({SYMBOL: bars}, {"method": "fixed", "fixed_amount": 20_000.0}, accounts="shared")
    return result, {SYMBOL: _adjusted(shared_data, SYMBOL)}


def test_report_is_one_self_contained_page_with_every_chart(sma_run, tmp_path):
    result, bars = sma_run
    path = write_report(result, bars, tmp_path)
    page = path.read_text()
    for png in ("equity.png", "drawdown.png", "monthly_returns.png", f"candles_{SYMBOL}.png"):
        assert (tmp_path / png).stat().st_size > 5_000
    assert page.count('src="data:image/png;base64,') == 4
    assert not re.search(r'(src|href)="(?!data:)', page), "nothing loaded from outside the file"


def test_report_shows_the_gate_with_measured_values(sma_run, tmp_path):
    result, bars = sma_run
    page = write_report(result, bars, tmp_path).read_text()
    sharpe = result.metrics()["portfolio"].sharpe
    verdict = "PASS" if sharpe > 1.0 else "FAIL"
    assert re.search(rf"<td>sharpe</td><td>{sharpe:.3f}</td><td>&gt; 1.000</td><td class=\"\w+\">{verdict}</td>",
                     page)
    assert f"buy&amp;hold {SYMBOL}" in page
    assert "Monthly returns table" in page and "<th>month</th>" in page
    # the share of bars with a position is named so, apart from how much of the equity was held
    assert "<th>time in market</th>" in page and "<th>avg gross exposure</th>" in page


def test_report_tables_the_monthly_returns_of_the_portfolio_each_strategy_and_buy_and_hold(tmp_path):
    page = write_report(_hand_made_result(), {}, tmp_path).read_text()
    table = page.split("<h2>Monthly returns table</h2>")[1].split("</table>")[0]
    assert "<tr><th>month</th><th>portfolio</th><th>a</th><th>b</th><th>buy&amp;hold BEN</th></tr>" in table
    assert "<tr><td>2021-02</td><td>0.00%</td><td>-1.00%</td><td>1.00%</td><td>20.00%</td></tr>" in table
    assert "<tr><td>2021-03</td><td>1.10%</td><td>1.20%</td><td>1.00%</td><td>-25.00%</td></tr>" in table


def test_report_names_the_data_gaps_near_the_top_after_the_summary(tmp_path):
    gappy = dataclasses.replace(_hand_made_result(), gaps={"BEN": ["2021-02-02", "2021-02-03"]})
    page = write_report(gappy, {}, tmp_path).read_text()
    note = "<li>BEN: 2 missing sessions: 2021-02-02 to 2021-02-03</li>"
    assert note in page
    assert page.index("initial cash 100,000") < page.index(note) < page.index("Success gate")


def test_report_says_which_symbols_have_candles_and_names_those_left_out(tmp_path):
    symbols = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]
    index = pd.bdate_range("2020-11-02", "2021-03-31", tz="UTC")
    closes = np.linspace(10.0, 12.0, len(index))
    bars = {s: pd.DataFrame({"open": closes, "high": closes + 0.5, "low": closes - 0.5, "close": closes,
                             "volume": 1_000.0}, index=index) for s in symbols}
    fills = pd.DataFrame([(f"f{i}", f"o{i}", index[-3 + i], "a", symbol, "buy", 1.0, 11.0, 0.0, 0.0, None)
                          for i, symbol in enumerate(["FFF", "FFF", "EEE"])], columns=FILL_COLUMNS)
    run = dataclasses.replace(_hand_made_result(), symbols=symbols, fills=fills)
    page = write_report(run, bars, tmp_path).read_text()
    assert [s for s in symbols if f"<h2>{s} candles</h2>" in page] == ["AAA", "BBB", "EEE", "FFF"]
    assert "Candles of the 4 most traded of the 6 symbols: FFF, EEE, AAA, BBB; not charted: CCC, DDD." in page


def test_a_one_day_run_reports_without_a_warning(tmp_path):
    run = _hand_made_result()
    one_day = dataclasses.replace(run, end=run.start, equity=run.equity.iloc[:1],
                                  strategy_equity=run.strategy_equity.iloc[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned of an empty monthly heatmap
        page = write_report(one_day, {}, tmp_path).read_text()
    assert "No month has a return yet: the period has a single bar." in page


def test_report_shows_how_far_the_signals_got(sma_run, tmp_path):
    result, bars = sma_run
    page = write_report(result, bars, tmp_path).read_text()
    signals = result.funnel["sma_cross"]["signals"]
    assert signals > 0
    assert f"<tr><td>signals</td><td>{signals}</td><td class=\"note\">" in page
    older = dataclasses.replace(result, funnel={})  # stored before runs counted their signals
    assert "how far each strategy" not in write_report(older, bars, tmp_path / "older").read_text()


def test_equity_chart_draws_each_curve_as_its_return_so_a_strategy_on_a_share_of_the_cash_reads_beside_the_portfolio(
        sma_run):
    result, _ = sma_run
    portfolio = result.equity_curve
    halves = dataclasses.replace(result, strategies=["active", "idle"], strategy_equity=pd.DataFrame(
        {"active": portfolio / 2, "idle": 50_000.0}, index=portfolio.index))
    curves = return_curves(halves)
    assert list(curves.columns) == ["portfolio", "active", "idle", f"buy & hold {SYMBOL}"]
    assert (curves.iloc[0] == 0).all()
    np.testing.assert_allclose(curves["active"], curves["portfolio"])
    assert (curves["idle"] == 0).all()
    assert curves["portfolio"].iloc[-1] == pytest.approx(100 * (portfolio.iloc[-1] / portfolio.iloc[0] - 1))


def test_monthly_heatmap_colours_tiny_months_pale_and_large_ones_by_the_largest():
    # a run whose best month made 0.02% was painted as deep as a run's best 20% month
    assert heat_limit(np.array([[0.0, 0.02, np.nan], [0.0, -0.01, 0.0]])) == 1.0
    assert heat_limit(np.array([[np.nan, np.nan]])) == 1.0
    assert heat_limit(np.array([[3.0, -20.0, np.nan]])) == 20.0


def test_candle_indicators_are_warmed_up_on_the_bars_before_the_window(sma_run):
    _, bars = sma_run
    window = slice(pd.Timestamp("2017-01-01", tz="UTC"), pd.Timestamp("2017-12-31", tz="UTC"))
    lines = indicators(bars[SYMBOL], window)
    assert lines.index[0] == bars[SYMBOL].loc[window].index[0] and lines.notna().all().all()
    closes = bars[SYMBOL]["close"]
    assert lines["SMA 50"].iloc[0] == pytest.approx(closes.loc[:lines.index[0]].iloc[-50:].mean(), rel=1e-12)

def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if (path := shutil.which(name)) is not None:
            return path
    missing_service("headless Chromium is not installed (Debian package `chromium`)")
    raise AssertionError("unreachable")


def test_report_renders_in_headless_chromium(sma_run, tmp_path):
    browser = _chromium()
    result, bars = sma_run
    page = write_report(result, bars, tmp_path / "report")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2200",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = mpimg.imread(shot)[..., :3]
    ink = (pixels.mean(axis=2) < 0.9).mean()
    assert pixels.shape[:2] == (2200, 1280)
    assert ink > 0.03, f"only {ink:.1%} of the page is not white"
    assert np.unique(pixels.reshape(-1, 3), axis=0).shape[0] > 50, "charts and tables, not a flat page"


ASSUMED = ("Assumptions: precomputed entry and exit flags (no model); fees 10 bps (stocks); "
           "slippage 0 bps; fills at most 100% of a bar&#x27;s volume; pre-trade limits: an entry up to "
           "1,000,000,000,000, entries up to 1,000,000,000,000 a day; sizing fixed (fixed_amount 20000); "
           "one account for every strategy and symbol.")


def test_report_states_what_its_figures_assume(sma_run, tmp_path):
    result, bars = sma_run
    assert ASSUMED in write_report(result, bars, tmp_path).read_text()


def test_stored_backtest_reports_the_same_figures(sma_run, tmp_path, shared_data):
    result, _ = sma_run
    engine = connect(f"sqlite:///{tmp_path / 'lab.db'}")
    _store_bars(engine, shared_data, [SYMBOL])
    save_result(engine, result)
    page = write_stored_report(engine, load_result(engine, result.portfolio), tmp_path / "out").read_text()
    assert f"{100 * result.metrics()['portfolio'].total_return:.2f}%" in page
    assert ASSUMED in page


def test_cli_backtest_then_report(tmp_path, shared_data):
    home = Path(os.environ["LAB_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    engine = connect(f"sqlite:///{home / 'lab.db'}")
    _store_bars(engine, shared_data)
    lab = [sys.executable, "-m", "lab.cli.main"]
    run = subprocess.run([*lab, "backtest", "-s", "momentum", "--start", "2019-01-01", "--end", "2019-03-29",
                          "--symbol", "AAPL", "--symbol", "MSFT", "--symbol", "IBM", "--symbol", "KO",
                          "--export", str(tmp_path / "export"), "--format", "csv"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert "Success gate" in run.stdout and (tmp_path / "export" / "trades.csv").exists()
    assert "how far each strategy's got" in run.stdout and "│ screened " in run.stdout
    report = subprocess.run([*lab, "report", "--export", str(tmp_path / "later"), "--format", "csv"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert report.returncode == 0, report.stderr
    assert Path(report.stdout.strip().splitlines()[-1]).name == "report.html"
    for frame in ("trades", "orders", "positions", "equity"):  # a stored run exports what the run did
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "later" / f"{frame}.csv"),
                                      pd.read_csv(tmp_path / "export" / f"{frame}.csv"))
    odd = subprocess.run([*lab, "report", "--export", str(tmp_path / "x"), "--format", "xlsx"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert odd.returncode == 1 and "--format 'xlsx': expected one of parquet, csv" in odd.stderr
    bad = subprocess.run([*lab, "backtest", "-s", "momentum", "--start", "2019-06-01", "--end", "2019-01-01"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 1 and "is after its end" in bad.stderr
