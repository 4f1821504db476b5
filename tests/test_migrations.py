"""Alembic migrations on real SQLite and PostgreSQL, including adopting an older database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, inspect, select, text

from lab.db import connect, get_engine
from lab.db.migrate import LEGACY_BASELINE, current_revision, downgrade, head_revision, upgrade
from lab.db.models import Base, Fundamental

LEGACY_ROWS = [
    {"market": "epl_over_under", "version": 1, "model_path": "/old/a.pkl", "is_active": False},
    {"market": "epl_over_under", "version": 2, "model_path": "/old/b.pkl", "is_active": True},
    {"market": "nba_moneyline", "version": 1, "model_path": "/old/c.pkl", "is_active": True},
]


def insert_legacy_rows(engine) -> None:
    with engine.begin() as conn:
        for row in LEGACY_ROWS:
            conn.execute(
                text("INSERT INTO model_versions (market, version, model_path, is_active, created_at) "
                     "VALUES (:market, :version, :model_path, :is_active, :created_at)"),
                {**row, "created_at": datetime(2024, 1, 1, tzinfo=UTC)},
            )


def model_rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT domain, market, version, model_path, is_active FROM model_versions ORDER BY id"))]


def index_columns(engine) -> set[tuple[str, ...]]:
    return {tuple(ix["column_names"]) for ix in inspect(engine).get_indexes("model_versions")}


def test_fresh_database_is_upgraded_to_head_on_first_use(db_url):
    engine = connect(db_url)
    assert current_revision(engine) == head_revision()
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())


def test_rows_written_at_the_old_revision_survive_with_domain_betting(db_url):
    engine = get_engine(db_url)
    upgrade(engine, LEGACY_BASELINE)
    insert_legacy_rows(engine)
    upgrade(engine)
    assert model_rows(engine) == [("betting", r["market"], r["version"], r["model_path"], r["is_active"])
                                  for r in LEGACY_ROWS]
    assert {("domain", "market"), ("domain", "market", "is_active")} <= index_columns(engine)


def test_a_database_without_alembic_history_is_adopted(db_url):
    """A user's pre-existing table (created outside Alembic) is stamped and upgraded."""
    engine = get_engine(db_url)
    key = "SERIAL" if engine.dialect.name == "postgresql" else "INTEGER"
    with engine.begin() as conn:
        conn.execute(text(
            f"CREATE TABLE model_versions (id {key} PRIMARY KEY, market VARCHAR(64) NOT NULL, "
            "version INTEGER NOT NULL, model_path VARCHAR(500) NOT NULL, is_active BOOLEAN NOT NULL, "
            "params JSON, metrics JSON, created_at TIMESTAMP WITH TIME ZONE NOT NULL)"))
    insert_legacy_rows(engine)
    connect(db_url)
    assert current_revision(engine) == head_revision()
    assert [r[0] for r in model_rows(engine)] == ["betting"] * 3


def test_downgrade_and_upgrade_round_trip_keeps_the_rows(db_url):
    engine = get_engine(db_url)
    upgrade(engine, LEGACY_BASELINE)
    insert_legacy_rows(engine)
    upgrade(engine)
    before = model_rows(engine)
    downgrade(engine, "0002_model_versions_domain")
    downgrade(engine, LEGACY_BASELINE)
    assert "domain" not in {c["name"] for c in inspect(engine).get_columns("model_versions")}
    upgrade(engine)
    assert model_rows(engine) == before
    assert current_revision(engine) == head_revision()


def test_several_active_legacy_versions_keep_only_the_newest_active(db_url):
    engine = get_engine(db_url)
    upgrade(engine, LEGACY_BASELINE)
    insert_legacy_rows(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE model_versions SET is_active = true"))
    upgrade(engine)
    active = [(m, v) for _d, m, v, _p, a in model_rows(engine) if a]
    assert sorted(active) == [("epl_over_under", 2), ("nba_moneyline", 1)]


def test_the_migrations_build_exactly_the_schema_the_models_declare(db_url):
    """No model change is left without its migration (autogenerate finds nothing to do)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = connect(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_fundamentals_stamped_at_the_midnight_before_their_fetch_move_to_the_end_of_that_day(db_url):
    """Rows stored before fundamentals were known from their fetch time carry the midnight
    that began their fetch day; the upgrade moves each to the next midnight (by when it was
    certainly known), none lost, and a symbol's consecutive days never collide on the way."""
    engine = get_engine(db_url)
    upgrade(engine, "0007_backtest_ids")
    stored = [("AAA", datetime(2024, 3, 1, tzinfo=UTC), 10.0), ("AAA", datetime(2024, 3, 2, tzinfo=UTC), 11.0),
              ("BBB", datetime(2024, 3, 1, tzinfo=UTC), 12.0)]
    with engine.begin() as conn:
        conn.execute(insert(Fundamental), [{"symbol": s, "known_at": k, "pe_ratio": pe, "source": "test"}
                                           for s, k, pe in stored])

    def rows() -> list[tuple]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(Fundamental.symbol, Fundamental.known_at, Fundamental.pe_ratio)
                                                   .order_by(Fundamental.symbol, Fundamental.known_at))]

    upgrade(engine)
    assert rows() == [(s, k + timedelta(days=1), pe) for s, k, pe in stored]
    downgrade(engine, "0007_backtest_ids")
    assert rows() == stored
