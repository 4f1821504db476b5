"""The kill switch: a database flag the trading cycle reads before every submission.

``engage`` commits the flag first, so every process stops submitting at once; then
``cancel_open_orders`` cancels the open orders through the broker: a broker that cannot be
opened or does not answer never keeps the switch off. Portfolio ``"*"`` is the switch for
every account.

Several portfolios may trade one broker account, so one portfolio's switch cancels only the
orders the lab's journal (``orders``) records as that portfolio's, matched by client order id;
an open order in no portfolio's journal (placed at the broker by hand, or by another tool) is
left open and reported, as the lab cannot tell whose it is. The switch for every account
cancels every open order at the broker, journaled or not.

A cancelled order may have filled in part since the last cycle synced it: its fills are
booked into its portfolio's books before its status is stored, as the cycle's sync books
them (``step.record``), since no later sync looks at a finished order.

The paper broker keeps no state of its own: each cycle rebuilds a portfolio's paper account
from its books, so ``cancel_paper_orders`` rebuilds it the same way and cancels there, and the
next cycle, rebuilt from the cancellations stored, fills nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NamedTuple

from sqlalchemy import Engine, select

from lab.config import TradingConfig
from lab.db import models as db
from lab.db import session_scope
from lab.errors import TradingError
from lab.trading.broker import BrokerInterface, OrderNotFound
from lab.trading.cycle import paper_account
from lab.trading.model import Order, OrderStatus
from lab.trading.step import Bookkeeper, StepResult, record
from lab.trading.store import (
    ALL_PORTFOLIOS,
    SqlBookkeeper,
    check_portfolio_name,
    controls_of,
    hold_books,
    load_books,
    load_open_orders,
    load_orders,
    sole_writer,
)

__all__ = ["ALL", "Cancellation", "Switch", "engage", "cancel_open_orders", "cancel_paper_orders", "engaged_by",
           "release", "is_killed", "switches"]

ALL = ALL_PORTFOLIOS
log = logging.getLogger(__name__)


def is_killed(engine: Engine, portfolio: str) -> bool:
    """True when the switch is on for ``portfolio`` or for all accounts."""
    with session_scope(engine) as session:
        return bool(session.scalar(select(db.TradingControl.portfolio).where(
            db.TradingControl.portfolio.in_([portfolio, ALL]), db.TradingControl.kill_switch.is_(True))))


class Cancellation(NamedTuple):
    """What a switch did at the broker: the orders it cancelled (as the broker reports them),
    and, for one portfolio's switch, the open orders in no portfolio's journal it left open."""

    cancelled: list[Order]
    unknown: list[Order]


def engage(engine: Engine, portfolio: str, reason: str) -> None:
    """Stop all submission for ``portfolio`` now (then cancel its open orders at the broker:
    ``cancel_open_orders``)."""
    if portfolio != ALL:
        check_portfolio_name(portfolio)
    if not reason.strip():
        raise TradingError("the kill switch needs a reason (--reason): it is stored and shown with the switch")
    _set(engine, portfolio, True, reason)
    log.warning("kill switch engaged for %s: %s", portfolio, reason)


def cancel_open_orders(engine: Engine, config: TradingConfig, broker: BrokerInterface, portfolio: str,
                       reason: str) -> Cancellation:
    """Cancel the orders open at ``broker`` that the journal records as ``portfolio``'s (every
    open order for ``ALL``), booking the fills each got and storing its status with the
    switch's reason. Another portfolio's orders stay open; those in no journal are left open
    and returned as ``unknown`` (the switch for ``ALL`` cancels them too, and stores them
    nowhere: no portfolio's books hold them). Call it after ``engage``: a broker error then
    leaves the switch on.

    A portfolio whose books a cycle holds (``store.sole_writer``) has its orders cancelled all
    the same, but not recorded: they stay open in its journal, and the cycle's next sync books
    their fills and stores their status (the broker's reason, not the switch's)."""
    listed = broker.open_orders()
    recorded = {o.client_order_id: o for o in load_orders(engine, [o.client_order_id for o in listed])}
    foreign = [o for o in listed if o.client_order_id not in recorded]
    cancelled = [_cancel(None, broker, o, reason) for o in foreign] if portfolio == ALL else []
    for owner in sorted({o.portfolio for o in recorded.values()} if portfolio == ALL else {portfolio}):
        orders = [recorded[o.client_order_id] for o in listed
                  if o.client_order_id in recorded and recorded[o.client_order_id].portfolio == owner]
        if not orders:
            continue
        with hold_books(engine, owner) as held:
            books = SqlBookkeeper(engine, load_books(engine, config, owner), broker.name) if held else None
            cancelled += [_cancel(books, broker, order, reason) for order in orders]
        if not held:
            log.warning("kill switch: %s's books are held by a cycle; its %d cancelled order(s) are recorded by "
                        "that cycle's next sync", owner, len(orders))
    unknown = [] if portfolio == ALL else foreign
    if unknown:
        log.warning("kill switch for %s left %d open order(s) at %s in no portfolio's journal: %s", portfolio,
                    len(unknown), broker.name, ", ".join(o.client_order_id for o in unknown))
    return Cancellation(cancelled, unknown)


def cancel_paper_orders(engine: Engine, config: TradingConfig, portfolio: str, reason: str) -> Cancellation:
    """``cancel_open_orders`` at the paper broker, for ``portfolio`` (every portfolio with open
    orders, for ``ALL``): in its paper account as its latest cycle leaves it
    (``cycle.paper_account``), booking the fills made by then first. An order recorded but
    never submitted is not at the broker: the next sync refuses it, the switch being on.
    Refused (``TradingError``) for a portfolio whose books a cycle holds, as its paper account
    is that cycle's until it ends: run it again then."""
    cancelled = []
    for owner in _with_open_orders(engine, portfolio):
        with sole_writer(engine, owner, what="the kill switch's cancelling of its paper orders"):
            manager, open_orders = load_books(engine, config, owner), load_open_orders(engine, owner)
            broker = paper_account(engine, config, manager, open_orders)
            books = SqlBookkeeper(engine, manager, broker.name)
            for order in open_orders:
                try:
                    cancelled.append(_cancel(books, broker, order, reason))
                except OrderNotFound:
                    continue
    return Cancellation(cancelled, [])


def _with_open_orders(engine: Engine, portfolio: str) -> list[str]:
    """``portfolio`` if its journal holds open orders (for ``ALL``, every trading account that
    does; a stored backtest's are a finished run's record)."""
    with session_scope(engine) as session:
        query = select(db.Order.portfolio).distinct().where(
            db.Order.status.in_([OrderStatus.PENDING.value, OrderStatus.PARTIALLY_FILLED.value]),
            db.Order.portfolio == portfolio if portfolio != ALL else db.Order.portfolio.not_like(f"{db.BACKTEST_PREFIX}%"))
        return sorted(session.scalars(query))


def _cancel(books: Bookkeeper | None, broker: BrokerInterface, order: Order, reason: str) -> Order:
    """Cancel ``order`` at the broker, with the switch's reason, and take the broker's answer
    into ``books`` when given (the fills it got first, then its status)."""
    answer = broker.cancel(order.client_order_id)
    if answer.status is OrderStatus.CANCELLED:
        answer = answer.cancelled(f"kill switch: {reason}")
    return answer if books is None else record(books, order, answer, StepResult())


def release(engine: Engine, portfolio: str) -> bool:
    """Allow submission again (deliberately; nothing releases the switch on its own). Returns
    whether the portfolio is still stopped, by the switch for every account."""
    if portfolio != ALL:
        check_portfolio_name(portfolio)  # a mistyped name would leave a switch for no account
    _set(engine, portfolio, False, None)
    log.warning("kill switch released for %s", portfolio)
    return is_killed(engine, portfolio)


class Switch(NamedTuple):
    """An account's controls as the cycle applies them: ``killed`` by its own switch or the one
    for every account, ``engaged_by`` naming which (its own first), with their reasons."""

    portfolio: str
    killed: bool
    engaged_by: tuple[str, ...]
    kill_reason: str | None
    halted: bool
    halt_reason: str | None


def engaged_by(controls: Mapping[str, db.TradingControl], portfolio: str) -> tuple[str, ...]:
    """The switches that stop ``portfolio`` (its own, then the one for every account), as
    ``is_killed`` reads them; ``controls`` by portfolio."""
    return tuple(name for name in dict.fromkeys([portfolio, ALL])
                 if (control := controls.get(name)) is not None and control.kill_switch)


def switches(engine: Engine) -> list[Switch]:
    """The controls of every account whose switch was once set, and of every trading account
    (stored backtests are none), set or not."""
    with session_scope(engine) as session:
        controls = {r.portfolio: r for r in session.scalars(select(db.TradingControl))}
        accounts = session.scalars(select(db.Account.portfolio).where(
            db.Account.portfolio.not_like(f"{db.BACKTEST_PREFIX}%"))).all()
        rows = []
        for name in sorted({*controls, *accounts}):
            by, own = engaged_by(controls, name), controls.get(name)
            rows.append(Switch(name, bool(by), by, "; ".join(controls[s].kill_reason or "" for s in by) or None,
                               bool(own and own.halted), own.halt_reason if own else None))
        return rows


def _set(engine: Engine, portfolio: str, on: bool, reason: str | None) -> None:
    with session_scope(engine, write_lock=True) as session:
        control = controls_of(session, portfolio)
        control.kill_switch, control.kill_reason = on, reason
