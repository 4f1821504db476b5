"""The per-symbol data-quality summary, recomputed from what is stored (so re-runs agree)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
from sqlalchemy import Connection, String, cast, func, or_, select

from lab.db.models import DataQuality, PriceBar, QuarantinedBar
from universe.calendars import expected_days
from universe.store import dialect_insert
from universe.validate import jumps

__all__ = ["refresh_quality"]

EXAMPLES = 10


def refresh_quality(conn: Connection, symbol: str, asset_class: str, requested_start: date | None,
                    interval: str = "1d") -> dict:
    """Store and return the summary: counts, coverage, missing sessions/days, kept outliers."""
    rows = conn.execute(select(PriceBar.ts, PriceBar.close, PriceBar.source)
                        .where(PriceBar.symbol == symbol, PriceBar.interval == interval)
                        .order_by(PriceBar.ts)).all()
    quarantined = conn.execute(select(func.count()).select_from(QuarantinedBar)
                               .where(QuarantinedBar.symbol == symbol, QuarantinedBar.interval == interval)
                               ).scalar_one()
    summary = {"symbol": symbol, "interval": interval, "asset_type": asset_class, "source": None,
               "rows_stored": len(rows), "rows_quarantined": int(quarantined), "missing_sessions": 0,
               "first_ts": None, "last_ts": None, "details": {}}
    if rows:
        stamps = pd.DatetimeIndex([r[0] for r in rows])
        closes = pd.Series([r[1] for r in rows], dtype=float).to_numpy()
        missing = expected_days(asset_class, stamps[0], stamps[-1]).difference(stamps)
        found = jumps(closes, asset_class)
        sources = sorted({r[2] for r in rows})
        summary.update(
            source=rows[-1][2], first_ts=stamps[0].to_pydatetime(), last_ts=stamps[-1].to_pydatetime(),
            missing_sessions=len(missing),
            details={
                "missing_examples": [d.date().isoformat() for d in missing[:EXAMPLES]],
                "outliers": [stamps[i].date().isoformat() for i in found.outliers[:EXAMPLES]],
                "outlier_count": len(found.outliers),
                "sources": sources,
                "starts_after_requested": bool(requested_start and stamps[0].date() > requested_start),
            })
    table = DataQuality.__table__
    insert = dialect_insert(conn, table).values(**summary, checked_at=datetime.now(UTC))
    changed = [c for c in summary if c not in ("symbol", "interval")]
    conn.execute(insert.on_conflict_do_update(
        index_elements=["symbol", "interval"],
        set_={c: insert.excluded[c] for c in [*changed, "checked_at"]},
        where=_any_differs(table, insert.excluded, changed)))
    return summary


def _any_differs(table, excluded, columns):
    # JSON has no equality operator on PostgreSQL: compare its text form
    return or_(*(cast(table.c[c], String).is_distinct_from(cast(excluded[c], String)) if c == "details"
                 else table.c[c].is_distinct_from(excluded[c]) for c in columns))
