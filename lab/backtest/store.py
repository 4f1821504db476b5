"""A backtest in SQL: one ``backtests`` row plus the trading tables under its portfolio
name ``backtest:<key>`` (orders, trades, final positions, the account, one snapshot per
bar), so the boards and ``replay_ledger`` read a backtest exactly like the paper account.

Storing the same run again replaces it (the key hashes the spec and the settings it read),
so a re-run never duplicates rows.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.orm import Session

from lab.backtest.result import EQUITY_COLUMNS, FILL_COLUMNS, ORDER_COLUMNS, POSITION_COLUMNS, BacktestResult
from lab.db import models as db
from lab.db import session_scope
from lab.errors import DataError
from lab.performance import Metrics, SuccessGate
from lab.trading.model import Fill, Position, Side
from lab.trading.store import write_position

__all__ = ["delete_result", "list_backtests", "load_result", "positions_over_time", "save_result"]

#: the latest runs an unknown run's error names (a lab holds hundreds after a few sweeps)
_NAMED_RUNS = 3

_TABLES = (db.Trade, db.Order, db.Position, db.PortfolioSnapshot, db.Account, db.Signal, db.TradingControl,
           db.TradingCycle)


def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def save_result(engine: Engine, result: BacktestResult) -> int:
    """Store (or replace, under the same id) the run; returns its ``backtests.id``."""
    figures = result.metrics()
    metrics = {name: m.as_dict() for name, m in figures.items()}
    gate = [{"name": c.name, "value": _none(c.value), "op": c.op, "threshold": c.threshold, "passed": c.passed}
            for c in SuccessGate().evaluate(figures["portfolio"])]
    meta = {"spec": result.config, "symbols": result.symbols, "benchmark": result.benchmark,
            "initial_cash": result.initial_cash, "periods_per_year": result.periods_per_year, "gaps": result.gaps,
            "first_bars": result.first_bars, "funnel": result.funnel, "settings": result.settings,
            "decided_by": result.decided_by, "models": result.models,
            "strategy_benchmarks": result.strategy_benchmarks}
    last = result.equity.iloc[-1]
    with session_scope(engine, write_lock=True) as session:
        # a run stored again keeps its id: `lab report ID` and links to it stay good
        kept_id = session.scalar(select(db.Backtest.id).where(db.Backtest.portfolio == result.portfolio))
        _clear(session, result.portfolio)
        row = db.Backtest(id=kept_id, name=result.name[:200], portfolio=result.portfolio, strategies=result.strategies,
                          start=result.start.date(), end=result.end.date(), config=meta,
                          metrics={"metrics": metrics, "gate": gate})
        session.add(row)
        session.add(db.Account(portfolio=result.portfolio, initial_cash=result.initial_cash,
                               cash=float(last["cash"]), peak_equity=float(result.equity["equity"].max())))
        # in bulk (one statement per table, not one round trip per order): a run of thousands
        # of orders is stored in a fraction of the time
        _insert(session, db.Order, [
            {"client_order_id": o.client_order_id, "portfolio": result.portfolio, "broker": "paper",
             "strategy": o.strategy, "symbol": o.symbol, "asset_type": o.asset_type, "side": o.side,
             "order_type": o.order_type, "qty": float(o.qty), "status": o.status, "filled_qty": float(o.filled_qty),
             "avg_fill_price": _none(o.avg_fill_price), "reason": _none(o.reason), "intent": o.intent,
             "pair": _none(o.pair), "cycle_as_of": o.ts.to_pydatetime(), "created_at": o.ts.to_pydatetime()}
            for o in result.orders.itertuples(index=False)])
        order_ids = dict(session.execute(select(db.Order.client_order_id, db.Order.id)
                                         .where(db.Order.portfolio == result.portfolio)).tuples().all())
        _insert(session, db.Trade, [
            {"fill_id": f.fill_id, "order_id": order_ids[f.client_order_id], "portfolio": result.portfolio,
             "strategy": f.strategy, "symbol": f.symbol, "side": f.side, "qty": float(f.qty), "price": float(f.price),
             "fee": float(f.fee), "realized_pnl": float(f.realized_pnl), "ts": f.ts.to_pydatetime()}
            for f in result.fills.itertuples(index=False)])
        for position in _final_books(result):
            write_position(session, position)
        peak = result.equity["equity"].cummax().tolist()
        by_strategy = result.strategy_equity[result.strategies].to_numpy(dtype=float).tolist()
        # each strategy's benchmark close beside its equity (the portfolio's is benchmark_close)
        compared = {s: result.closes_of(b).to_numpy(dtype=float).tolist() for s, b in result.strategy_benchmarks.items()}
        open_count = result.positions.groupby("ts").size().reindex(result.equity["ts"], fill_value=0).tolist()
        _insert(session, db.PortfolioSnapshot, [
            {"portfolio": result.portfolio, "ts": e.ts.to_pydatetime(), "cash": float(e.cash),
             "positions_value": float(e.positions_value), "equity": float(e.equity),
             "realized_pnl": float(e.realized_pnl), "unrealized_pnl": float(e.unrealized_pnl),
             "peak_equity": peak[i], "drawdown": float(1 - e.equity / peak[i]), "halted": False,
             "open_positions": open_count[i], "benchmark_close": _none(float(e.benchmark_close)),
             "by_strategy": {s: {"equity": value, **({"benchmark_close": _none(compared[s][i])} if s in compared else {})}
                             for s, value in zip(result.strategies, by_strategy[i], strict=True)}}
            for i, e in enumerate(result.equity.itertuples(index=False))])
        session.flush()
        return row.id


def delete_result(engine: Engine, backtest: int | str) -> str:
    """Remove a stored run (by id or portfolio name) with everything stored under its
    portfolio; returns that portfolio."""
    with session_scope(engine, write_lock=True) as session:
        portfolio = _stored(session, backtest).portfolio
        _clear(session, portfolio)
        return portfolio


def _clear(session: Session, portfolio: str) -> None:
    for table in _TABLES:
        session.execute(delete(table).where(table.portfolio == portfolio))
    session.execute(delete(db.Backtest).where(db.Backtest.portfolio == portfolio))


def _stored(session: Session, backtest: int | str) -> db.Backtest:
    """The run's row, by id or portfolio name; an unknown one is a DataError naming the latest stored runs."""
    row = session.scalar(select(db.Backtest).where(
        db.Backtest.id == int(backtest) if str(backtest).isdigit() else db.Backtest.portfolio == str(backtest)))
    if row is None:
        stored = session.execute(select(db.Backtest.id, db.Backtest.portfolio)
                                 .order_by(db.Backtest.created_at.desc(), db.Backtest.id.desc())).all()
        latest = ", ".join(f"{id_} ({portfolio})" for id_, portfolio in stored[:_NAMED_RUNS])
        if len(stored) <= _NAMED_RUNS:
            raise DataError(f"no backtest {backtest!r}; stored: {latest or 'none'}")
        raise DataError(f"no backtest {backtest!r}; the latest {_NAMED_RUNS} of the {len(stored)} stored: {latest}; "
                        f"`lab backtests` lists them all")
    return row


