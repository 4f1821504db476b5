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


def known_symbols(conn: Connection, asset_class: str) -> set[str]:
    model = Stock if asset_class == "stocks" else Crypto
    return set(conn.execute(select(model.symbol)).scalars())


def store_assets(conn: Connection, infos: list[AssetInfo]) -> int:
    """Upsert metadata (rows change only when a value does); fundamentals keyed by the day fetched."""
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for info in infos:
        fields = _FIELDS[info.asset_class]
        table = (Stock if info.asset_class == "stocks" else Crypto).__table__
        values = {f: getattr(info, f) for f in fields}
        insert = dialect_insert(conn, table).values(symbol=info.symbol, **values, updated_at=now)
        conn.execute(insert.on_conflict_do_update(
            index_elements=["symbol"], set_={**{f: insert.excluded[f] for f in fields}, "updated_at": now},
            where=or_(*(table.c[f].is_distinct_from(insert.excluded[f]) for f in fields))))
        if info.pe_ratio is not None or info.pb_ratio is not None:
            fundamentals = dialect_insert(conn, Fundamental.__table__).values(
                symbol=info.symbol, known_at=today, pe_ratio=info.pe_ratio, pb_ratio=info.pb_ratio,
                market_cap=info.market_cap, sector=info.sector, source=info.source)
            conn.execute(fundamentals.on_conflict_do_nothing())
    return len(infos)
