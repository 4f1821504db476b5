"""The lab's runtime state as Prometheus metrics, read from the database at scrape time.

A custom collector (not module-level gauges updated by the engine) keeps the exporter a pure
reader: whatever wrote the tables (a paper cycle, a backtest, ingestion, tuning), a scrape
shows the current state, and restarting the exporter loses nothing.

Label cardinality is bounded on purpose: ``portfolio`` covers live/paper portfolios only
(``backtest:<id>`` portfolios are unbounded and belong on the SQL boards), ``strategy`` comes
from the configured strategies, ``provider`` from the market-data providers, and ``status``
from the small fixed sets in the schema. Symbols are never labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select, true
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from lab.db.models import (
    BACKTEST_PREFIX,
    IngestionRun,
    ModelVersion,
    Order,
    PortfolioSnapshot,
    Position,
    PriceBar,
    Signal,
    TradingControl,
    TuningRun,
)
from lab.trading.killswitch import engaged_by

__all__ = ["LabCollector"]

_SNAPSHOT_GAUGES = (
    ("lab_portfolio_equity_usd", "Total value (cash + positions) at the latest snapshot", "equity"),
    ("lab_portfolio_cash_usd", "Cash at the latest snapshot", "cash"),
    ("lab_portfolio_positions_value_usd", "Market value of open positions", "positions_value"),
    ("lab_portfolio_realized_pnl_usd", "Realized P&L since inception", "realized_pnl"),
    ("lab_portfolio_unrealized_pnl_usd", "Unrealized P&L of open positions", "unrealized_pnl"),
    ("lab_portfolio_drawdown_ratio", "Drawdown from peak equity (0.1 = 10 %)", "drawdown"),
)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.astimezone(UTC).timestamp()


class LabCollector(Collector):
    """Collects every lab metric in one pass over the database.

    ``min_interval_s`` caches one pass, so several Prometheus servers (or a fast scrape
    interval) do not rescan ``price_history`` more often than that.
    """

    def __init__(self, engine: Engine, *, min_interval_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._cached: list[Metric] = []
        self._cached_at: float | None = None

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        if self._cached_at is None or now - self._cached_at >= self._min_interval_s:
            self._cached = self._collect_once()
            self._cached_at = now
        yield from self._cached

    def _collect_once(self) -> list[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily("lab_exporter_database_up",
                               "1 when the last scrape could read the lab database, else 0")
        try:
            with Session(self._engine) as session:
                metrics = [*self._portfolio(session), *self._trading(session),
                           *self._data(session), *self._research(session)]
            up.add_metric([], 1.0)
        except SQLAlchemyError:
            metrics = []
            up.add_metric([], 0.0)
        duration = GaugeMetricFamily("lab_exporter_collect_duration_seconds",
                                     "Time the last pass over the database took")
        duration.add_metric([], time.perf_counter() - started)
        return [*metrics, up, duration]

    # --- portfolios -------------------------------------------------------------------

    def _portfolio(self, session: Session) -> Iterator[Metric]:
        latest = (
            select(PortfolioSnapshot.portfolio, func.max(PortfolioSnapshot.ts).label("ts"))
            .where(PortfolioSnapshot.portfolio.not_like(f"{BACKTEST_PREFIX}%"))
            .group_by(PortfolioSnapshot.portfolio)
            .subquery()
        )
        snapshots = session.scalars(
            select(PortfolioSnapshot).join(
                latest, (PortfolioSnapshot.portfolio == latest.c.portfolio)
                & (PortfolioSnapshot.ts == latest.c.ts))
        ).all()
        for name, help_text, attr in _SNAPSHOT_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=["portfolio"])
            for snap in snapshots:
                family.add_metric([snap.portfolio], float(getattr(snap, attr)))
            yield family
        stamp = GaugeMetricFamily("lab_portfolio_snapshot_timestamp_seconds",
                                  "When the latest portfolio snapshot was taken", labels=["portfolio"])
        for snap in snapshots:
            stamp.add_metric([snap.portfolio], _epoch(snap.ts) or 0.0)
        yield stamp

        controls = {c.portfolio: c for c in session.scalars(select(TradingControl))}
        halted = GaugeMetricFamily("lab_portfolio_halted",
                                   "1 while the drawdown halt stops new entries", labels=["portfolio"])
        kill = GaugeMetricFamily("lab_kill_switch_engaged",
                                 "1 while a kill switch blocks the portfolio's order submission; engaged_by names "
                                 "which (its own, * for every account)", labels=["portfolio", "engaged_by"])
        for portfolio in sorted({s.portfolio for s in snapshots} | set(controls)):
            if portfolio.startswith(BACKTEST_PREFIX):
                continue
            control = controls.get(portfolio)
            halted.add_metric([portfolio], float(bool(control and control.halted)))
            by = engaged_by(controls, portfolio)
            kill.add_metric([portfolio, "+".join(by)], float(bool(by)))
        yield halted
        yield kill

    # --- positions, orders, signals ---------------------------------------------------

    def _trading(self, session: Session) -> Iterator[Metric]:
        positions = GaugeMetricFamily("lab_open_positions", "Open positions", labels=["portfolio", "strategy"])
        rows = session.execute(
            select(Position.portfolio, Position.strategy, func.count())
            .where(Position.qty != 0, Position.portfolio.not_like(f"{BACKTEST_PREFIX}%"))
            .group_by(Position.portfolio, Position.strategy)
        )
        for portfolio, strategy, count in rows:
            positions.add_metric([portfolio, strategy], float(count))
        yield positions

        orders = GaugeMetricFamily("lab_orders", "Orders by current status", labels=["portfolio", "status"])
        rows = session.execute(
            select(Order.portfolio, Order.status, func.count())
            .where(Order.portfolio.not_like(f"{BACKTEST_PREFIX}%"))
            .group_by(Order.portfolio, Order.status)
        )
        for portfolio, status, count in rows:
            orders.add_metric([portfolio, status], float(count))
        yield orders

        # A signal is journaled as 'new' and then marked ordered or skipped, so counts by status
        # go down as well as up: a gauge. Only the number made, whatever became of them, is a counter.
        created = CounterMetricFamily("lab_signals_created", "Signals generated, whatever their outcome",
                                      labels=["portfolio", "strategy"])
        by_outcome = GaugeMetricFamily("lab_signals", "Signals by current outcome (new, ordered, skipped)",
                                       labels=["portfolio", "strategy", "status"])
        rows = session.execute(
            select(Signal.portfolio, Signal.strategy, Signal.status, func.count())
            .where(Signal.portfolio.not_like(f"{BACKTEST_PREFIX}%"))
            .group_by(Signal.portfolio, Signal.strategy, Signal.status)
        )
        made: dict[tuple[str, str], float] = {}
        for portfolio, strategy, status, count in rows:
            by_outcome.add_metric([portfolio, strategy, status], float(count))
            made[portfolio, strategy] = made.get((portfolio, strategy), 0.0) + count
        for labels, count in made.items():
            created.add_metric(list(labels), count)
        yield created
        yield by_outcome

    # --- market data --------------------------------------------------------------------

    def _data(self, session: Session) -> Iterator[Metric]:
        fresh = GaugeMetricFamily("lab_price_last_bar_timestamp_seconds",
                                  "Time of the newest stored bar per provider (freshness = time() - this)",
                                  labels=["provider", "interval"])
        for provider, interval, ts in session.execute(
            select(PriceBar.source, PriceBar.interval, func.max(PriceBar.ts))
            .where(PriceBar.synthetic.is_not(true()))
            .group_by(PriceBar.source, PriceBar.interval)
        ):
            fresh.add_metric([provider, interval], _epoch(ts) or 0.0)
        yield fresh

        fetches = CounterMetricFamily("lab_ingestion_fetches", "Symbol fetches by provider and outcome",
                                      labels=["provider", "status"])
        for provider, status, count in session.execute(
            select(IngestionRun.provider, IngestionRun.status, func.count())
            .group_by(IngestionRun.provider, IngestionRun.status)
        ):
            fetches.add_metric([provider, status], float(count))
        yield fetches

        last_ok = GaugeMetricFamily("lab_ingestion_last_success_timestamp_seconds",
                                    "When the provider last delivered a symbol successfully",
                                    labels=["provider"])
        finished = func.coalesce(IngestionRun.finished_at, IngestionRun.started_at)
        for provider, ts in session.execute(
            select(IngestionRun.provider, func.max(finished).label("ts"))
            .where(IngestionRun.status == "ok").group_by(IngestionRun.provider)
        ):
            last_ok.add_metric([provider], _epoch(ts) or 0.0)
        yield last_ok

    # --- research -------------------------------------------------------------------------

    def _research(self, session: Session) -> Iterator[Metric]:
        trials = CounterMetricFamily("lab_tuning_trials", "Tuning trials run per strategy", labels=["strategy"])
        runs = CounterMetricFamily("lab_tuning_runs", "Tuning runs per strategy", labels=["strategy"])
        for strategy, n_trials, n_runs in session.execute(
            select(TuningRun.strategy, func.sum(TuningRun.trials), func.count()).group_by(TuningRun.strategy)
        ):
            trials.add_metric([strategy], float(n_trials or 0))
            runs.add_metric([strategy], float(n_runs))
        yield trials
        yield runs

        best = GaugeMetricFamily("lab_tuning_best_score",
                                 "Holdout score of the best params of the latest finished tuning run per strategy",
                                 labels=["strategy", "metric"])
        latest = (
            select(TuningRun.strategy, func.max(TuningRun.id).label("id"))
            .where(TuningRun.finished_at.is_not(None), TuningRun.best_score.is_not(None))
            .group_by(TuningRun.strategy)
            .subquery()
        )
        for run in session.scalars(select(TuningRun).join(latest, TuningRun.id == latest.c.id)):
            best.add_metric([run.strategy, run.metric], float(run.best_score))  # type: ignore[arg-type]
        yield best

        active = GaugeMetricFamily("lab_model_active_version", "Version number of the active model",
                                   labels=["domain", "strategy"])
        for model in session.scalars(select(ModelVersion).where(ModelVersion.is_active.is_(true()))):
            active.add_metric([model.domain, model.strategy], float(model.version))
        yield active