def _insert(session: Session, table: type[db.Base], rows: list[dict[str, Any]]) -> None:
    if rows:  # an empty list would be one row of defaults
        session.execute(insert(table), rows)


def _final_books(result: BacktestResult) -> list[Position]:
    """The books at the end as the live cycle keeps them: every position the run traded, from
    its fills (opened when, the pair it is a leg of, the P&L it realized), the open ones marked
    at the last close."""
    asset_types = dict(zip(result.orders["symbol"], result.orders["asset_type"], strict=True))
    books: dict[tuple[str, str], Position] = {}
    for f in result.fills.itertuples(index=False):
        position = books.setdefault((f.strategy, f.symbol), Position(
            portfolio=result.portfolio, strategy=f.strategy, symbol=f.symbol, asset_type=asset_types[f.symbol]))
        if not position.is_open:
            position.pair = _none(f.pair)
        position.apply(_fill(f))
    marks = result.positions[result.positions["ts"] == result.end].set_index(["strategy", "symbol"])["last_price"]
    for key, position in books.items():
        if position.is_open:
            position.last_price = float(marks[key])
    return list(books.values())


def _fill(f: Any) -> Fill:
    """A fills-frame row as the ``Fill`` it records."""
    return Fill(fill_id=f.fill_id, client_order_id=f.client_order_id, portfolio="", strategy=f.strategy,
                symbol=f.symbol, side=Side(f.side), qty=float(f.qty), price=float(f.price), fee=float(f.fee),
                ts=f.ts.to_pydatetime())


def list_backtests(engine: Engine) -> list[dict[str, Any]]:
    """The stored runs in the order they were stored, the latest last (a run stored again keeps
    its id, so ids do not tell): what names them, the portfolio's headline figures and whether
    they pass the success gate (judged now, as the report judges a stored run, not as stored: a
    run stored before a criterion was added is judged by it too)."""
    with session_scope(engine) as session:
        rows = session.scalars(select(db.Backtest).order_by(db.Backtest.created_at, db.Backtest.id)).all()
        out = []
        for r in rows:
            portfolio = (r.metrics or {}).get("metrics", {}).get("portfolio", {})
            out.append({"id": r.id, "name": r.name, "portfolio": r.portfolio, "strategies": r.strategies,
                        "start": r.start, "end": r.end, "created_at": r.created_at,
                        **{k: portfolio.get(k) for k in ("total_return", "sharpe", "max_drawdown", "trades")},
                        "gate_passed": bool(portfolio) and all(
                            c.passed for c in SuccessGate().evaluate(Metrics.from_dict(portfolio)))})
        return out


