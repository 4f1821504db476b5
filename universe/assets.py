"""Asset metadata into ``stocks`` / ``crypto`` and point-in-time ``fundamentals``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, or_, select

from lab.db.models import Crypto, Fundamental, Stock
from universe.providers.base import AssetInfo
from universe.store import dialect_insert

__all__ = ["store_assets", "known_symbols"]

_FIELDS = {"stocks": ("name", "sector", "industry", "market_cap", "exchange"),
           "crypto": ("name", "coingecko_id", "market_cap")}
#: the values of a ``fundamentals`` row
_FUNDAMENTALS = ("pe_ratio", "pb_ratio", "market_cap", "sector")


def known_symbols(conn: Connection, asset_class: str) -> set[str]:
    model = Stock if asset_class == "stocks" else Crypto
    return set(conn.execute(select(model.symbol)).scalars())


def store_assets(conn: Connection, infos: list[AssetInfo], fetched_at: datetime) -> int:
    """Upsert metadata (rows change only when a value does), and each symbol's fundamentals
    as known from ``fetched_at``, when the provider's answer was in hand (tz-aware).

    Known from the fetch time itself, not the midnight before it: a decision earlier that
    day (the bar labelled that day, a past cycle replayed) must not read a value nobody had
    yet. A re-fetch stores a row only when a value differs from the symbol's latest, so
    re-running an ingestion adds none."""
    if fetched_at.tzinfo is None:
        raise ValueError(f"store_assets needs a tz-aware fetch time, got {fetched_at!r}")
    now = datetime.now(UTC)
    for info in infos:
        fields = _FIELDS[info.asset_class]
        table = (Stock if info.asset_class == "stocks" else Crypto).__table__
        values = {f: getattr(info, f) for f in fields}
        insert = dialect_insert(conn, table).values(symbol=info.symbol, **values, updated_at=now)
        conn.execute(insert.on_conflict_do_update(
            index_elements=["symbol"], set_={**{f: insert.excluded[f] for f in fields}, "updated_at": now},
            where=or_(*(table.c[f].is_distinct_from(insert.excluded[f]) for f in fields))))
        if info.pe_ratio is not None or info.pb_ratio is not None:
            facts = {f: getattr(info, f) for f in _FUNDAMENTALS}
            latest = conn.execute(select(*(getattr(Fundamental, f) for f in _FUNDAMENTALS))
                                  .where(Fundamental.symbol == info.symbol)
                                  .order_by(Fundamental.known_at.desc()).limit(1)).first()
            if latest is None or tuple(latest) != tuple(facts.values()):
                fundamentals = dialect_insert(conn, Fundamental.__table__).values(
                    symbol=info.symbol, known_at=fetched_at, **facts, source=info.source)
                conn.execute(fundamentals.on_conflict_do_nothing())
    return len(infos)
