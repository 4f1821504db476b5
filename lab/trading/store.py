"""The trading books in SQL: orders, fills (``trades``), positions, cash, snapshots, controls.

A fill is booked in one transaction with everything it changes (its trade row, the
position, the account's cash, the order's status), and ``trades.fill_id`` is unique, so a
crash leaves either all of it or none, and booking the same fill twice is a no-op.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Engine, select
from sqlalchemy.orm import Session

from lab.config import TradingConfig
from lab.db import models as db
from lab.db import session_scope
from lab.db.locks import try_exclusive
from lab.errors import TradingError
from lab.trading.model import (
    Fill,
    Intent,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    cash_delta,
)
from lab.trading.portfolio import PortfolioManager

__all__ = ["Ledger", "SqlBookkeeper", "check_portfolio_name", "sole_writer", "hold_books", "load_books",
           "existing_books", "load_open_orders", "load_orders", "store_order", "book_fill", "save_snapshot", "set_halt",
           "lift_halt", "replay_ledger", "write_position"]

#: ``positions.opened_at`` is NOT NULL; a closed position (kept for its realized P&L) stores this
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


#: the longest portfolio name the tables hold
_NAME_LENGTH = 64
#: the name that stands for every account (the kill switch's "all")
ALL_PORTFOLIOS = "*"


def check_portfolio_name(portfolio: str) -> None:
    """A name the books can hold: 1 to 64 characters, no spaces at either end, not ``*``
    (every account, to the kill switch) and not a stored backtest's (those books are a
    finished run's record: trading on them would change it)."""
    if not portfolio.strip() or portfolio != portfolio.strip() or len(portfolio) > _NAME_LENGTH:
        raise TradingError(f"portfolio name {portfolio!r}: expected 1 to {_NAME_LENGTH} characters, "
                           f"without spaces at either end")
    if portfolio == ALL_PORTFOLIOS:
        raise TradingError(f"portfolio name {ALL_PORTFOLIOS!r}: it stands for every account (the kill switch's "
                           f"default); name one portfolio")
    if portfolio.startswith(db.BACKTEST_PREFIX):
        raise TradingError(f"portfolio {portfolio!r}: names starting {db.BACKTEST_PREFIX!r} hold stored backtests "
                           f"(`lab backtests`), which no cycle may trade on; name another portfolio")


@contextmanager
def sole_writer(engine: Engine, portfolio: str, *, what: str) -> Iterator[None]:
    """Hold the portfolio's books for ``what`` (a cycle, lifting its halt), one at a time in
    every process: a second cycle on them would size entries on cash and positions the first
    is changing, and write its stale view of them back. Refused at once, not queued."""
    with hold_books(engine, portfolio) as taken:
        if not taken:
            raise TradingError(f"portfolio {portfolio!r} is busy: another trading cycle (or a lift of its halt) holds "
                               f"its books, so {what} was not started; run it again once that one ends")
        yield


@contextmanager
def hold_books(engine: Engine, portfolio: str) -> Iterator[bool]:
    """Hold the portfolio's books, as ``sole_writer`` does, if no one holds them; yields whether
    they were taken, for a caller with something to do either way."""
    with try_exclusive(engine, f"books:{portfolio}") as taken:
        yield taken


def existing_books(engine: Engine, config: TradingConfig, portfolio: str) -> PortfolioManager:
    """``load_books`` of a portfolio that has books (opened by its first cycle, or a stored
    backtest): reading one must not open it. An unknown name is an error naming the
    trading portfolios."""
    with session_scope(engine) as session:
        known = sorted(session.scalars(select(db.Account.portfolio)).all())
    if portfolio not in known:
        trading = [p for p in known if not p.startswith(db.BACKTEST_PREFIX)]
        raise TradingError(f"no portfolio {portfolio!r}; " + (f"portfolios: {', '.join(trading)}" if trading
                                                              else "none has traded yet (`lab trade cycle` opens one)"))
    return load_books(engine, config, portfolio)


