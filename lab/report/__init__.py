"""``lab report``: one self-contained HTML page (charts embedded) plus the PNG files.

A person should be able to open it offline, mail it, or attach it to a Prefect run, and see
at a glance how the strategies did next to buy-and-hold, how deep the drawdowns went, and
whether the plan's success gate passed, with the measured value beside each criterion.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from lab.backtest.funnel import funnel_table, refusals
from lab.backtest.result import BacktestResult
from lab.backtest.spec import folder_name
from lab.performance import PERCENT_FIGURES, SuccessGate
from lab.report.charts import candlestick_chart, drawdown_chart, equity_chart, monthly_heatmap

__all__ = ["report_dir", "write_report", "write_stored_report"]

_CANDLE_SYMBOLS = 4
_COLUMNS = ["total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown", "max_drawdown_days",
            "trades", "win_rate", "profit_factor", "avg_win", "avg_loss", "time_in_market", "avg_gross_exposure",
            "turnover", "positive_months"]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;
background:#fff}h1{margin-bottom:4px}.sub{color:#666;margin-top:0}table{border-collapse:collapse;
margin:8px 0 20px}th,td{border:1px solid #ddd;padding:4px 6px;text-align:right;font-size:13px}
th:first-child,td:first-child{text-align:left}th{background:#f3f5f8}.pass{background:#d9f2d9;
font-weight:600}.fail{background:#f8d7d7;font-weight:600}img{max-width:100%;display:block;margin:6px 0 18px}
.gaps{color:#8a5a00}td.note{text-align:left;color:#666}
"""


def _fmt(name: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "inf" if value == math.inf else "–"
    if name in PERCENT_FIGURES:
        return f"{100.0 * value:.2f}%"
    if isinstance(value, int):
        return str(value)
    return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.3f}"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _metrics_table(result: BacktestResult) -> str:
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in _COLUMNS)
    rows = []
    for name, metrics in result.metrics().items():
        values = asdict(metrics)
        rows.append(f"<tr><td>{html.escape(name)}</td>"
                    + "".join(f"<td>{_fmt(c, values[c])}</td>" for c in _COLUMNS) + "</tr>")
    return f"<table><tr><th>strategy</th>{head}</tr>{''.join(rows)}</table>"


def _gate_table(result: BacktestResult, gate: SuccessGate) -> str:
    rows = []
    for check in result.gate(gate):
        status = "pass" if check.passed else "fail"
        rows.append(f"<tr><td>{check.name.replace('_', ' ')}</td><td>{_fmt(check.name, check.value)}</td>"
                    f"<td>{html.escape(check.op)} {_fmt(check.name, check.threshold)}</td>"
                    f'<td class="{status}">{status.upper()}</td></tr>')
    return ("<table><tr><th>criterion</th><th>measured</th><th>required</th><th>result</th></tr>"
            + "".join(rows) + "</table>")


def _funnel_table(result: BacktestResult) -> str:
    """The funnel, each stage with what it counts, and the refusals' reasons below it."""
    columns, rows = funnel_table(result.funnel)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row[:-1])
                   + f'<td class="note">{html.escape(row[-1])}</td></tr>' for row in rows)
    why = "".join(f"<li>{html.escape(line)}</li>" for line in refusals(result.funnel))
    return f"<table><tr>{head}</tr>{body}</table>" + (f"<ul>{why}</ul>" if why else "")


def _monthly_table(table: pd.DataFrame) -> str:
    """``BacktestResult.monthly_returns``, one row per month: the portfolio, each strategy and
    buy-and-hold side by side."""
    if table.empty:
        return "<p>No month has a return yet: the period has a single bar.</p>"
    head = "".join(f"<th>{html.escape(name)}</th>" for name in table.columns)
    rows = "".join(
        f"<tr><td>{month}</td>" + "".join(f"<td>{_fmt('total_return', v)}</td>" for v in row) + "</tr>"
        for month, row in zip(table.index, table.to_numpy(dtype=float), strict=True))
    return f"<table><tr><th>month</th>{head}</tr>{rows}</table>"


#: each sizing method's setting, named in the assumptions line
_SIZING = {"fixed": "fixed_amount", "percent": "percent_of_equity", "risk": "risk_per_trade",
           "kelly": "kelly_fraction", "all_in": "all_in_fraction"}


def _assumptions(result: BacktestResult) -> str:
    """What the figures assume, from the stored spec and settings (parts an older stored run
    did not keep are left out)."""
    parts = [result.decided_by] if result.decided_by else []
    if execution := result.settings.get("execution"):
        universe = result.settings.get("universe") or dict.fromkeys(execution["fee_bps"], True)
        traded = {asset_class for asset_class, symbols in universe.items() if symbols}  # the run's
        fees = ", ".join(f"{bps:g} bps ({asset_class})" for asset_class, bps in execution["fee_bps"].items()
                         if asset_class in traded)
        parts.append(f"fees {fees}; slippage {execution['slippage_bps']:g} bps; fills at most "
                     f"{execution['max_volume_share']:.0%} of a bar's volume")
        if "max_daily_notional" in execution:  # (a run stored before the settings kept them has none)
            parts.append(f"pre-trade limits: an entry up to {execution['max_order_notional']:,.0f}, entries up to "
                         f"{execution['max_daily_notional']:,.0f} a day")
    if sizing := result.settings.get("sizing"):
        setting = _SIZING[sizing["method"]]
        parts.append(f"sizing {sizing['method']} ({setting} {sizing[setting]:g})")
    if accounts := result.config.get("accounts"):
        parts.append("one account per symbol, each with the initial cash" if accounts == "per_symbol"
                     else "one account for every strategy and symbol")
    return f'<p class="sub">Assumptions: {html.escape("; ".join(parts))}.</p>' if parts else ""


