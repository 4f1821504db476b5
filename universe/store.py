"""Idempotent bulk storage of bars, quarantined rows, asset metadata and run records.

``upsert_bars`` locks each series it writes to the end of the transaction (so concurrent
ingests of one symbol log a correction once), stages the frame in a temporary table
(PostgreSQL ``COPY``; SQLite one ``executemany``), logs every stored bar whose values the new
data changes into ``price_corrections``, then runs one dialect upsert (``INSERT .. SELECT ..
ON CONFLICT DO UPDATE .. WHERE values differ``) and drops the stage, so a caller may upsert
several frames in one transaction. Unchanged bars are not touched, so storing the same data twice leaves
the table exactly as it was. ``remove_bars`` deletes stored bars that validation rejected on a
later fetch, logged the same way (``new`` holds the reason), so no bar is both stored and
quarantined.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import Boolean, Column, Connection, Engine, Float, MetaData, String, Table, and_, delete, or_, select, true
from sqlalchemy.dialects import postgresql, sqlite

from lab.bars import BAR_COLUMNS
from lab.db.locks import lock_for_transaction
from lab.db.models import PriceBar, PriceCorrection, QuarantinedBar
from lab.db.types import UTCDateTime
from lab.errors import DataError

__all__ = ["UpsertResult", "check_symbols", "upsert_bars", "remove_bars", "quarantine_bars", "last_bar", "dialect_insert"]

KEY = ["symbol", "interval", "ts"]
VALUES = ["asset_type", *BAR_COLUMNS, "source", "synthetic"]
COLUMNS = [*KEY, *VALUES]
_bars = PriceBar.__table__
_stage = Table(
    "_lab_stage_bars", MetaData(),
    Column("symbol", String), Column("interval", String), Column("ts", UTCDateTime()),
    Column("asset_type", String), *(Column(c, Float) for c in BAR_COLUMNS),
    Column("source", String), Column("synthetic", Boolean),
    prefixes=["TEMPORARY"],
)
#: the longest symbol the tables hold (SQLite would store a longer one, PostgreSQL refuses it)
MAX_SYMBOL = _bars.c.symbol.type.length
#: SQLAlchemy's SQLite DateTime storage format (UTCDateTime stores naive UTC there)
_SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"


@dataclass(frozen=True)
class UpsertResult:
    inserted: int = 0
    updated: int = 0  # corrected bars (each logged in price_corrections)
    unchanged: int = 0

    @property
    def stored(self) -> int:
        return self.inserted + self.updated

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(self.inserted + other.inserted, self.updated + other.updated,
                            self.unchanged + other.unchanged)


def dialect_insert(conn: Connection, table: Table):
    """The dialect's INSERT that supports ON CONFLICT (PostgreSQL or SQLite)."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise DataError(f"unsupported database dialect {name!r} (the lab supports PostgreSQL and SQLite)")


def check_symbols(symbols: Iterable[str]) -> None:
    """Refuse symbols longer than the tables hold, by name, before any work is done for them."""
    long = [f"{s}: {len(s)} characters" for s in dict.fromkeys(symbols) if len(s) > MAX_SYMBOL]
    if long:
        raise DataError(f"{'; '.join(long)}; the lab stores symbols of up to {MAX_SYMBOL}")


def _prepare(frame: pd.DataFrame) -> pd.DataFrame:
    required = ["symbol", "ts", *BAR_COLUMNS, "source", "asset_type"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"bars frame lacks column(s): {', '.join(missing)}")
    check_symbols(frame["symbol"])
    out = frame.loc[:, [c for c in COLUMNS if c in frame.columns]].copy()
    if "interval" not in out.columns:
        out["interval"] = "1d"
    if "synthetic" not in out.columns:
        out["synthetic"] = False
    ts = pd.to_datetime(out["ts"])
    if ts.dt.tz is None:
        raise DataError("bars frame has naive timestamps; the lab stores tz-aware UTC")
    out["ts"] = ts.dt.tz_convert("UTC")
    out["synthetic"] = out["synthetic"].astype(bool)
    nulls = [c for c in COLUMNS if out[c].isna().any()]
    if nulls:
        raise DataError(f"bars frame has empty values in: {', '.join(nulls)} (validate before storing)")
    dupes = out.duplicated(KEY)
    if dupes.any():
        first = out.loc[dupes, KEY].iloc[0].tolist()
        raise DataError(f"bars frame has {int(dupes.sum())} duplicate (symbol, interval, ts) keys, e.g. {first}")
    return out[COLUMNS]