def load_books(engine: Engine, config: TradingConfig, portfolio: str) -> PortfolioManager:
    """The portfolio's manager from its account, positions and controls (opened on first use)."""
    with session_scope(engine, write_lock=True) as session:
        account = session.get(db.Account, portfolio)
        if account is None:
            cash = config.execution.initial_cash
            account = db.Account(portfolio=portfolio, initial_cash=cash, cash=cash, peak_equity=cash)
            session.add(account)
        rows = session.scalars(select(db.Position).where(db.Position.portfolio == portfolio)).all()
        control = session.get(db.TradingControl, portfolio)
        sectors = dict(session.execute(select(db.Stock.symbol, db.Stock.sector)).all())
        return PortfolioManager(
            config, portfolio=portfolio, cash=account.cash, initial_cash=account.initial_cash,
            positions=[_position(r) for r in rows], peak_equity=account.peak_equity,
            halted=bool(control and control.halted), halt_reason=control.halt_reason if control else None,
            sectors={s: v for s, v in sectors.items() if v},
        )


def _position(row: db.Position) -> Position:
    return Position(portfolio=row.portfolio, strategy=row.strategy, symbol=row.symbol, asset_type=row.asset_type,
                    qty=row.qty, avg_price=row.avg_price, realized_pnl=row.realized_pnl,
                    last_price=row.last_price, stop_loss=row.stop_loss, take_profit=row.take_profit,
                    sector=row.sector, opened_at=None if row.opened_at == _EPOCH else row.opened_at, pair=row.pair)


def _order(row: db.Order, fills: Iterable[db.Trade]) -> Order:
    return Order(
        client_order_id=row.client_order_id, portfolio=row.portfolio, strategy=row.strategy, symbol=row.symbol,
        asset_type=row.asset_type, side=Side(row.side), qty=row.qty, order_type=OrderType(row.order_type),
        limit_price=row.limit_price, stop_price=row.stop_price, intent=Intent(row.intent),
        created_at=row.cycle_as_of or row.created_at, stop_loss=row.stop_loss, take_profit=row.take_profit,
        notional=row.notional, pair=row.pair, status=OrderStatus(row.status), reason=row.reason,
        broker_order_id=row.broker_order_id,
        fills=tuple(Fill(fill_id=t.fill_id, client_order_id=row.client_order_id, portfolio=t.portfolio,
                         strategy=t.strategy, symbol=t.symbol, side=Side(t.side), qty=t.qty, price=t.price,
                         fee=t.fee, ts=t.ts) for t in fills),
    )


def load_open_orders(engine: Engine, portfolio: str) -> list[Order]:
    """Pending and partially filled orders, with the fills booked so far."""
    return _load_orders(engine, db.Order.portfolio == portfolio,
                        db.Order.status.in_([OrderStatus.PENDING.value, OrderStatus.PARTIALLY_FILLED.value]))


def load_orders(engine: Engine, client_order_ids: Collection[str]) -> list[Order]:
    """The journal's orders with these client ids (any portfolio's, in any status; an id it
    does not hold is left out), with the fills booked so far."""
    return _load_orders(engine, db.Order.client_order_id.in_(list(client_order_ids))) if client_order_ids else []


def _load_orders(engine: Engine, *where: ColumnElement[bool]) -> list[Order]:
    with session_scope(engine) as session:
        rows = session.scalars(select(db.Order).where(*where).order_by(db.Order.id)).all()
        return [_order(r, session.scalars(select(db.Trade).where(db.Trade.order_id == r.id)
                                          .order_by(db.Trade.id)).all()) for r in rows]


def store_order(engine: Engine, order: Order, *, broker: str, signal_id: int | None = None) -> bool:
    """Insert the order, or update status/reason/broker id of the stored one. True if new."""
    with session_scope(engine, write_lock=True) as session:
        row = session.scalar(select(db.Order).where(db.Order.client_order_id == order.client_order_id))
        if row is None:
            session.add(db.Order(
                client_order_id=order.client_order_id, broker_order_id=order.broker_order_id,
                portfolio=order.portfolio, broker=broker, strategy=order.strategy, symbol=order.symbol,
                asset_type=order.asset_type, side=order.side.value, order_type=order.order_type.value,
                qty=order.qty, limit_price=order.limit_price, stop_price=order.stop_price,
                status=order.status.value, reason=order.reason, intent=order.intent.value,
                stop_loss=order.stop_loss, take_profit=order.take_profit, notional=order.notional,
                pair=order.pair, signal_id=signal_id,
                cycle_as_of=order.created_at, filled_qty=0.0,
            ))
            return True
        if not (row.status in (OrderStatus.FILLED.value, OrderStatus.CANCELLED.value)
                and order.status.is_open):  # never reopen a finished order
            row.status, row.reason = order.status.value, order.reason
        row.broker_order_id = order.broker_order_id or row.broker_order_id
        return False


