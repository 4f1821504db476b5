"""Benchmark: the lab's bar storage (``upsert_bars``) against ``DataFrame.to_sql`` appends and
row-by-row ORM inserts, on PostgreSQL (``LAB_TEST_PG_URL``) and SQLite.

The lab path loads the whole synthetic market (500 symbols x 10 years, about 1.26M rows; a
quarter of that with ``--quick``); the references are timed on a sample (ORM inserts of 1.26M
rows would take many minutes) and compared as rows per second. Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from lab.db import connect, session_scope
from lab.db.models import PriceBar
from universe.store import upsert_bars
from universe.synthetic import synthetic_market

COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume", "asset_type", "source", "synthetic"]


def fresh_databases(pg_base: str | None, tmp: str):
    """Yield (dialect, url factory): each call gives a new empty, migrated database."""
    def sqlite_url():
        return f"sqlite:///{tmp}/{uuid.uuid4().hex}.db"

    def pg_url():
        name = f"lab_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(pg_base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        created.append(name)
        return make_url(pg_base).set(database=name).render_as_string(hide_password=False)

    created: list[str] = []
    found = [("sqlite", sqlite_url)]
    if pg_base:
        found.insert(0, ("postgresql", pg_url))
    return found, created


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def orm_rows(frame):
    for row in frame.itertuples(index=False):
        yield PriceBar(symbol=row.symbol, ts=row.ts.to_pydatetime(), open=row.open, high=row.high, low=row.low,
                       close=row.close, volume=row.volume, asset_type=row.asset_type, source=row.source,
                       synthetic=bool(row.synthetic), interval="1d")


def orm_insert(engine, frame) -> None:
    with session_scope(engine) as session:
        for bar in orm_rows(frame):
            session.add(bar)
            session.flush()  # row by row, as naive ingestion code does


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rows (finishes in under a minute)")
    args = parser.parse_args()
    n_symbols, n_days = (100, 1260) if args.quick else (500, 2520)
    sample = {"orm": 3_000 if args.quick else 20_000, "to_sql": 50_000 if args.quick else 250_000}
    market = synthetic_market(n_symbols, n_days, seed=42)
    results: dict[str, object] = {"rows": len(market), "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        databases, created = fresh_databases(os.environ.get("LAB_TEST_PG_URL"), tmp)
        try:
            for dialect, new_url in databases:
                lab_engine = connect(new_url())
                lab_s = timed(lambda e=lab_engine: upsert_bars(e, market))
                rerun_s = timed(lambda e=lab_engine: upsert_bars(e, market))
                orm_frame = market.head(sample["orm"])
                orm_s = timed(lambda: orm_insert(connect(new_url()), orm_frame))
                sql_frame = market.head(sample["to_sql"])
                to_sql_engine = connect(new_url())
                to_sql_s = timed(lambda: sql_frame[COLUMNS].assign(interval="1d").to_sql(
                    "price_history", to_sql_engine, if_exists="append", index=False, chunksize=10_000))
                lab_rate = len(market) / lab_s
                results[dialect] = {
                    "lab_rows_per_s": round(lab_rate), "lab_load_s": round(lab_s, 2),
                    "lab_rerun_s": round(rerun_s, 2),
                    "orm_rows_per_s": round(len(orm_frame) / orm_s), "to_sql_rows_per_s": round(len(sql_frame) / to_sql_s),
                    "speedup_vs_orm": round(lab_rate / (len(orm_frame) / orm_s), 2),
                    "speedup_vs_to_sql": round(lab_rate / (len(sql_frame) / to_sql_s), 2),
                }
        finally:
            if created:
                admin = create_engine(os.environ["LAB_TEST_PG_URL"], isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    for name in created:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    headline = results.get("postgresql") or results["sqlite"]
    results["speedup_vs_orm"] = headline["speedup_vs_orm"]
    results["speedup_vs_to_sql"] = headline["speedup_vs_to_sql"]
    results["pg_full_load_s"] = results["postgresql"]["lab_load_s"] if "postgresql" in results else None
    print(json.dumps(results))


if __name__ == "__main__":
    main()
