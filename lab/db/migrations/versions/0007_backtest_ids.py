"""Backtests: on SQLite an id is never given out twice (AUTOINCREMENT), so the id of a deleted
run (`lab backtests --delete`) never comes to name another one. PostgreSQL's sequence already
works that way.

Revision ID: 0007_backtest_ids
Revises: 0006_pair_legs
"""

from alembic import op

revision = "0007_backtest_ids"
down_revision = "0006_pair_legs"
branch_labels = None
depends_on = None


def _autoincrement(on: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("backtests", recreate="always", table_kwargs={"sqlite_autoincrement": on}):
            pass


def upgrade() -> None:
    _autoincrement(True)


def downgrade() -> None:
    _autoincrement(False)