def book_fill(engine: Engine, manager: PortfolioManager, order: Order, fill: Fill) -> bool:
    """Book one fill atomically (trade, position, cash, order). False if already booked."""
    with session_scope(engine, write_lock=True) as session:
        if session.scalar(select(db.Trade.id).where(db.Trade.fill_id == fill.fill_id)) is not None:
            return False
        row = session.scalar(select(db.Order).where(db.Order.client_order_id == order.client_order_id))
        if row is None:
            raise ValueError(f"fill {fill.fill_id} for an order the lab never stored: {order.client_order_id}")
        before = manager.positions.get((fill.strategy, fill.symbol))
        realized_before = before.realized_pnl if before is not None else 0.0
        position = manager.apply_fill(fill, asset_type=order.asset_type, order=order)
        session.add(db.Trade(fill_id=fill.fill_id, order_id=row.id, portfolio=fill.portfolio,
                             strategy=fill.strategy, symbol=fill.symbol, side=fill.side.value, qty=fill.qty,
                             price=fill.price, fee=fill.fee, realized_pnl=position.realized_pnl - realized_before,
                             ts=fill.ts))
        session.flush()
        write_position(session, position)
        account = session.get(db.Account, manager.portfolio)
        account.cash = manager.cash
        booked = session.scalars(select(db.Trade).where(db.Trade.order_id == row.id)).all()
        if row.notional is not None:  # sized in cash: the quantity the broker resolved it to at the fill
            row.qty = order.qty
        row.filled_qty = math.fsum(t.qty for t in booked)
        row.avg_fill_price = math.fsum(t.qty * t.price for t in booked) / row.filled_qty
        row.status = (OrderStatus.FILLED if row.filled_qty >= row.qty * (1 - 1e-12)
                      else OrderStatus.PARTIALLY_FILLED).value
        return True


class SqlBookkeeper:
    """A portfolio's order journal in SQL, as ``lab.trading.step`` records into it: an order row
    before each submit, the broker's view of it, one transaction per fill (``book_fill``, into
    ``manager``, the books held by the caller)."""

    def __init__(self, engine: Engine, manager: PortfolioManager, broker: str):
        self.engine, self.manager, self.broker = engine, manager, broker

    def open_orders(self) -> list[Order]:
        return load_open_orders(self.engine, self.manager.portfolio)

    def store(self, order: Order, *, ref: int | None = None) -> bool:
        return store_order(self.engine, order, broker=self.broker, signal_id=ref)

    def update(self, order: Order) -> None:
        store_order(self.engine, order, broker=self.broker)

    def book(self, order: Order, fill: Fill) -> bool:
        return book_fill(self.engine, self.manager, order, fill)

    def stage(self, name: str) -> None:
        """No one to tell (the cycle's journal passes each stage to its hook)."""


def write_position(session: Session, p: Position) -> None:
    """Insert or update the position's row; a closed one is kept for the P&L it realized."""
    session.merge(db.Position(
        portfolio=p.portfolio, strategy=p.strategy, symbol=p.symbol, asset_type=p.asset_type, sector=p.sector,
        qty=p.qty, avg_price=p.avg_price, last_price=p.last_price, realized_pnl=p.realized_pnl,
        stop_loss=p.stop_loss, take_profit=p.take_profit, pair=p.pair, opened_at=p.opened_at or _EPOCH,
    ))


