"""Prefect flow ``ingest_universe``: one task per symbol, retried once after a transient
provider failure (throttle, timeout, 5xx; never after an unknown symbol), with a per-provider
concurrency limit, the new symbols' metadata (``stocks``/``crypto``/``fundamentals``, as
``lab ingest`` stores it) and a summary table artifact (rows stored, quarantined, failures).

Concurrency per provider is enforced where the requests are made: every task shares one
provider chain, whose rate limiters cap requests in flight and pace them (see
``universe._http.RateLimiter``). Tasks are also tagged ``provider:<name>`` so a Prefect
tag concurrency limit can be added on top from the UI.
"""

from __future__ import annotations

import uuid
from datetime import date

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from lab.errors import DataError
from lab.runtime import open_lab
from universe.ingest import IngestSummary, SymbolResult, ingest_symbol, plan_symbols, refresh_metadata
from universe.providers import Chains, build_chains

__all__ = ["ingest_universe"]


class SymbolFailed(DataError):
    """Every provider failed for a symbol (raised so the task run shows Failed); ``retryable``
    when one of them failed in a way that trying again may help."""

    def __init__(self, error: str, *, retryable: bool = False):
        super().__init__(error)
        self.retryable = retryable


def _transient(task, task_run, state) -> bool:
    """Retry a symbol only after a throttle, timeout or 5xx (its provider's HTTP retries spent):
    an unknown symbol or a missing file fails the same way again, one more failed run row each time."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, SymbolFailed) and error.retryable


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=_transient, cache_policy=NO_CACHE,
      task_run_name="ingest-{symbol}")
def ingest_symbol_task(engine, chains: Chains, symbol: str, asset_class: str, history_start: date,
                       since: date | None, run_id: str) -> SymbolResult:
    result = ingest_symbol(engine, symbol, asset_class, chains.for_class(asset_class),
                           history_start=history_start, since=since, run_id=run_id)
    if result.status != "ok":
        raise SymbolFailed(str(result.error), retryable=result.retryable)
    return result


refresh_metadata_task = task(refresh_metadata, name="refresh-metadata", cache_policy=NO_CACHE)


@flow(name="ingest_universe", log_prints=True)
def ingest_universe(source: str = "offline", symbols: list[str] | None = None, since: date | None = None,
                    path: str | None = None, asset_class: str | None = None) -> dict:
    """Ingest the universe from ``source``; a symbol failing on every provider never stops the
    others, but the run then fails (after its summary artifact), naming each failed symbol and why."""
    lab = open_lab()
    config = lab.config
    jobs = plan_symbols(config, source, symbols=symbols, asset_class=asset_class, path=path)
    chains = build_chains(source, config, settings=lab.settings, path=path)
    summary = IngestSummary(run_id=uuid.uuid4().hex, source=source, notes=list(chains.notes))
    history_start = config.data.history_start
    try:
        futures = [
            ingest_symbol_task.with_options(tags={f"provider:{p.name}" for p in chains.for_class(klass)})
            .submit(lab.engine, chains, symbol, klass, history_start, since, summary.run_id)
            for symbol, klass in jobs
        ]
        for (symbol, klass), future in zip(jobs, futures, strict=True):
            state = future.wait() or future.state
            if state.is_completed():
                summary.results.append(future.result())
            else:
                error = str(future.result(raise_on_failure=False))
                summary.results.append(SymbolResult(symbol, klass, "failed", error=error))
        summary.notes += refresh_metadata_task(lab.engine, chains, summary.results)
    finally:
        chains.close()
    rows = summary.table()
    create_table_artifact(key="ingest-summary", table=rows,
                          description=f"ingest ({source}): {summary.stored} rows stored, "
                                      f"{summary.quarantined} quarantined, {len(summary.failed)} failed")
    for line in [*summary.validation_lines(), *summary.notes]:
        print(line)
    if (failure := summary.failure()) is not None:  # as `lab ingest` exits 1
        raise DataError(failure)
    return {"run_id": summary.run_id, "stored": summary.stored, "quarantined": summary.quarantined,
            "failed": {r.symbol: r.error for r in summary.failed}, "rows": rows}
