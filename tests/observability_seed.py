"""A small but complete lab history written through the ORM, for the board and exporter tests.

Prices are a seeded random walk; indicators are computed from them with TA-Lib; the paper
portfolio replays a handful of round trips, so trades, positions, snapshots and cash agree
with each other the way the trading engine writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import talib
from sqlalchemy import Engine

from lab.db import session_scope
from lab.db.models import (
    Backtest,
    Indicator,
    IngestionRun,
    ModelEvent,
    ModelVersion,
    Order,
    PortfolioSnapshot,
    Position,
    PriceBar,
    Signal,
    Trade,
    TradingControl,
    TradingCycle,
    TuningRun,
)

__all__ = ["Seeded", "seed_lab"]

START = datetime(2025, 1, 2, tzinfo=UTC)
DAYS = 120
SYMBOLS = {"AAPL": ("stocks", 185.0, "offline"), "MSFT": ("stocks", 410.0, "offline"),
           "BTC": ("crypto", 42000.0, "coingecko")}


@dataclass(frozen=True)
class Seeded:
    start: datetime
    end: datetime
    symbols: tuple[str, ...]
    strategies: tuple[str, ...]
    portfolio: str = "paper"


def _bars(rng: np.random.Generator, first: float) -> dict[str, np.ndarray]:
    close = first * np.exp(np.cumsum(rng.normal(0.0005, 0.015, DAYS)))
    open_ = np.concatenate([[first], close[:-1]]) * (1 + rng.normal(0, 0.003, DAYS))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.006, DAYS)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.006, DAYS)))
    volume = rng.integers(1_000_000, 5_000_000, DAYS).astype(float)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _indicators(close: np.ndarray) -> dict[str, np.ndarray]:
    upper, middle, lower = talib.BBANDS(close, timeperiod=20, nbdevup=2, nbdevdn=2)
    macd, signal, hist = talib.MACD(close, fastperiod=12, slowperiod=26, signalperiod=9)
    return {"sma_20": talib.SMA(close, 20), "sma_50": talib.SMA(close, 50), "bb_upper": upper,
            "bb_middle": middle, "bb_lower": lower, "rsi_14": talib.RSI(close, 14),
            "macd": macd, "macd_signal": signal, "macd_hist": hist}


def seed_lab(engine: Engine, *, seed: int = 7) -> Seeded:
    """Write prices, indicators, ingestion, research and a paper portfolio's history."""
    rng = np.random.default_rng(seed)
    days = [START + timedelta(days=i) for i in range(DAYS)]
    closes: dict[str, np.ndarray] = {}
    with session_scope(engine) as s:
        for symbol, (asset_type, first, source) in SYMBOLS.items():
            bars = _bars(rng, first)
            closes[symbol] = bars["close"]
            s.add_all(PriceBar(asset_type=asset_type, symbol=symbol, interval="1d", ts=ts, source=source,
                               **{k: float(v[i]) for k, v in bars.items()}) for i, ts in enumerate(days))
            for name, values in _indicators(bars["close"]).items():
                s.add_all(Indicator(symbol=symbol, interval="1d", ts=ts, name=name, value=float(v))
                          for ts, v in zip(days, values, strict=True) if not np.isnan(v))
            for run in range(3):
                started = days[-1] - timedelta(days=2 - run)
                failed = source == "coingecko" and run == 1
                s.add(IngestionRun(run_id=f"ingest-{run}", provider=source, symbol=symbol,
                                   status="failed" if failed else "ok", rows_stored=0 if failed else 1,
                                   error="429 Too Many Requests" if failed else None,
                                   started_at=started, finished_at=started + timedelta(seconds=3)))
        _research(s, days[-1])
        _paper(s, days, closes)
        s.add(Backtest(name="momentum 2025", portfolio="backtest:1", strategies=["momentum"],
                       start=date(2025, 1, 2), end=date(2025, 4, 30), config={}, metrics={"sharpe": 1.1}))
    return Seeded(start=days[0], end=days[-1], symbols=tuple(SYMBOLS), strategies=("momentum", "breakout"))


def _research(s, now: datetime) -> None:
    for strategy, scores in {"momentum": [0.54, 0.57], "breakout": [0.52]}.items():
        for i, score in enumerate(scores, start=1):
            version = ModelVersion(domain="stocks" if strategy == "momentum" else "crypto", strategy=strategy,
                                   version=i, model_path=f"/models/{strategy}-{i}.ubj",
                                   is_active=i == len(scores), status="active" if i == len(scores) else "retired",
                                   metrics={"auc": score}, created_at=now - timedelta(days=10 - i),
                                   activated_at=now - timedelta(days=10 - i))
            s.add(version)
            s.flush()
            s.add(TuningRun(strategy=strategy, asset_class=version.domain, trials=8, metric="auc",
                            best_score=score, sharpe=0.9 + i / 10, deflated_sharpe=0.5, best_params={"depth": 3},
                            started_at=now - timedelta(days=10 - i, hours=1),
                            finished_at=now - timedelta(days=10 - i), version_id=version.id, promoted=True))
            for action in ("registered", "activated"):
                s.add(ModelEvent(version_id=version.id, domain=version.domain, strategy=strategy,
                                 action=action, reason="auc margin passed", created_at=version.created_at))
    s.add(TuningRun(strategy="momentum", asset_class="stocks", trials=8, metric="auc", best_score=0.55,
                    started_at=now - timedelta(days=1), finished_at=now - timedelta(hours=23),
                    promoted=False, reason="no improvement over the active version"))