def _load_stage(conn: Connection, frame: pd.DataFrame) -> None:
    dbapi = conn.connection.dbapi_connection
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE _lab_stage_bars (symbol text, interval text, ts timestamptz, "
            "asset_type text, open float8, high float8, low float8, close float8, volume float8, "
            "source text, synthetic boolean) ON COMMIT DROP")
        buffer = io.StringIO()
        staged = frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%d %H:%M:%S.%f+00"))
        staged.to_csv(buffer, index=False, header=False, quoting=csv.QUOTE_MINIMAL, float_format="%.17g")
        with dbapi.cursor() as cursor, cursor.copy(f"COPY _lab_stage_bars ({', '.join(COLUMNS)}) "
                                                   "FROM STDIN (FORMAT csv)") as copy:
            copy.write(buffer.getvalue())
        return
    conn.exec_driver_sql("DROP TABLE IF EXISTS temp._lab_stage_bars")
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE _lab_stage_bars (symbol TEXT, interval TEXT, ts DATETIME, asset_type TEXT, "
        "open FLOAT, high FLOAT, low FLOAT, close FLOAT, volume FLOAT, source TEXT, synthetic BOOLEAN)")
    staged = frame.assign(ts=frame["ts"].dt.tz_convert(None).dt.strftime(_SQLITE_TS),
                          synthetic=frame["synthetic"].astype(int))
    rows = list(zip(*(staged[c].tolist() for c in COLUMNS), strict=True))
    cursor = dbapi.cursor()
    try:
        cursor.executemany(f"INSERT INTO _lab_stage_bars ({', '.join(COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(COLUMNS))})", rows)
    finally:
        cursor.close()


def _differs(left: Table, right) -> object:
    return or_(*(left.c[c].is_distinct_from(right[c]) for c in VALUES))


def _log_corrections(conn: Connection) -> int:
    join = and_(*(_bars.c[k] == _stage.c[k] for k in KEY))
    query = (select(*(_stage.c[c] for c in COLUMNS), *(_bars.c[c].label(f"old_{c}") for c in VALUES))
             .select_from(_stage.join(_bars, join)).where(_differs(_bars, _stage.c)))
    rows = conn.execute(query).mappings().all()
    if rows:
        now = datetime.now(UTC)
        conn.execute(PriceCorrection.__table__.insert(), [
            {"symbol": r["symbol"], "interval": r["interval"], "ts": r["ts"], "source": r["source"],
             "old": {c: r[f"old_{c}"] for c in VALUES}, "new": {c: r[c] for c in VALUES}, "created_at": now}
            for r in rows])
    return len(rows)


def upsert_bars(engine: Engine | Connection, frame: pd.DataFrame) -> UpsertResult:
    """Insert new bars, replace corrected ones (logged), leave identical ones untouched.

    ``frame``: symbol, ts (tz-aware), open, high, low, close, volume, source, asset_type, and
    optionally interval (default ``1d``) and synthetic (default False). Keys must be unique.
    """
    prepared = _prepare(frame)
    if prepared.empty:
        return UpsertResult()
    if isinstance(engine, Connection):
        return _upsert(engine, prepared)
    with engine.execution_options(write_lock=True).begin() as conn:  # SQLite: BEGIN IMMEDIATE
        return _upsert(conn, prepared)


