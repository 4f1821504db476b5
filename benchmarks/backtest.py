"""SMA-crossover backtests on real daily bars: the lab engine against backtesting.py,
vectorbt and a bare Python loop, in one run.

Same signals everywhere (SMA 10/30 crossings, decided on the close), same assumptions:
market orders fill at the next open, 10 bps commission per side, no slippage, a fixed
20,000 per entry in whole shares (floor(20,000 / decision close)), one 100,000 account per
symbol. The lab runs its real engine: PortfolioManager sizing and risk limits,
PaperTradingExecutor matching and fees, Position accounting, per-bar equity. The flags are
computed before each timing starts, for every engine alike.

Prints one JSON object as the last line:
  speedup_vs_backtesting_py        lab symbol-bars/s / backtesting.py symbol-bars/s
  ratio_vs_vectorbt                lab seconds per symbol-bar / vectorbt's (>1: lab slower)
  equity_rel_diff_vs_backtesting_py  max |lab - peer| / peer of the final equity per symbol
  ratio_vs_bare_loop               lab seconds per symbol-bar / a bare time-major loop's
  *_symbol_bars_per_s              throughput of each

Real data: ../shared/data/stocks (27 symbols); the throughput runs tile them to 500
symbols x 2,520 bars. Each engine's time is the best of ``REPEATS`` runs (vectorbt's after
its compiling run), the same for all. ``--quick`` uses fewer symbols and bars (under a minute).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import talib

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "stocks"
FEE, CASH, FIXED, FAST, SLOW = 0.001, 100_000.0, 20_000.0, 10, 30
REPEATS = 3


def load(symbol: str, data: Path = DATA) -> pd.DataFrame:
    """Split- and dividend-adjusted OHLC (scaled by adjusted_close / close), raw volume."""
    raw = pd.read_csv(data / f"{symbol}.csv", parse_dates=["timestamp"]).set_index("timestamp")
    factor = raw["adjusted_close"] / raw["close"]
    frame = pd.DataFrame({c: raw[c] * factor for c in ("open", "high", "low", "close")})
    frame["volume"] = raw["volume"].astype(float)
    frame.index = frame.index.tz_localize("UTC")
    return frame


def signals(close: pd.Series) -> tuple[pd.Series, pd.Series]:
    """SMA fast/slow crossings up (entries) and down (exits), once both averages exist."""
    fast, slow = talib.SMA(close.to_numpy(), FAST), talib.SMA(close.to_numpy(), SLOW)
    above = pd.Series(fast > slow, index=close.index)
    valid = pd.Series(~np.isnan(slow), index=close.index)
    ready = valid & valid.shift(1, fill_value=False)
    before = above.shift(1, fill_value=False)
    return above & ~before & ready, ~above & before & ready


def lab_sma(bars: dict[str, pd.DataFrame], sizing: dict, *, accounts: str = "per_symbol",
            flags: dict[str, tuple[pd.Series, pd.Series]] | None = None):
    """The SMA crossover through the lab engine, with the peer's assumptions configured:
    no slippage, the same commission rate, no volume cap, no risk or pre-trade limit in the way.
    ``flags``: each symbol's ``signals`` when computed already (the peers get theirs so too)."""
    from lab.backtest import BacktestSpec, CrossoverDecisions, backtest_config, run_with_decisions
    from lab.config import load_config

    symbols = sorted(bars)
    index = bars[symbols[0]].index
    spec = BacktestSpec(strategies=["sma_cross"], start=index[0].date(), end=index[-1].date(), symbols=symbols,
                        benchmark=symbols[0], accounts=accounts, config_overrides={
                            "strategies": {},
                            # the peers have no volume cap and no pre-trade notional limits
                            "execution": {"initial_cash": CASH, "slippage_bps": 0.0, "max_volume_share": 1.0,
                                          "fee_bps": {"stocks": FEE * 1e4, "crypto": FEE * 1e4},
                                          "max_order_notional": 1e12, "max_daily_notional": 1e12},
                            "sizing": sizing,
                            "risk": {"max_positions": 100, "max_position_pct": 1.0, "cash_reserve_pct": 0.0,
                                     "max_drawdown_halt": 1.0}})
    asset_types = dict.fromkeys(symbols, "stocks")
    config = backtest_config(load_config(ROOT / "config" / "trading.json"), spec, asset_types)
    flags = flags or {s: signals(b["close"]) for s, b in bars.items()}
    decisions = CrossoverDecisions("sma_cross", pd.DataFrame({s: f[0] for s, f in flags.items()}),
                                   pd.DataFrame({s: f[1] for s, f in flags.items()}))
    return run_with_decisions(config, spec, bars, decisions, strategies=["sma_cross"], asset_types=asset_types)


