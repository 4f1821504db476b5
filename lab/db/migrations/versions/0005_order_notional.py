"""Orders: the cash amount of a buy sized in cash (all-in sizing), so a restart keeps it.

Revision ID: 0005_order_notional
Revises: 0004_trading
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_order_notional"
down_revision = "0004_trading"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("notional", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("notional")
