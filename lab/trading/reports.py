"""Tables of one cycle's signals and orders, for Prefect artifacts and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from lab.db import models as db

__all__ = ["cycle_tables"]


def cycle_tables(engine: Engine, portfolio: str, as_of: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(signals, orders) of ``portfolio``'s cycle at ``as_of`` as plain rows."""
    with engine.connect() as conn:
        signals = conn.execute(
            select(db.Signal.strategy, db.Signal.symbol, db.Signal.side, db.Signal.confidence, db.Signal.entry,
                   db.Signal.stop_loss, db.Signal.take_profit, db.Signal.ev, db.Signal.rr,
                   db.Signal.model_version, db.Signal.status, db.Signal.reason)
            .where(db.Signal.portfolio == portfolio, db.Signal.as_of == as_of)
            .order_by(db.Signal.strategy, db.Signal.confidence.desc())
        ).mappings().all()
        orders = conn.execute(
            select(db.Order.client_order_id, db.Order.strategy, db.Order.symbol, db.Order.pair, db.Order.side,
                   db.Order.intent,
                   db.Order.order_type, db.Order.qty, db.Order.status, db.Order.filled_qty,
                   db.Order.avg_fill_price, db.Order.reason)
            .where(db.Order.portfolio == portfolio, db.Order.cycle_as_of == as_of)
            .order_by(db.Order.id)
        ).mappings().all()
    return [_plain(r) for r in signals], [_plain(r) for r in orders]


def _plain(row) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