def _most_traded(result: BacktestResult, bars: dict[str, pd.DataFrame], window: slice) -> list[str]:
    """The symbols to draw candles of: the ``_CANDLE_SYMBOLS`` most traded among those with
    bars in ``window`` (then the untraded, by name)."""
    drawable = {s for s, frame in bars.items() if len(frame.loc[window])}
    traded = [s for s in result.fills["symbol"].value_counts().index if s in drawable]
    return (traded + [s for s in sorted(drawable) if s not in traded])[:_CANDLE_SYMBOLS]


#: the symbols without candles a report names; the rest are counted
_NAMED_UNCHARTED = 10


def _uncharted(result: BacktestResult, charted: list[str]) -> str:
    """Which symbols have candle charts and which not, where some have none (only the
    ``_CANDLE_SYMBOLS`` most traded are drawn): a symbol's chart is not silently missing."""
    left_out = [symbol for symbol in result.symbols if symbol not in charted]
    if not left_out:
        return ""
    named = ", ".join(left_out[:_NAMED_UNCHARTED])
    more = f" and {len(left_out) - _NAMED_UNCHARTED} more" if len(left_out) > _NAMED_UNCHARTED else ""
    drawn = (f"Candles of the {len(charted)} most traded of the {len(result.symbols)} symbols: "
             f"{', '.join(charted)}; not charted: " if charted else "No candles (no bars in the period) of: ")
    return f'<p class="sub">{html.escape(f"{drawn}{named}{more}.")}</p>'


def report_dir(home: Path, portfolio: str) -> Path:
    """Where a run's report lives under the lab's home."""
    return home / "reports" / folder_name(portfolio)


def write_report(result: BacktestResult, bars: dict[str, pd.DataFrame], out_dir: Path,
                 *, gate: SuccessGate | None = None) -> Path:
    """Write ``report.html`` and its PNGs into ``out_dir``; returns the HTML path.

    ``bars`` maps symbol -> daily OHLCV (indexed by tz-aware ts) for the candlestick charts;
    bars before the run's start warm their indicators up.
    """
    gate = gate or SuccessGate()
    out_dir.mkdir(parents=True, exist_ok=True)
    monthly = result.monthly_returns()
    charts = [
        ("Equity vs benchmark: return since the start", equity_chart(result, out_dir / "equity.png")),
        ("Drawdown", drawdown_chart(result, out_dir / "drawdown.png")),
        # a single bar has no return: no month to colour (matplotlib warns of an empty image)
        *([("Monthly returns", monthly_heatmap(result, out_dir / "monthly_returns.png"))] if len(monthly) else []),
    ]
    window = slice(result.start, result.end + pd.Timedelta(days=1))
    charted = _most_traded(result, bars, window)
    candles = [(f"{symbol} candles", candlestick_chart(
        bars[symbol], result.fills, symbol, out_dir / f"candles_{symbol.replace('/', '_')}.png", window))
        for symbol in charted]
    gaps = "".join(f"<li>{html.escape(note)}</li>" for note in result.gap_notes())
    title = html.escape(f"Backtest {result.name}")
    own = [f"{strategy} vs {b}" for strategy, b in result.strategy_benchmarks.items() if b != result.benchmark]
    benchmark = result.benchmark + (f" ({', '.join(own)})" if own else "")
    body = [
        f"<h1>{title}</h1>",
        (f'<p class="sub">{result.start.date()} to {result.end.date()} · strategies: '
         f"{html.escape(', '.join(result.strategies))} · {len(result.symbols)} symbols · benchmark "
         f"{html.escape(benchmark)} · initial cash {result.initial_cash:,.0f} · portfolio "
         f"<code>{html.escape(result.portfolio)}</code></p>"),
        _assumptions(result),
        *([f'<h2>Data gaps</h2><ul class="gaps">{gaps}</ul>'] if gaps else []),
        "<h2>Success gate (portfolio)</h2>", _gate_table(result, gate),
        "<h2>Per strategy, portfolio and buy-and-hold</h2>", _metrics_table(result),
        *(["<h2>Signals: how far each strategy's got</h2>", _funnel_table(result)] if result.funnel else []),
        *(f"<h2>{html.escape(name)}</h2>{_img(path, name)}" for name, path in charts),
        "<h2>Monthly returns table</h2>", _monthly_table(monthly),
        _uncharted(result, charted),
        *(f"<h2>{html.escape(name)}</h2>{_img(path, name)}" for name, path in candles),
    ]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>")
    path = out_dir / "report.html"
    partial = path.with_suffix(".html.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(path)  # atomic: an interrupted run never leaves a half-written report
    return path


def write_stored_report(engine: Engine, result: BacktestResult, out_dir: Path) -> Path:
    """The report of a stored backtest (``load_result``), candles from the stored bars."""
    from lab.bars import bars_by_symbol, load_bars

    warmup = (result.start - pd.Timedelta(days=120)).to_pydatetime()  # SMA 50 is defined from the start
    bars = bars_by_symbol(load_bars(engine, result.symbols, start=warmup, end=result.end.to_pydatetime()))
    return write_report(result, bars, out_dir)
