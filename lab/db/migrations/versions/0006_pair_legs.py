"""Orders and positions: the pair ("AAA/BBB") a leg belongs to, so both legs exit together.

Revision ID: 0006_pair_legs
Revises: 0005_order_notional
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_pair_legs"
down_revision = "0005_order_notional"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("orders", "positions"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("pair", sa.String(64), nullable=True))


def downgrade() -> None:
    for table in ("positions", "orders"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("pair")