def _lock_series(conn: Connection, keys: Iterable[tuple[str, str]]) -> None:
    """Serialize writers of the same (symbol, interval) series to the end of the transaction:
    a second writer reading stored bars before the first commits would log its corrections
    again. Taken in sorted order, so two writers of several series cannot deadlock."""
    for symbol, interval in sorted(set(keys)):
        lock_for_transaction(conn, f"price_history:{symbol}:{interval}")


def _upsert(conn: Connection, prepared: pd.DataFrame) -> UpsertResult:
    _lock_series(conn, zip(prepared["symbol"], prepared["interval"], strict=True))
    _load_stage(conn, prepared)
    updated = _log_corrections(conn)
    insert = dialect_insert(conn, _bars)
    statement = insert.from_select(COLUMNS, select(*(_stage.c[c] for c in COLUMNS)).where(true()))
    statement = statement.on_conflict_do_update(
        index_elements=KEY, set_={c: statement.excluded[c] for c in VALUES},
        where=_differs(_bars, statement.excluded))
    written = conn.execute(statement.execution_options(preserve_rowcount=True)).rowcount
    conn.exec_driver_sql(f"DROP TABLE {'pg_temp' if conn.dialect.name == 'postgresql' else 'temp'}._lab_stage_bars")
    return UpsertResult(inserted=written - updated, updated=updated, unchanged=len(prepared) - written)


def remove_bars(conn: Connection, symbol: str, rejected: pd.DataFrame, interval: str = "1d") -> list[datetime]:
    """Delete the stored bars among ``rejected`` (ts, reason), each logged in ``price_corrections``
    with its old values and ``new = {"quarantined": reason}``; returns their timestamps."""
    if rejected.empty:
        return []
    _lock_series(conn, [(symbol, interval)])
    reasons = dict(zip(rejected["ts"], rejected["reason"], strict=True))
    rows = conn.execute(select(_bars).where(_bars.c.symbol == symbol, _bars.c.interval == interval,
                                            _bars.c.ts.in_([ts.to_pydatetime() for ts in reasons]))
                        .order_by(_bars.c.ts)).mappings().all()
    if not rows:
        return []
    now = datetime.now(UTC)
    conn.execute(PriceCorrection.__table__.insert(), [
        {"symbol": symbol, "interval": interval, "ts": r["ts"], "source": r["source"],
         "old": {c: r[c] for c in VALUES}, "new": {"quarantined": reasons[pd.Timestamp(r["ts"])]}, "created_at": now}
        for r in rows])
    conn.execute(delete(_bars).where(_bars.c.id.in_([r["id"] for r in rows])))
    return [r["ts"] for r in rows]


def quarantine_bars(conn: Connection, symbol: str, asset_class: str, rows: pd.DataFrame,
                    interval: str = "1d") -> int:
    """Keep rejected bars with their reason; a row already quarantined for that reason is kept as is."""
    if rows.empty:
        return 0
    now = datetime.now(UTC)
    records = [{"asset_type": asset_class, "symbol": symbol, "interval": interval, "ts": r.ts.to_pydatetime(),
                "source": r.source, "reason": r.reason[:200], "payload": r.payload, "created_at": now}
               for r in rows.itertuples(index=False)]
    statement = dialect_insert(conn, QuarantinedBar.__table__).on_conflict_do_nothing()
    return conn.execute(statement.execution_options(preserve_rowcount=True), records).rowcount or 0


def last_bar(conn: Connection | Engine, symbol: str, interval: str = "1d",
             before: datetime | None = None) -> tuple[datetime, float] | None:
    """(ts, close) of the newest stored bar (strictly before ``before`` when given)."""
    query = select(PriceBar.ts, PriceBar.close).where(PriceBar.symbol == symbol, PriceBar.interval == interval)
    if before is not None:
        query = query.where(PriceBar.ts < before)
    query = query.order_by(PriceBar.ts.desc()).limit(1)
    if isinstance(conn, Engine):
        with conn.connect() as c:
            row = c.execute(query).first()
    else:
        row = conn.execute(query).first()
    return (row[0], float(row[1])) if row else None

