"""Reconciliation: the broker's positions and cash against the lab's books, every cycle.

The lab's books are the ``positions`` rows (summed over strategies per symbol) and the
``accounts`` cash. Any difference beyond the tolerances halts trading for that account
(``trading_controls.halted`` with the differences as the reason) and is logged; lifting the
halt is a deliberate act (``store.set_halt(..., False, ...)``). The broker trades on while a
cycle runs, so a difference is checked again after the caller's open orders are synced once
more: a fill that landed in between is booked, not taken for a mismatch.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, select

from lab.db import models as db
from lab.db import session_scope
from lab.trading.broker import BrokerInterface
from lab.trading.store import set_halt

__all__ = ["Reconciliation", "reconcile"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reconciliation:
    portfolio: str
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def reconcile(engine: Engine, broker: BrokerInterface, portfolio: str, *, settle: Callable[[], object] | None = None,
              qty_tolerance: float = 1e-6, cash_tolerance: float = 1.0) -> Reconciliation:
    """Compare, and halt ``portfolio`` on any mismatch. Broker errors propagate (no halt:
    an unreachable broker is not evidence that the books are wrong).

    ``settle`` (the cycle: sync its open orders again) runs once when the first comparison
    differs, and the broker is read again: an order that filled between the caller's sync and
    this read is booked then, and only a difference that persists halts."""
    mismatches = _differences(engine, broker, portfolio, qty_tolerance, cash_tolerance)
    if mismatches and settle is not None:
        settle()
        mismatches = _differences(engine, broker, portfolio, qty_tolerance, cash_tolerance)
    result = Reconciliation(portfolio, mismatches)
    if not result.ok:
        reason = f"reconciliation mismatch with {broker.name}: " + "; ".join(mismatches)
        set_halt(engine, portfolio, True, reason)
        log.error("trading halted for %s: %s", portfolio, reason)
    return result


def _differences(engine: Engine, broker: BrokerInterface, portfolio: str, qty_tolerance: float,
                 cash_tolerance: float) -> list[str]:
    """The broker's positions and cash against the books, as readable differences."""
    remote_positions = defaultdict(float)
    for p in broker.positions():
        remote_positions[p.symbol] += p.qty
    remote_cash = broker.account().cash
    with session_scope(engine) as session:
        books = defaultdict(float)
        for symbol, qty in session.execute(select(db.Position.symbol, db.Position.qty)
                                           .where(db.Position.portfolio == portfolio)):
            books[symbol] += qty
        account = session.get(db.Account, portfolio)
    mismatches = [f"{symbol}: broker holds {remote_positions[symbol]:g}, books say {books[symbol]:g}"
                  for symbol in sorted(set(remote_positions) | set(books))
                  if not math.isclose(remote_positions[symbol], books[symbol], abs_tol=qty_tolerance)]
    if account is None:
        mismatches.append(f"cash: broker has {remote_cash:,.2f}, the lab has no books for {portfolio}")
    elif abs(account.cash - remote_cash) > cash_tolerance:
        mismatches.append(f"cash: broker has {remote_cash:,.2f}, books say {account.cash:,.2f}")
    return mismatches
