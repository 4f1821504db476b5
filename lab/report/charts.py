"""The report's charts as PNG files (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import talib

from lab.backtest.result import BacktestResult
from lab.performance import monthly_returns

__all__ = ["candlestick_chart", "drawdown_chart", "equity_chart", "heat_limit", "indicators", "monthly_heatmap", "return_curves"]

_MAX_CANDLES = 260


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def return_curves(result: BacktestResult) -> pd.DataFrame:
    """The equity chart's curves: the portfolio, each strategy and buy-and-hold of each
    benchmark (the portfolio's, then a strategy's own of another asset class), each in percent
    since its own start. A strategy trades a share of the cash, so its equity drawn beside the
    portfolio's sits flat at the bottom of the chart."""
    curves = {"portfolio": result.equity_curve,
              **{strategy: result.strategy_equity[strategy] for strategy in result.strategies},
              **{f"buy & hold {b}": result.buy_and_hold(b) for b in result.benchmarks}}
    return pd.DataFrame({name: 100.0 * (curve / curve.iloc[0] - 1.0) for name, curve in curves.items()})


def equity_chart(result: BacktestResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(11, 4.2))
    curves = return_curves(result)
    for name in curves.columns:
        style = ({"color": "#1f4e8c", "linewidth": 1.8} if name == "portfolio" else
                 {"linestyle": "--", "linewidth": 1.2} if name.startswith("buy & hold ") else
                 {"linewidth": 0.9, "alpha": 0.8})
        ax.plot(curves.index, curves[name].to_numpy(), label=name, **style)
    ax.axhline(0.0, color="#444444", linewidth=0.6)
    ax.set_title("Return vs benchmark (out of sample, after fees and slippage)")
    ax.set_ylabel("return since the start (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def drawdown_chart(result: BacktestResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(11, 2.6))
    dd = -100.0 * result.drawdown
    bench_dd = -100.0 * (1.0 - result.benchmark_curve / result.benchmark_curve.cummax())
    ax.fill_between(dd.index, dd.to_numpy(), 0.0, color="#c0392b", alpha=0.45, label="portfolio")
    ax.plot(bench_dd.index, bench_dd.to_numpy(), color="#888888", linewidth=0.9,
            label=f"buy & hold {result.benchmark}")
    ax.set_title("Drawdown (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def monthly_heatmap(result: BacktestResult, path: Path) -> Path:
    table = 100.0 * monthly_returns(result.equity_curve)
    fig, ax = plt.subplots(figsize=(11, 0.9 + 0.42 * max(len(table), 1)))
    values = table.to_numpy(dtype=float)
    limit = heat_limit(values)
    ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(table)), [str(y) for y in table.index])
    for (row, col), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(col, row, f"{value:.2f}" if 0 < abs(value) < 0.05 else f"{value:.1f}", ha="center", va="center",
                    fontsize=7)
    ax.set_title("Monthly returns (%)")
    return _save(fig, path)


#: the least a monthly return (%) must reach for the deepest colour: below it, months are pale
_HEAT_FLOOR = 1.0


def heat_limit(values: np.ndarray) -> float:
    """The monthly heatmap's colour scale (%, symmetric): the largest month, but at least
    ``_HEAT_FLOOR``, so a run of tiny months does not paint 0.02% as deep as a good month."""
    finite = np.abs(values[np.isfinite(values)])
    return max(float(finite.max()) if finite.size else 0.0, _HEAT_FLOOR)


def _candle_frame(bars: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Daily bars, or weekly/monthly candles when the period is too long to read daily."""
    for rule, label in ((None, "daily"), ("W-FRI", "weekly"), ("ME", "monthly")):
        frame = bars if rule is None else bars.resample(rule).agg(
            {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna()
        if len(frame) <= _MAX_CANDLES or rule == "ME":
            return frame, label
    raise AssertionError("unreachable")


def indicators(bars: pd.DataFrame, window: slice) -> pd.DataFrame:
    """SMA 20/50 and Bollinger bands (TA-Lib, on daily closes) over the bars in ``window``,
    computed on all of ``bars``: the bars before the window warm them up, so they are drawn
    from its first candle on."""
    closes = bars["close"].to_numpy(dtype=float)
    upper, _, lower = talib.BBANDS(closes, 20)
    frame = pd.DataFrame({"SMA 20": talib.SMA(closes, 20), "SMA 50": talib.SMA(closes, 50), "BB upper": upper,
                          "BB lower": lower}, index=bars.index)
    return frame.loc[window]


def candlestick_chart(bars: pd.DataFrame, fills: pd.DataFrame, symbol: str, path: Path, window: slice) -> Path:
    """Candles over ``window`` with their indicators (``indicators``) and fill markers."""
    lines = indicators(bars, window)
    candles, label = _candle_frame(bars.loc[window])
    if label != "daily":
        lines = lines.reindex(candles.index, method="ffill")
    x = mdates.date2num(candles.index.tz_convert(None).to_pydatetime())
    width = 0.7 * (float(np.median(np.diff(x))) if len(x) > 1 else 1.0)
    up = (candles["close"] >= candles["open"]).to_numpy()
    fig, ax = plt.subplots(figsize=(11, 4.2))
    colors = np.where(up, "#2e8b57", "#c0392b")
    ax.vlines(x, candles["low"], candles["high"], colors=colors, linewidth=0.7)
    body_low = np.minimum(candles["open"], candles["close"]).to_numpy()
    body = np.abs(candles["close"] - candles["open"]).to_numpy()
    ax.bar(x, np.maximum(body, 1e-9), width, bottom=body_low, color=colors, linewidth=0)
    for name, style in (("SMA 20", "-"), ("SMA 50", "-"), ("BB upper", ":"), ("BB lower", ":")):
        ax.plot(x, lines[name].to_numpy(), linestyle=style, linewidth=0.9, label=name)
    mine = fills[fills["symbol"] == symbol]
    for side, marker, color in (("buy", "^", "#0b6e0b"), ("sell", "v", "#a31515")):
        chosen = mine[mine["side"] == side]
        if len(chosen):
            ts = pd.DatetimeIndex(chosen["ts"]).tz_convert(None).to_pydatetime()
            ax.scatter(mdates.date2num(ts), chosen["price"], marker=marker, color=color, s=45, zorder=5,
                       edgecolors="black", linewidths=0.4, label=side)
    ax.xaxis_date()
    ax.set_title(f"{symbol}: {label} candles, indicators and fills")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7, ncol=3)
    return _save(fig, path)
