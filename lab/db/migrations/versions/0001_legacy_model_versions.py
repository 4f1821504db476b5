"""The model_versions table as older databases have it: keyed by market, no domain.

Revision ID: 0001_legacy_model_versions
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_legacy_model_versions"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("market", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("model_path", sa.String(500), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("idx_model_versions_market", "model_versions", ["market"])


def downgrade() -> None:
    op.drop_index("idx_model_versions_market", table_name="model_versions")
    op.drop_table("model_versions")