def run_lab(bars: dict[str, pd.DataFrame]) -> tuple[float, dict[str, float]]:
    flags = {s: signals(b["close"]) for s, b in bars.items()}
    started = time.perf_counter()
    result = lab_sma(bars, {"method": "fixed", "fixed_amount": FIXED}, flags=flags)
    return time.perf_counter() - started, _final_per_symbol(result, bars)


def _final_per_symbol(result, bars: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Each symbol's account: initial cash plus its realized and unrealized P&L, net of fees."""
    out = {}
    last = result.positions[result.positions["ts"] == result.end].set_index("symbol")
    for symbol in bars:
        fills = result.fills[result.fills["symbol"] == symbol]
        cash = CASH - float((np.where(fills["side"] == "buy", 1, -1) * fills["qty"] * fills["price"]).sum()) \
            - float(fills["fee"].sum())
        out[symbol] = cash + (float(last.at[symbol, "market_value"]) if symbol in last.index else 0.0)
    return out


def peer_backtest(frame: pd.DataFrame, entries: pd.Series, exits: pd.Series, size, *, fee: float = FEE):
    """backtesting.py on the same flags: enter when flat, close on exit; ``size(close)`` is
    what ``buy`` is asked for (whole shares, or a fraction of the equity)."""
    from backtesting import Backtest, Strategy

    enter, leave = entries.to_numpy(), exits.to_numpy()

    class Crossover(Strategy):
        def init(self):
            self.enter = self.I(lambda: enter.astype(float), plot=False)
            self.leave = self.I(lambda: leave.astype(float), plot=False)

        def next(self):
            if self.leave[-1] and self.position:
                self.position.close()
            elif self.enter[-1] and not self.position:
                self.buy(size=size(self.data.Close[-1]))

    data = frame.rename(columns=str.capitalize)
    data.index = data.index.tz_localize(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Backtest(data, Crossover, cash=CASH, commission=fee, finalize_trades=False).run()


def run_backtesting_py(bars: dict[str, pd.DataFrame]) -> tuple[float, dict[str, float]]:
    final, elapsed = {}, 0.0
    for symbol, frame in bars.items():
        entries, exits = signals(frame["close"])
        started = time.perf_counter()
        stats = peer_backtest(frame, entries, exits, lambda close: int(FIXED // close))
        elapsed += time.perf_counter() - started
        final[symbol] = float(stats["Equity Final [$]"])
    return elapsed, final


def run_vectorbt(bars: dict[str, pd.DataFrame]) -> tuple[float | None, str | None]:
    try:
        import vectorbt as vbt
    except ImportError as exc:
        return None, f"vectorbt not installed: {exc}"
    symbols = sorted(bars)
    close = pd.DataFrame({s: bars[s]["close"] for s in symbols})
    opens = pd.DataFrame({s: bars[s]["open"] for s in symbols})
    flags = {s: signals(bars[s]["close"]) for s in symbols}
    entries = pd.DataFrame({s: flags[s][0] for s in symbols}).shift(1, fill_value=False)
    exits = pd.DataFrame({s: flags[s][1] for s in symbols}).shift(1, fill_value=False)
    size = np.floor(FIXED / close).shift(1)
    def simulate(rows: slice) -> None:
        vbt.Portfolio.from_signals(close.iloc[rows], entries.iloc[rows], exits.iloc[rows], price=opens.iloc[rows],
                                   size=size.iloc[rows], size_type="amount", fees=FEE, init_cash=CASH).value()

    simulate(slice(None))  # numba compiles (and caches) on the first calls: keep that out of the timing
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        simulate(slice(None))
        timings.append(time.perf_counter() - started)
    return min(timings), None


def bare_loop(bars: dict[str, pd.DataFrame]) -> float:
    """A time-major loop with next-open fills, fees, cash/position updates and the equity of
    every bar: the floor that any engine producing the same outputs pays."""
    symbols = sorted(bars)
    opens = np.column_stack([bars[s]["open"].to_numpy() for s in symbols]).tolist()
    closes = np.column_stack([bars[s]["close"].to_numpy() for s in symbols]).tolist()
    flags = [signals(bars[s]["close"]) for s in symbols]
    enter = np.column_stack([f[0].to_numpy() for f in flags]).tolist()
    leave = np.column_stack([f[1].to_numpy() for f in flags]).tolist()
    n = len(symbols)
    started = time.perf_counter()
    cash, qty, pending = [CASH] * n, [0.0] * n, [0.0] * n
    equity = [0.0] * len(opens)
    for t in range(len(opens)):
        o, c, e, x = opens[t], closes[t], enter[t], leave[t]
        total = 0.0
        for i in range(n):
            if pending[i]:
                q = pending[i]
                cash[i] -= q * o[i] + abs(q) * o[i] * FEE
                qty[i] += q
                pending[i] = 0.0
            if x[i] and qty[i] > 0:
                pending[i] = -qty[i]
            elif e[i] and qty[i] == 0:
                pending[i] = float(int(FIXED // c[i]))
            total += cash[i] + qty[i] * c[i]
        equity[t] = total
    return time.perf_counter() - started


def best(run, bars: dict[str, pd.DataFrame]) -> tuple[float, dict[str, float]]:
    """The fastest of ``REPEATS`` runs (seconds) with that run's final equities."""
    return min((run(bars) for _ in range(REPEATS)), key=lambda timed: timed[0])


def tile(bars: dict[str, pd.DataFrame], count: int) -> dict[str, pd.DataFrame]:
    names = sorted(bars)
    return {f"{names[i % len(names)]}_{i // len(names)}": bars[names[i % len(names)]] for i in range(count)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer symbols and bars (under a minute)")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(json.dumps({"skipped": f"real data not found at {DATA}"}))
        sys.exit(0)
    n_real, n_tiled, n_bars = (6, 60, 756) if args.quick else (27, 500, 2520)
    real = {p.stem: load(p.stem).iloc[-n_bars:] for p in sorted(DATA.glob("*.csv"))[:n_real]}
    symbol_bars = sum(len(b) for b in real.values())

    first = next(iter(real))
    run_lab({first: real[first].iloc[:80]})  # one-time costs (calendar, config) outside the timing
    lab_time, lab_final = best(run_lab, real)
    bt_time, bt_final = best(run_backtesting_py, real)
    vbt_time, vbt_reason = run_vectorbt(real)
    diff = max(abs(lab_final[s] - bt_final[s]) / bt_final[s] for s in real)

    tiled = tile(real, n_tiled)
    tiled_bars = sum(len(b) for b in tiled.values())
    lab_big, _ = best(run_lab, tiled)
    loop_big = min(bare_loop(tiled) for _ in range(REPEATS))

    lab_rate, bt_rate = symbol_bars / lab_time, symbol_bars / bt_time
    print(json.dumps({
        "symbols": n_real, "bars": n_bars, "tiled_symbols": n_tiled,
        "lab_symbol_bars_per_s": round(lab_rate),
        "backtesting_py_symbol_bars_per_s": round(bt_rate),
        "vectorbt_symbol_bars_per_s": round(symbol_bars / vbt_time) if vbt_time else None,
        "lab_tiled_symbol_bars_per_s": round(tiled_bars / lab_big),
        "bare_loop_symbol_bars_per_s": round(tiled_bars / loop_big),
        "speedup_vs_backtesting_py": round(lab_rate / bt_rate, 3),
        "ratio_vs_vectorbt": round(lab_time / vbt_time, 3) if vbt_time else None,
        "ratio_vs_vectorbt_reason": vbt_reason,
        "equity_rel_diff_vs_backtesting_py": diff,
        "ratio_vs_bare_loop": round(lab_big / loop_big, 3),
    }))


if __name__ == "__main__":
    main()
