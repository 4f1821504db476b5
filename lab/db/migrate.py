"""Alembic, run programmatically (no alembic.ini): upgrade, downgrade, current, adopt."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, inspect

from lab.errors import ConfigError

__all__ = ["alembic_config", "upgrade_to_head", "upgrade", "downgrade", "current_revision", "head_revision"]

MIGRATIONS = Path(__file__).with_name("migrations")
#: the revision whose schema matches a database that predates the lab's Alembic history
LEGACY_BASELINE = "0001_legacy_model_versions"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: Engine) -> str | None:
    heads = current_heads(engine)
    return ",".join(sorted(heads)) if heads else None


def current_heads(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def head_revision() -> str:
    return ",".join(sorted(ScriptDirectory(str(MIGRATIONS)).get_heads()))


def _adopt_legacy(engine: Engine) -> None:
    """A database with ``model_versions`` but no Alembic history is at the legacy baseline."""
    tables = set(inspect(engine).get_table_names())
    if "model_versions" in tables and "alembic_version" not in tables:
        command.stamp(alembic_config(engine), LEGACY_BASELINE)


def upgrade(engine: Engine, revision: str = "heads") -> None:
    _adopt_legacy(engine)
    with _named_revision(revision):
        command.upgrade(alembic_config(engine), revision)


def upgrade_to_head(engine: Engine) -> None:
    """Upgrade when behind; a no-op (one cheap query) when already at head."""
    if current_heads(engine) != set(ScriptDirectory(str(MIGRATIONS)).get_heads()):
        upgrade(engine, "heads")


def downgrade(engine: Engine, revision: str) -> None:
    with _named_revision(revision):
        command.downgrade(alembic_config(engine), revision)


@contextmanager
def _named_revision(revision: str) -> Iterator[None]:
    """Alembic's refusal of a revision (unknown, or the wrong direction) as one clear error."""
    try:
        yield
    except CommandError as exc:
        raise ConfigError([f"revision {revision!r}: {exc}"]) from None