def _paper(s, days: list[datetime], closes: dict[str, np.ndarray]) -> None:
    """Two closed round trips and two open positions, replayed into daily snapshots."""
    plan = [("momentum", "AAPL", 20, 50, 40.0), ("momentum", "MSFT", 30, None, 20.0),
            ("breakout", "BTC", 45, 80, 0.5), ("breakout", "BTC", 90, None, 0.4)]
    cash, realized, fills = 100_000.0, 0.0, []
    for n, (strategy, symbol, entry_day, exit_day, qty) in enumerate(plan):
        for leg, (day, side) in enumerate(((entry_day, "buy"), (exit_day, "sell"))):
            if day is None:
                continue
            price = float(closes[symbol][day])
            signal = Signal(as_of=days[day], strategy=strategy, symbol=symbol, side=side, confidence=0.7,
                            entry=price, stop_loss=price * 0.93, take_profit=price * 1.15, ev=0.012, rr=2.1,
                            model_version=1, status="ordered")
            s.add(signal)
            s.flush()
            order = Order(client_order_id=f"paper-{n}-{leg}", strategy=strategy, symbol=symbol,
                          asset_type=SYMBOLS[symbol][0], side=side, order_type="market", qty=qty,
                          status="filled", filled_qty=qty, avg_fill_price=price, signal_id=signal.id,
                          intent="entry" if side == "buy" else "exit", cycle_as_of=days[day],
                          created_at=days[day], updated_at=days[day])
            s.add(order)
            s.flush()
            pnl = 0.0 if side == "buy" else (price - float(closes[symbol][entry_day])) * qty
            fills.append((day, strategy, symbol, side, qty, price, pnl, order.id))
    for i, (day, strategy, symbol, side, qty, price, pnl, order_id) in enumerate(sorted(fills)):
        s.add(Trade(fill_id=f"fill-{i}", order_id=order_id, strategy=strategy, symbol=symbol, side=side,
                    qty=qty, price=price, fee=price * qty * 0.0001, realized_pnl=pnl, ts=days[day]))
    s.add(Order(client_order_id="paper-rejected", strategy="momentum", symbol="MSFT", asset_type="stocks",
                side="buy", order_type="limit", qty=5, limit_price=100.0, status="rejected",
                reason="position limit", created_at=days[-1], updated_at=days[-1]))
    s.add(Signal(as_of=days[-1], strategy="momentum", symbol="AAPL", side="buy", confidence=0.66,
                 entry=float(closes["AAPL"][-1]), stop_loss=float(closes["AAPL"][-1]) * 0.93,
                 take_profit=float(closes["AAPL"][-1]) * 1.15, ev=0.009, rr=2.14, model_version=2, status="new"))

    peak, holdings = 0.0, {}
    open_fills = sorted(fills)
    for d, ts in enumerate(days):
        for day, strategy, symbol, side, qty, price, pnl, _ in open_fills:
            if day == d:
                key = (strategy, symbol)
                cash += -qty * price if side == "buy" else qty * price
                realized += pnl
                holdings[key] = holdings.get(key, (0.0, price))
                held = holdings[key][0] + (qty if side == "buy" else -qty)
                holdings[key] = (held, price if side == "buy" else holdings[key][1])
                if abs(held) < 1e-9:
                    del holdings[key]
        value = sum(q * float(closes[sym][d]) for (_, sym), (q, _) in holdings.items())
        unrealized = sum(q * (float(closes[sym][d]) - avg) for (_, sym), (q, avg) in holdings.items())
        equity = cash + value
        peak = max(peak, equity)
        s.add(PortfolioSnapshot(portfolio="paper", ts=ts, cash=cash, positions_value=value, equity=equity,
                                realized_pnl=realized, unrealized_pnl=unrealized, peak_equity=peak,
                                drawdown=1 - equity / peak, halted=False, open_positions=len(holdings),
                                benchmark_close=float(closes["AAPL"][d]),
                                by_strategy={k: {"realized_pnl": realized} for k in ("momentum", "breakout")}))
        s.add(TradingCycle(portfolio="paper", as_of=ts, status="completed", stage="snapshot",
                           started_at=ts, finished_at=ts + timedelta(seconds=4)))
    for (strategy, symbol), (qty, avg) in holdings.items():
        s.add(Position(portfolio="paper", strategy=strategy, symbol=symbol, asset_type=SYMBOLS[symbol][0],
                       qty=qty, avg_price=avg, last_price=float(closes[symbol][-1]), stop_loss=avg * 0.93,
                       take_profit=avg * 1.15, opened_at=days[0]))
    s.add(TradingControl(portfolio="paper", halted=False, kill_switch=False))
    # the next cycle died after placing orders (its flow failed): it stays "started"
    s.add(TradingCycle(portfolio="paper", as_of=days[-1] + timedelta(days=1), status="started", stage="orders",
                       started_at=days[-1] + timedelta(days=1)))
