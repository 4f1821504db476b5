"""The original plan's migration 5: add ``domain`` to model_versions.

Existing rows become domain 'betting'; indexes on (domain, market) and
(domain, market, is_active).

Revision ID: 0002_model_versions_domain
Revises: 0001_legacy_model_versions
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_model_versions_domain"
down_revision = "0001_legacy_model_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("domain", sa.String(32), nullable=False, server_default="betting"))
    op.create_index("idx_model_versions_domain_market", "model_versions", ["domain", "market"])
    op.create_index(
        "idx_model_versions_domain_market_active", "model_versions", ["domain", "market", "is_active"]
    )


def downgrade() -> None:
    op.drop_index("idx_model_versions_domain_market_active", table_name="model_versions")
    op.drop_index("idx_model_versions_domain_market", table_name="model_versions")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("domain")