def positions_over_time(fills: pd.DataFrame, closes: pd.DataFrame) -> pd.DataFrame:
    """Open positions at each bar of ``closes`` (index ts, columns symbols), by replaying the
    fills through ``Position.apply``: the ledger is the record, positions follow from it."""
    books: dict[tuple[str, str], Position] = {}
    rows = []
    by_ts: dict[pd.Timestamp, list] = {}  # one pass over the fills (a frame per bar took seconds on years)
    for f in fills.itertuples(index=False):
        by_ts.setdefault(f.ts, []).append(f)
    column = {symbol: j for j, symbol in enumerate(closes.columns)}
    values = closes.to_numpy(dtype=float)
    for t, ts in enumerate(closes.index):
        for f in by_ts.get(ts, ()):
            key = (f.strategy, f.symbol)
            position = books.setdefault(key, Position(portfolio="", strategy=f.strategy, symbol=f.symbol,
                                                      asset_type=""))
            position.apply(_fill(f))
        for (strategy, symbol), p in books.items():
            if p.is_open:
                price = float(values[t, column[symbol]])
                rows.append((ts, strategy, symbol, p.qty, p.avg_price, price, p.qty * price))
    return pd.DataFrame(rows, columns=POSITION_COLUMNS).sort_values(["ts", "strategy", "symbol"], ignore_index=True)


def load_result(engine: Engine, backtest: int | str, closes: pd.DataFrame | None = None) -> BacktestResult:
    """A stored run by id or portfolio name. ``closes`` (index ts, columns symbols; the
    stored bars by default) values positions over time, rebuilt from the stored fills."""
    with session_scope(engine) as session:
        row = _stored(session, backtest)
        meta, name, portfolio, strategies = row.config, row.name, row.portfolio, list(row.strategies)
        snapshots = session.scalars(select(db.PortfolioSnapshot).where(db.PortfolioSnapshot.portfolio == portfolio)
                                    .order_by(db.PortfolioSnapshot.ts)).all()
        equity = pd.DataFrame([(s.ts, s.cash, s.positions_value, s.equity, s.realized_pnl, s.unrealized_pnl,
                                s.benchmark_close) for s in snapshots], columns=EQUITY_COLUMNS)
        index = pd.DatetimeIndex(equity["ts"], name="ts")
        strategy_equity = pd.DataFrame([{k: v["equity"] for k, v in (s.by_strategy or {}).items()}
                                        for s in snapshots], index=index)
        compared = meta.get("strategy_benchmarks", {})
        # each benchmark other than the portfolio's, from the first strategy compared with it
        kept_by = {benchmark: strategy for strategy, benchmark in reversed(compared.items())
                   if benchmark != meta["benchmark"]}
        benchmark_closes = pd.DataFrame({benchmark: [s.by_strategy[strategy]["benchmark_close"] for s in snapshots]
                                         for benchmark, strategy in kept_by.items()}, index=index, dtype=float)
        orders = pd.DataFrame([(o.client_order_id, o.cycle_as_of, o.strategy, o.symbol, o.asset_type, o.side,
                                o.order_type, o.intent, o.qty, o.status, o.filled_qty, o.avg_fill_price, o.reason,
                                o.pair)
                               for o in session.scalars(select(db.Order).where(db.Order.portfolio == portfolio)
                                                        .order_by(db.Order.id))], columns=ORDER_COLUMNS)
        trades = session.execute(select(db.Trade, db.Order.client_order_id, db.Order.pair).join(
            db.Order, db.Trade.order_id == db.Order.id).where(db.Trade.portfolio == portfolio).order_by(db.Trade.id))
        fills = pd.DataFrame([(t.fill_id, coid, t.ts, t.strategy, t.symbol, t.side, t.qty, t.price, t.fee,
                               t.realized_pnl, pair) for t, coid, pair in trades], columns=FILL_COLUMNS)
    for frame in (equity, orders, fills):
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    start, end = equity["ts"].iloc[0], equity["ts"].iloc[-1]
    if closes is None:
        from lab.bars import load_bars

        bars = load_bars(engine, meta["symbols"], start=start.to_pydatetime(), end=end.to_pydatetime())
        closes = bars.pivot(index="ts", columns="symbol", values="close")
        if missing := sorted(set(fills["symbol"]) - set(closes.columns)):
            raise DataError(f"backtest {portfolio}: its positions are valued on the stored bars, and there are none "
                            f"of {', '.join(missing)} between {start.date()} and {end.date()} any more "
                            f"(ingest them again)")
    closes = closes.reindex(pd.DatetimeIndex(equity["ts"])).ffill()
    return BacktestResult(
        portfolio=portfolio, name=name, start=start, end=end, strategies=strategies, symbols=meta["symbols"],
        benchmark=meta["benchmark"], initial_cash=meta["initial_cash"], periods_per_year=meta["periods_per_year"],
        equity=equity, strategy_equity=strategy_equity, orders=orders, fills=fills,
        positions=positions_over_time(fills, closes), gaps=meta.get("gaps", {}),
        first_bars=meta.get("first_bars", {}), funnel=meta.get("funnel", {}), config=meta.get("spec", {}),
        settings=meta.get("settings", {}), decided_by=meta.get("decided_by", ""), models=meta.get("models", {}),
        strategy_benchmarks=compared, benchmark_closes=benchmark_closes)
