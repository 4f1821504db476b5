"""Ingest the universe: for each symbol, fetch (incrementally) down its provider chain,
validate, store idempotently, quarantine rejects, refresh its data-quality summary.

A symbol that fails on every provider, or on an unexpected error, never stops the others (what
they store stays stored) but fails the run: ``IngestSummary.failure`` names each, ``lab ingest``
exits 1 and the flow ends Failed. A symbol longer than the tables hold is refused before the
run starts.
Only bars from shortly before the last stored one are fetched: a short overlap
(``OVERLAP_DAYS``) lets a provider's revision of the latest bars (an in-progress session)
replace them, logged as a correction. When every price of the overlap differs from the stored
one by one common factor, the provider re-based its adjusted history (a split or, for series
adjusted for dividends, a dividend since the last run): the whole history is fetched again and
stored as corrections, so the stored series stays on one price basis. A stored bar that the
re-fetch shows to be bad (the last bar of a batch has no next bar to reveal a spike) is
quarantined and removed from ``price_history`` in the same transaction, also logged.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from lab.bars import load_bars
from lab.config import TradingConfig
from lab.db.models import IngestionRun
from lab.errors import DataError, LabError, ProviderError
from lab.settings import Settings
from universe.assets import known_symbols, store_assets
from universe.calendars import last_closed_session
from universe.providers import Chains, Provider, build_chains
from universe.providers.base import MetadataIncomplete
from universe.providers.files import FileProvider
from universe.quality import refresh_quality
from universe.store import check_symbols, last_bar, quarantine_bars, remove_bars, upsert_bars
from universe.validate import PRICES, validate_bars

__all__ = ["SymbolResult", "IngestSummary", "ingest_universe", "ingest_symbol", "plan_symbols"]

log = logging.getLogger(__name__)

OVERLAP_DAYS = 7
#: a common log price ratio this small between the overlap and the stored bars is float noise
REVISION_NOISE = 1e-6


@dataclass
class SymbolResult:
    symbol: str
    asset_class: str
    status: str  # ok | failed
    source: str | None = None
    inserted: int = 0
    updated: int = 0
    quarantined: int = 0
    #: why bars were quarantined (``Validated.reasons``)
    quarantine_reasons: list[str] = field(default_factory=list)
    #: the days of the new bars whose jump validation kept as a real move
    large_moves: list[str] = field(default_factory=list)
    #: the days of stored bars that validation rejected on re-fetch, removed from price_history
    removed: list[str] = field(default_factory=list)
    #: how the provider re-based its adjusted history, when it did (the whole history was re-fetched)
    revision: str | None = None
    missing_sessions: int = 0
    error: str | None = None
    #: a failure that trying again may help (a provider's throttle, timeout or 5xx)
    retryable: bool = False

    @property
    def stored(self) -> int:
        return self.inserted + self.updated


@dataclass
class IngestSummary:
    run_id: str
    source: str
    results: list[SymbolResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return sum(r.stored for r in self.results)

    @property
    def quarantined(self) -> int:
        return sum(r.quarantined for r in self.results)

    @property
    def failed(self) -> list[SymbolResult]:
        return [r for r in self.results if r.status != "ok"]

    def failure(self) -> str | None:
        """Why the run failed, naming each failed symbol and its error; None when every symbol
        was ingested or already up to date. One failed symbol fails the run (the others' bars
        stay stored), so a script or a scheduler running ``lab ingest`` or the flow can tell."""
        if not self.failed:
            return None
        which = ("every symbol" if len(self.failed) == len(self.results)
                 else f"{len(self.failed)} of {len(self.results)} symbols")
        return f"{which} failed: " + "; ".join(f"{r.symbol} ({r.error})" for r in self.failed)

    def validation_lines(self) -> list[str]:
        """What validation did beyond the counts: each symbol's re-based history, its reasons for
        quarantining bars (the rows stay in ``price_quarantine``) and the large moves it kept as real."""
        lines = [f"revised {r.symbol}: {r.revision}; {r.updated} stored bars corrected (old values in "
                 "price_corrections)" for r in self.results if r.revision]
        lines += [f"quarantined {r.symbol}: {reason}" for r in self.results for reason in r.quarantine_reasons]
        for r in self.results:
            if r.removed:
                lines.append(f"removed {r.symbol} from price_history: {len(r.removed)} stored bar"
                             f"{'s' * (len(r.removed) > 1)} quarantined on re-fetch ({', '.join(r.removed)})")
            if r.large_moves:
                hint = "; an unadjusted split reads as one" if r.asset_class == "stocks" else ""
                lines.append(f"kept {r.symbol}: {len(r.large_moves)} large move{'s' * (len(r.large_moves) > 1)} "
                             f"as real ({', '.join(r.large_moves)}){hint}")
        return lines

    def table(self) -> list[dict]:
        """One row per symbol, for the terminal and the Prefect artifact."""
        return [{"symbol": r.symbol, "class": r.asset_class, "status": r.status, "source": r.source or "",
                 "new": r.inserted, "corrected": r.updated, "quarantined": r.quarantined,
                 "missing sessions": r.missing_sessions, "error": r.error or ""} for r in self.results]


def plan_symbols(config: TradingConfig, source: str, *, symbols: list[str] | None = None,
                 asset_class: str | None = None, path: Path | str | None = None) -> list[tuple[str, str]]:
    """(symbol, asset class) pairs to ingest: the universe with its benchmarks, or the ones asked for."""
    if symbols is None and source == "files":
        symbols = list(FileProvider(path or config.data.files_path or ".").files())
    if symbols is None:
        pairs = []
        for name, universe in config.universe.asset_classes().items():
            if asset_class in (None, name):
                pairs += [(s, name) for s in dict.fromkeys([*universe.symbols, universe.benchmark])]
        check_symbols(s for s, _ in pairs)
        return pairs
    check_symbols(raw.strip().upper() for raw in symbols)
    pairs, unknown = [], []
    for raw in symbols:
        symbol = raw.strip().upper()
        known = config.asset_class_of(symbol)
        if asset_class is not None and known not in (None, asset_class):
            raise DataError(f"{symbol} is a {known} symbol in the config, not {asset_class}")
        resolved = asset_class or known
        if resolved is None:
            unknown.append(symbol)
        else:
            pairs.append((symbol, resolved))
    if unknown:
        raise DataError(f"not in the universe (config/trading.json): {', '.join(unknown)}; "
                        "add them there or pass --asset-class")
    return list(dict.fromkeys(pairs))


def _start(engine: Engine, symbol: str, since: date | None, history_start: date) -> tuple[date, datetime | None]:
    if since is not None:
        return since, None
    last = last_bar(engine, symbol)
    if last is None:
        return history_start, None
    return (last[0] - timedelta(days=OVERLAP_DAYS)).date(), last[0]


def ingest_symbol(engine: Engine, symbol: str, asset_class: str, chain: list[Provider], *,
                  history_start: date, since: date | None = None, run_id: str = "adhoc") -> SymbolResult:
    """Fetch, validate and store one symbol; a failure on every provider, or an unexpected
    error (rolled back with its transaction), is returned as a failed result, not raised."""
    try:
        return _ingest_symbol(engine, symbol, asset_class, chain, history_start=history_start, since=since,
                              run_id=run_id)
    except Exception as exc:  # one symbol's bug or database error must not end the others' run
        log.exception("ingest %s failed unexpectedly", symbol)
        error = f"unexpected {type(exc).__name__}: {exc}".splitlines()[0]  # a driver error runs on with its SQL
        return SymbolResult(symbol, asset_class, "failed", error=error)


def _ingest_symbol(engine: Engine, symbol: str, asset_class: str, chain: list[Provider], *,
                   history_start: date, since: date | None, run_id: str) -> SymbolResult:
    started = datetime.now(UTC)
    start, last_ts = _start(engine, symbol, since, history_start)
    raw, used, errors = _fetch(chain, symbol, asset_class, start, first_fetch=last_ts is None)
    if raw is None or used is None:
        result = SymbolResult(symbol, asset_class, "failed",
                              error="; ".join(map(str, errors)) or f"no provider serves {asset_class}",
                              retryable=any(isinstance(e, ProviderError) and e.retryable for e in errors))
        _record(engine, run_id, "+".join(p.name for p in chain), result, started)
        return result

    # a bar whose session has not closed yet (a provider's "today") would change: not stored
    closed = last_closed_session(asset_class, started)
    raw = raw[raw["ts"] <= closed]
    factor = _revision_factor(load_bars(engine, [symbol], start=_midnight(start)), raw)
    history, revision = None, None
    if factor is not None:
        history = load_bars(engine, [symbol])
        start = history["ts"].iloc[0].date()
        try:
            raw = used.fetch_bars(symbol, asset_class, start)
        except ProviderError as exc:
            result = SymbolResult(symbol, asset_class, "failed", error=f"{used.name} re-based its adjusted "
                                  f"history (x{factor:.6g}); fetching it again from {start} failed: {exc}",
                                  retryable=exc.retryable)
            _record(engine, run_id, used.name, result, started)
            return result
        raw = raw[raw["ts"] <= closed]
        revision = f"{used.name} re-based its adjusted history (x{factor:.6g} on the overlap); re-fetched from {start}"
    previous = last_bar(engine, symbol, before=_midnight(start))
    validated = validate_bars(raw, asset_class, prev_close=previous[1] if previous else None)
    bars = validated.clean.assign(symbol=symbol, asset_type=asset_class, synthetic=False)
    if history is not None:
        bars = pd.concat([bars, _rebased(history, raw, validated.clean)], ignore_index=True)
    with engine.execution_options(write_lock=True).begin() as conn:  # SQLite: BEGIN IMMEDIATE
        upserted = upsert_bars(conn, bars)
        removed = remove_bars(conn, symbol, validated.rejected())
        quarantine_bars(conn, symbol, asset_class, validated.quarantined)
        quality = refresh_quality(conn, symbol, asset_class, history_start)
    sources = sorted(set(raw["source"])) if len(raw) else [used.name]
    result = SymbolResult(symbol, asset_class, "ok", source=",".join(sources), inserted=upserted.inserted,
                          updated=upserted.updated, quarantined=len(validated.quarantined),
                          quarantine_reasons=validated.reasons(),
                          large_moves=[f"{ts:%Y-%m-%d}" for ts in validated.outliers if last_ts is None or ts > last_ts],
                          removed=[f"{ts:%Y-%m-%d}" for ts in removed], revision=revision,
                          missing_sessions=quality["missing_sessions"])
    _record(engine, run_id, used.name, result, started)
    return result


def _fetch(chain: list[Provider], symbol: str, asset_class: str, start: date, *,
           first_fetch: bool) -> tuple[pd.DataFrame | None, Provider | None, list[ProviderError | str]]:
    """The first provider's bars (and the provider), or None with every provider's error."""
    errors: list[ProviderError | str] = []
    for provider in chain:
        if asset_class not in provider.asset_classes:
            continue
        try:
            fetched = provider.fetch_bars(symbol, asset_class, start)
        except ProviderError as exc:
            errors.append(exc)
            continue
        if fetched.empty and first_fetch:
            errors.append(f"{provider.name}: no bars from {start}")
            continue
        return fetched, provider, errors
    return None, None, errors


def _midnight(day: date) -> datetime:
    return pd.Timestamp(day, tz="UTC").to_pydatetime()


def _revision_factor(stored: pd.DataFrame, fetched: pd.DataFrame) -> float | None:
    """The one factor by which every fetched price differs from the stored price of the same
    bar, when there is one beyond float noise: the provider re-based its adjusted history."""
    both = stored.merge(fetched, on="ts", suffixes=("_stored", ""))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.log(both[PRICES].to_numpy(dtype=float)
                        / both[[f"{c}_stored" for c in PRICES]].to_numpy(dtype=float)).ravel()
    ratios = ratios[np.isfinite(ratios)]
    if not len(ratios):
        return None
    common = float(np.median(ratios))
    # one bar corrected, or bars corrected by different amounts, is not a re-basing
    if abs(common) <= REVISION_NOISE or np.ptp(ratios) > abs(common) / 2:
        return None
    return float(np.exp(common))


def _rebased(history: pd.DataFrame, fetched: pd.DataFrame, clean: pd.DataFrame) -> pd.DataFrame:
    """Stored bars the re-fetched history lacks (a provider serving a shorter history), moved to
    its basis by the ratio at the nearest later bar both hold: a later split or dividend scales
    every bar before it alike."""
    lacking = history[~history["ts"].isin(fetched["ts"])]
    both = history[["ts", "close"]].merge(clean[["ts", "close"]], on="ts", suffixes=("", "_new"))
    if lacking.empty or both.empty:
        return lacking.iloc[0:0]
    ratio = pd.DataFrame({"ts": both["ts"].astype("datetime64[ns, UTC]"), "ratio": both["close_new"] / both["close"]})
    wanted = lacking[["ts"]].astype("datetime64[ns, UTC]")
    forward = pd.merge_asof(wanted, ratio, on="ts", direction="forward")["ratio"]
    factor = forward.fillna(pd.merge_asof(wanted, ratio, on="ts", direction="backward")["ratio"]).to_numpy()
    out = lacking.copy()
    out[PRICES] = out[PRICES].mul(factor, axis=0)
    out["volume"] = out["volume"] / factor
    return out


def _record(engine: Engine, run_id: str, provider: str, result: SymbolResult, started: datetime) -> None:
    with engine.execution_options(write_lock=True).begin() as conn:
        conn.execute(IngestionRun.__table__.insert().values(
            run_id=run_id, provider=provider[:32], symbol=result.symbol, status=result.status,
            rows_stored=result.stored, rows_quarantined=result.quarantined, error=result.error,
            started_at=started, finished_at=datetime.now(UTC)))


def refresh_metadata(engine: Engine, chains: Chains, results: list[SymbolResult]) -> list[str]:
    """Fetch metadata for ingested symbols not yet in stocks/crypto; problems become notes."""
    notes = []
    for asset_class in ("stocks", "crypto"):
        with engine.connect() as conn:
            wanted = [r.symbol for r in results
                      if r.asset_class == asset_class and r.status == "ok"
                      and r.symbol not in known_symbols(conn, asset_class)]
        for provider in chains.for_class(asset_class):
            if not wanted:
                break
            try:
                infos = provider.fetch_metadata(wanted, asset_class)
            except MetadataIncomplete as exc:
                notes.append(f"metadata: {exc}")
                infos = exc.infos  # stored: the next provider is asked only for the rest
            except ProviderError as exc:
                notes.append(f"metadata: {exc}")
                continue
            fetched_at = datetime.now(UTC)  # the answer is in hand: its fundamentals are known from now
            with engine.execution_options(write_lock=True).begin() as conn:
                store_assets(conn, infos, fetched_at)
            found = {i.symbol for i in infos}
            wanted = [s for s in wanted if s not in found]
    return notes


def _engine_and_settings(ctx_or_engine) -> tuple[Engine, Settings | None]:
    if isinstance(ctx_or_engine, Engine):
        return ctx_or_engine, None
    return ctx_or_engine.engine, ctx_or_engine.settings


def ingest_universe(ctx_or_engine, config: TradingConfig | None = None, *, source: str = "offline",
                    symbols: list[str] | None = None, since: date | str | None = None,
                    progress: Callable[[SymbolResult, int, int], None] | None = None,
                    path: Path | str | None = None, asset_class: str | None = None,
                    chains: Chains | None = None, workers: int | None = None) -> IngestSummary:
    """Ingest the configured universe (or ``symbols``) from ``source``; see the module doc.

    ``progress(result, done, total)`` is called after each symbol. ``chains`` overrides the
    providers (tests point them at local fake servers).
    """
    engine, settings = _engine_and_settings(ctx_or_engine)
    if config is None:
        config = getattr(ctx_or_engine, "config", None)
        if config is None:
            raise LabError("ingest_universe needs a config when given an engine")
    since_date = date.fromisoformat(since) if isinstance(since, str) else since
    history_start = config.data.history_start
    jobs = plan_symbols(config, source, symbols=symbols, asset_class=asset_class, path=path)
    own_chains = chains is None
    chains = chains or build_chains(source, config, settings=settings, path=path)
    summary = IngestSummary(run_id=uuid.uuid4().hex, source=source, notes=list(chains.notes))
    total = len(jobs)

    def run(job: tuple[str, str]) -> SymbolResult:
        symbol, klass = job
        return ingest_symbol(engine, symbol, klass, chains.for_class(klass), history_start=history_start,
                             since=since_date, run_id=summary.run_id)

    try:
        pool_size = workers or (1 if source in ("offline", "files") else 4)
        with ThreadPoolExecutor(max_workers=pool_size) as pool:
            for done, result in enumerate(pool.map(run, jobs), start=1):
                summary.results.append(result)
                if progress is not None:
                    progress(result, done, total)
        summary.notes += refresh_metadata(engine, chains, summary.results)
    finally:
        if own_chains:
            chains.close()
    return summary
