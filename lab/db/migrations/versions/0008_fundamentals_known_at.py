"""Fundamentals are known from the time they were fetched. Rows stored before carry the
midnight that began their fetch day, so the bar labelled that day read values fetched hours
after it; their fetch time was not kept, so each moves to the next midnight, by when it was
certainly known. The column already holds UTC timestamps: its type stays, no row is dropped.

Revision ID: 0008_fundamentals_known_at
Revises: 0007_backtest_ids
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

import lab.db.types

revision = "0008_fundamentals_known_at"
down_revision = "0007_backtest_ids"
branch_labels = None
depends_on = None

_fundamentals = sa.table("fundamentals", sa.column("id", sa.Integer),
                         sa.column("known_at", lab.db.types.UTCDateTime(timezone=True)))


def _shift_midnights(days: int) -> None:
    """Move every row stamped at a midnight by ``days``, furthest in that direction first, so
    a symbol's rows of consecutive days never meet on the way (``known_at`` is unique per symbol)."""
    known_at = _fundamentals.c.known_at
    conn = op.get_bind()
    rows = conn.execute(sa.select(_fundamentals.c.id, known_at)
                        .order_by(known_at.desc() if days > 0 else known_at.asc())).all()
    for row_id, stamp in rows:
        if stamp == stamp.replace(hour=0, minute=0, second=0, microsecond=0):
            conn.execute(sa.update(_fundamentals).where(_fundamentals.c.id == row_id)
                         .values(known_at=stamp + timedelta(days=days)))


def upgrade() -> None:
    _shift_midnights(1)


def downgrade() -> None:
    _shift_midnights(-1)
