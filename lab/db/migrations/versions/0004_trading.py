"""Trading: per-portfolio cash accounts, and bracket levels carried by entry orders.

Revision ID: 0004_trading
Revises: 0003_lab_schema
"""

import sqlalchemy as sa
from alembic import op

import lab.db.types

revision = "0004_trading"
down_revision = "0003_lab_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("portfolio", sa.String(length=64), nullable=False),
        sa.Column("initial_cash", sa.Float(), nullable=False),
        sa.Column("cash", sa.Float(), nullable=False),
        sa.Column("peak_equity", sa.Float(), nullable=False),
        sa.Column("updated_at", lab.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("portfolio", name=op.f("pk_accounts")),
    )
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("stop_loss", sa.Float(), nullable=True))
        batch.add_column(sa.Column("take_profit", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("take_profit")
        batch.drop_column("stop_loss")
    op.drop_table("accounts")
