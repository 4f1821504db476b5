"""Symbol universes and market data: providers, rate limits, retries, validation, storage.

Public names: :func:`ingest_universe` (the whole job), :func:`upsert_bars` (idempotent bulk
storage) and :func:`synthetic_market` (a seeded, clearly labelled synthetic market).
"""

from universe.ingest import IngestSummary, SymbolResult, ingest_universe
from universe.store import UpsertResult, upsert_bars
from universe.synthetic import synthetic_market

__all__ = ["ingest_universe", "IngestSummary", "SymbolResult", "upsert_bars", "UpsertResult", "synthetic_market"]