def save_snapshot(engine: Engine, manager: PortfolioManager, ts: datetime,
                  benchmark_close: float | None = None) -> None:
    """Marks, peak equity and the ``portfolio`` snapshot at ``ts`` (replaced on a re-run)."""
    with session_scope(engine, write_lock=True) as session:
        for p in manager.positions.values():
            write_position(session, p)
        session.get(db.Account, manager.portfolio).peak_equity = manager.peak_equity
        snapshot = session.scalar(select(db.PortfolioSnapshot).where(
            db.PortfolioSnapshot.portfolio == manager.portfolio, db.PortfolioSnapshot.ts == ts))
        if snapshot is None:
            snapshot = db.PortfolioSnapshot(portfolio=manager.portfolio, ts=ts)
            session.add(snapshot)
        snapshot.cash = manager.cash
        snapshot.positions_value = manager.positions_value
        snapshot.equity = manager.equity
        snapshot.realized_pnl = manager.realized_pnl
        snapshot.unrealized_pnl = manager.unrealized_pnl
        snapshot.peak_equity = manager.peak_equity
        snapshot.drawdown = manager.drawdown
        snapshot.halted = manager.halted
        snapshot.open_positions = len(manager.open_positions())
        snapshot.benchmark_close = benchmark_close
        snapshot.by_strategy = manager.by_strategy()


def controls_of(session, portfolio: str) -> db.TradingControl:
    """The portfolio's ``trading_controls`` row, created (all switches off) on first use."""
    control = session.get(db.TradingControl, portfolio)
    if control is None:
        control = db.TradingControl(portfolio=portfolio, halted=False, kill_switch=False)
        session.add(control)
    return control


def set_halt(engine: Engine, portfolio: str, halted: bool, reason: str | None) -> None:
    """Record (or deliberately lift) the drawdown halt in ``trading_controls``."""
    with session_scope(engine, write_lock=True) as session:
        control = controls_of(session, portfolio)
        control.halted, control.halt_reason = halted, reason
        if not halted:
            account = session.get(db.Account, portfolio)
            if account is not None:
                account.peak_equity = account.cash + math.fsum(
                    r.qty * (r.last_price if r.last_price is not None else r.avg_price)
                    for r in session.scalars(select(db.Position).where(db.Position.portfolio == portfolio)))


def lift_halt(engine: Engine, config: TradingConfig, portfolio: str) -> PortfolioManager:
    """Deliberately resume entries in a halted portfolio (a drawdown or a reconciliation
    mismatch halted it): the equity peak restarts at the books' equity. Returns the books as
    they were, with the halt's reason."""
    with sole_writer(engine, portfolio, what="lifting its halt"):
        books = existing_books(engine, config, portfolio)
        if not books.halted:
            raise TradingError(f"portfolio {portfolio!r} is not halted: nothing to lift")
        set_halt(engine, portfolio, False, None)
    return books


@dataclass(frozen=True)
class Ledger:
    cash: float
    positions: dict[tuple[str, str], Position]


def replay_ledger(engine: Engine, portfolio: str) -> Ledger:
    """Cash and positions rebuilt from the account's initial cash and its trades, in order."""
    with session_scope(engine) as session:
        account = session.get(db.Account, portfolio)
        if account is None:
            return Ledger(0.0, {})
        cash = account.initial_cash
        positions: dict[tuple[str, str], Position] = {}
        trades = session.execute(select(db.Trade, db.Order.asset_type).join(db.Order, db.Trade.order_id == db.Order.id)
                                 .where(db.Trade.portfolio == portfolio).order_by(db.Trade.id)).all()
        for trade, asset_type in trades:
            fill = Fill(fill_id=trade.fill_id, client_order_id="", portfolio=portfolio, strategy=trade.strategy,
                        symbol=trade.symbol, side=Side(trade.side), qty=trade.qty, price=trade.price,
                        fee=trade.fee, ts=trade.ts)
            key = (trade.strategy, trade.symbol)
            position = positions.setdefault(key, Position(portfolio=portfolio, strategy=trade.strategy,
                                                          symbol=trade.symbol, asset_type=asset_type))
            position.apply(fill)
            cash += cash_delta(fill)
        return Ledger(cash, positions)
