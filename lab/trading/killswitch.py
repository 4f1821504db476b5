"""The kill switch: a database flag the trading cycle reads before every submission.

``engage`` commits the flag first, so every process stops submitting at once, then cancels
the open orders through the broker (``cancel_open_orders``): a broker that cannot be opened or
does not answer never keeps the switch off. Portfolio ``"*"`` is the switch for every account.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, select

from lab.db import models as db
from lab.db import session_scope
from lab.errors import TradingError
from lab.trading.broker import BrokerInterface
from lab.trading.model import Order, OrderStatus
from lab.trading.store import ALL_PORTFOLIOS, check_portfolio_name, controls_of, store_order

__all__ = ["ALL", "engage", "cancel_open_orders", "release", "is_killed", "switches"]

ALL = ALL_PORTFOLIOS
log = logging.getLogger(__name__)


def is_killed(engine: Engine, portfolio: str) -> bool:
    """True when the switch is on for ``portfolio`` or for all accounts."""
    with session_scope(engine) as session:
        return bool(session.scalar(select(db.TradingControl.portfolio).where(
            db.TradingControl.portfolio.in_([portfolio, ALL]), db.TradingControl.kill_switch.is_(True))))


def engage(engine: Engine, portfolio: str, reason: str, *, broker: BrokerInterface | None = None) -> list[Order]:
    """Stop all submission for ``portfolio`` now; cancel the broker's open orders if given one.
    Returns the cancelled orders (as the broker reports them)."""
    if portfolio != ALL:
        check_portfolio_name(portfolio)
    if not reason.strip():
        raise TradingError("the kill switch needs a reason (--reason): it is stored and shown with the switch")
    _set(engine, portfolio, True, reason)
    log.warning("kill switch engaged for %s: %s", portfolio, reason)
    return [] if broker is None else cancel_open_orders(engine, broker, reason)


def cancel_open_orders(engine: Engine, broker: BrokerInterface, reason: str) -> list[Order]:
    """Cancel every order open at ``broker`` and store what it reports, each with the switch's
    reason. Call it after ``engage``: a broker error then leaves the switch on."""
    cancelled = []
    for order in broker.open_orders():
        result = broker.cancel(order.client_order_id)
        if result.status is OrderStatus.CANCELLED:
            result = result.cancelled(f"kill switch: {reason}")
        store_order(engine, result, broker=broker.name)
        cancelled.append(result)
    return cancelled


def release(engine: Engine, portfolio: str) -> bool:
    """Allow submission again (deliberately; nothing releases the switch on its own). Returns
    whether the portfolio is still stopped, by the switch for every account."""
    if portfolio != ALL:
        check_portfolio_name(portfolio)  # a mistyped name would leave a switch for no account
    _set(engine, portfolio, False, None)
    log.warning("kill switch released for %s", portfolio)
    return is_killed(engine, portfolio)


def switches(engine: Engine) -> list[tuple[str, bool, str | None, bool, str | None]]:
    """(portfolio, killed, kill reason, halted, halt reason) for the switch of every account
    once set, and for every trading account (stored backtests are none), set or not."""
    with session_scope(engine) as session:
        controls = {r.portfolio: r for r in session.scalars(select(db.TradingControl))}
        accounts = session.scalars(select(db.Account.portfolio).where(
            db.Account.portfolio.not_like(f"{db.BACKTEST_PREFIX}%"))).all()
        rows = []
        for name in sorted({*controls, *accounts}):
            r = controls.get(name)
            rows.append((name, False, None, False, None) if r is None
                        else (name, bool(r.kill_switch), r.kill_reason, bool(r.halted), r.halt_reason))
        return rows


def _set(engine: Engine, portfolio: str, on: bool, reason: str | None) -> None:
    with session_scope(engine, write_lock=True) as session:
        control = controls_of(session, portfolio)
        control.kill_switch, control.kill_reason = on, reason
