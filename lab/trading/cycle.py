"""One trading cycle: the engine's decision step (``lab.trading.step``: sync fills, mark
prices, drawdown halt, exits, signals, entries sized under the risk rules) with the books in
SQL around it, then a second sync and a snapshot.

Idempotent per (portfolio, as_of): a completed cycle is not run again, and a crashed one
resumes. A portfolio's cycles run forward in time, one after another: a later cycle is refused
while an earlier one is unfinished (re-run that one: it resumes), except where it can never
resume (a real broker's, away from the broker's present): the next cycle marks it abandoned.
One cycle at a time holds a portfolio's books (``store.sole_writer``), in any process. Every
order's client id is derived from its decision, is stored before it is submitted, and brokers
deduplicate on it, so a re-run never places a second order. Fills are booked one transaction
each (see ``lab.trading.store``), so the books survive a kill at any point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Engine, func, select

from lab.bars import stored_spans
from lab.config import TradingConfig
from lab.db import models as db
from lab.db import session_scope
from lab.db.types import utcnow
from lab.errors import TradingError
from lab.runtime import LabContext
from lab.trading.broker import BrokerInterface
from lab.trading.brokers import open_real_broker
from lab.trading.calendar import in_future
from lab.trading.market import MarketSnapshot, load_market
from lab.trading.model import Order
from lab.trading.paper import Bar, PaperTradingExecutor
from lab.trading.portfolio import ExitDecision, PortfolioManager
from lab.trading.predictions import PredictionSource
from lab.trading.reconcile import reconcile
from lab.trading.signals import FeatureSource, TradeSignalEngine, exit_decisions
from lab.trading.step import Candidate, PreTradeCheck, StepResult, sync, trade_step
from lab.trading.store import (
    SqlBookkeeper,
    check_portfolio_name,
    load_books,
    load_open_orders,
    save_snapshot,
    set_halt,
    sole_writer,
)
from universe.calendars import last_bar_at

__all__ = ["CycleResult", "PreTradeCheck", "check_asset_classes", "decision_time", "paper_account", "run_trading_cycle",
           "STAGES"]

#: named points of a cycle; ``hook(stage)`` is called at each (crash tests pause there)
STAGES = ("claimed", "synced", "exits_placed", "signals_stored", "order_stored", "fill_booked",
          "entries_placed", "snapshot")


#: how far from a real broker's present its cycle may decide (a retry, a resumed cycle)
_PRESENT = timedelta(minutes=15)


@dataclass(frozen=True)
class CycleResult:
    portfolio: str
    as_of: datetime
    already_completed: bool
    fills: int = 0
    orders_placed: int = 0
    rejected: int = 0
    exits: int = 0
    signals: int = 0
    cash: float = 0.0
    equity: float = 0.0
    halted: bool = False
    notes: list[str] = field(default_factory=list)
    #: per strategy asked for entries: how far its symbols got (``Screening``'s counts and
    #: best confidence) and the ``min_confidence`` they were held to
    screening: dict[str, dict] = field(default_factory=dict)
    #: when a cycle found already completed had completed (its figures and notes are from
    #: then); None for a cycle run now
    completed_at: datetime | None = None

    def summary(self) -> dict:
        out = asdict(self)
        out["as_of"] = self.as_of.isoformat()
        out["completed_at"] = self.completed_at.isoformat() if self.completed_at else None
        return out

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> CycleResult:
        """The result back from ``summary()`` (a stored cycle's, or a flow's return value)."""
        done = summary.get("completed_at")
        return cls(**{**summary, "as_of": datetime.fromisoformat(summary["as_of"]),
                      "completed_at": datetime.fromisoformat(done) if done else None})

    def explain(self) -> list[str]:
        """Why the cycle did what it did, a line each: how far each strategy's symbols got,
        then the notes (stale bars, skipped strategies, refused or cut signals, rejections)."""
        return [f"{name}: {_screening_line(counts)}" for name, counts in self.screening.items()] + self.notes


def _screening_line(counts: Mapping[str, Any]) -> str:
    if not counts["screened"]:
        return "no symbol has features at this time (too little history, or no bars stored)"
    best = "" if counts["best"] is None else f" (best {counts['best']:.2f})"
    return (f"{counts['screened']} screened, {counts['rule']} fired the entry rule, {counts['confident']} past "
            f"min confidence {counts['min_confidence']:.2f}, risk/reward and positive EV{best}")


def decision_time(value: str | datetime | None) -> datetime:
    """A cycle's ``as_of``: ISO text (a date is that session's midnight-UTC label) or a
    datetime, a time without a zone being UTC; now to the minute when ``value`` is None."""
    if value is None:
        return datetime.now(UTC).replace(second=0, microsecond=0)
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise TradingError(f"as_of {value!r}: expected an ISO date or time such as 2024-03-01 or "
                           f"2024-03-01T14:30:00+00:00 ({exc})") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def run_trading_cycle(
    ctx: LabContext,
    as_of: datetime,
    *,
    portfolio: str = "paper",
    predictions: PredictionSource,
    broker: BrokerInterface | None = None,
    features: FeatureSource | None = None,
    pre_trade_checks: Sequence[PreTradeCheck] | None = None,
    hook: Callable[[str], None] | None = None,
    asset_classes: Sequence[str] | None = None,
    live: bool = False,
) -> CycleResult:
    """Run (or resume, or skip when completed) the cycle of ``portfolio`` at ``as_of``.

    ``broker`` defaults to the one ``execution.broker`` names: the paper executor rebuilt
    from the books, or a real broker's paper account (its live endpoint only with
    ``execution.live`` and ``live``, the CLI's ``--live``). A real broker is reconciled with
    the books first; a mismatch halts the account and the cycle places nothing. ``features`` to
    ``lab.features`` on the stored bars; ``pre_trade_checks`` to the lab's validation and
    kill switch (``lab.trading.pretrade`` / ``lab.trading.killswitch``). ``asset_classes``
    limits new entries to those classes of the config's universe (stocks and crypto run on
    their own schedules; another class is refused); exits are always checked for every held
    position.
    """
    if as_of.tzinfo is None:
        raise TradingError(f"as_of must be timezone-aware, got {as_of.isoformat()}")
    as_of = as_of.astimezone(UTC)  # one instant, one cycle; and the daily limits count UTC days
    if in_future(as_of, now := datetime.now(UTC)):
        raise TradingError(f"as_of {as_of.isoformat()} is in the future (now {now.isoformat(timespec='seconds')}): "
                           f"a cycle decides on bars that exist; leave out --as-of to decide now")
    check_portfolio_name(portfolio)
    hook = hook or (lambda stage: None)
    engine, config = ctx.engine, ctx.config
    check_asset_classes(config, asset_classes)
    if broker is None and config.execution.broker != "paper":
        broker = open_real_broker(ctx.settings, config, live=live)  # refuses an unallowed --live before any write
    elif broker is None and live:
        raise TradingError("--live trades real money at a real broker, but execution.broker is 'paper' "
                           "(set it to alpaca or binance, with execution.live: true)")
    with sole_writer(engine, portfolio, what=f"the cycle at {as_of.isoformat()}"):
        done = _stored_result(ctx, portfolio, as_of)
        if done is not None:
            return done
        present = None
        if broker is not None and broker.name != "paper":
            present = broker.clock(as_of).now.astimezone(UTC)
            _at_present(broker.name, present, as_of)
        _claim(ctx, portfolio, as_of, present=present)
        hook("claimed")
        manager = load_books(engine, config, portfolio)
        open_orders = load_open_orders(engine, portfolio)
        market = _market(engine, config, as_of, manager, open_orders)
        if broker is None:
            broker = _paper_broker(config, manager, open_orders, market)
        checks = (list(pre_trade_checks) if pre_trade_checks is not None
                  else _default_checks(ctx, portfolio, as_of, market.prices()))
        journal = _SqlJournal(ctx, portfolio, as_of, manager, broker.name, hook)
        synced = StepResult()
        if broker.name != "paper":
            # what the broker filled since the last cycle is booked first: it is no mismatch;
            # nor is what it filled since then, which a difference syncs again to book
            sync(broker, journal, open_orders, synced, checks)
            reconciliation = reconcile(engine, broker, portfolio, settle=lambda: sync(
                broker, journal, load_open_orders(engine, portfolio), synced, checks))
            if not reconciliation.ok:
                result = CycleResult(portfolio=portfolio, as_of=as_of, already_completed=False, cash=manager.cash,
                                     equity=manager.equity, halted=True,
                                     notes=[f"reconciliation mismatch, trading halted: {m}"
                                            for m in reconciliation.mismatches])
                _complete(ctx, portfolio, as_of, result)
                return result
        # the markets this cycle may act in: those it enters, and those it holds positions in
        wanted = {ac for ac in config.universe.asset_classes() if asset_classes is None or ac in asset_classes}
        closed = _closed_markets(broker, wanted | {p.asset_type for p in manager.open_positions()}, as_of)
        journal.notes.extend(closed.values())
        prices = market.prices()
        signal_count = 0
        screening: dict[str, dict] = {}

        def entries() -> list[Candidate]:
            nonlocal signal_count
            engine_ = TradeSignalEngine(config, predictions, features or market, as_of=as_of, prices=prices)
            universe = {}
            for name, u in config.universe.asset_classes().items():
                if (asset_classes is None or name in asset_classes) and name not in closed:
                    behind = market.behind(u.symbols, name, as_of)
                    spans = stored_spans(engine, [s for s, last in behind.items() if last is None])
                    journal.notes.extend(_stale_notes(name, behind, as_of, spans))
                    universe[name] = [s for s in u.symbols if s not in behind]
            signals = engine_.generate(universe)
            journal.notes.extend(engine_.skipped.values())
            screening.update({name: {**asdict(counts), "min_confidence": config.strategies[name].min_confidence}
                              for name, counts in engine_.screened.items() if name not in engine_.skipped})
            signal_ids = _store_signals(ctx, portfolio, as_of, signals)
            hook("signals_stored")
            signal_count = len(signals)
            return [Candidate.from_record(s, ref=signal_ids[(s["strategy"], s["symbol"], s["side"])])
                    for s in signals.to_dict("records")]

        def exits(pending: Sequence[Order]) -> list[ExitDecision]:
            return exit_decisions(config, manager, features or market, as_of, pending)

        step = trade_step(manager, broker, journal, as_of=as_of, prices=prices, asset_types=journal.asset_types,
                          exits=exits, entries=entries, checks=checks, closed=closed)
        sync(broker, journal, load_open_orders(engine, portfolio), step, checks)
        manager.mark(prices)
        if manager.update_drawdown():  # the halt holds for the next cycles until lifted
            journal.halted(manager.halt_reason or "halted")
            step.notes.append(manager.halt_reason or "halted")
        benchmark = next(iter(config.universe.asset_classes().values())).benchmark
        save_snapshot(engine, manager, as_of, benchmark_close=prices.get(benchmark))
        hook("snapshot")
        result = CycleResult(portfolio=portfolio, as_of=as_of, already_completed=False,
                             fills=synced.fills + step.fills, orders_placed=step.placed,
                             rejected=synced.rejected + step.rejected, exits=step.exits, signals=signal_count,
                             cash=manager.cash, equity=manager.equity, halted=manager.halted,
                             notes=journal.notes + step.notes, screening=screening)
        _complete(ctx, portfolio, as_of, result)
        return result


def check_asset_classes(config: TradingConfig, asset_classes: Sequence[str] | None) -> None:
    """Refuse a class the universe lacks before anything is stored: the cycle would screen
    nothing, yet complete, and re-running it for the class meant would be a no-op."""
    known = config.universe.asset_classes()
    unknown = [name for name in asset_classes or () if name not in known]
    if unknown:
        raise TradingError(f"asset class {', '.join(map(repr, unknown))} is not in the config's universe "
                           f"(known: {', '.join(sorted(known))})")


def _at_present(broker: str, present: datetime, as_of: datetime) -> None:
    """A real broker fills at its present prices: a cycle deciding at another time would size
    its orders on the bars of that time. A retried or resumed cycle minutes later still runs."""
    if abs(present - as_of) > _PRESENT:
        raise TradingError(f"{broker} trades at its present, {present.isoformat()}: a cycle deciding at "
                           f"{as_of.isoformat()} would size its orders on the prices of another time (more than "
                           f"{_PRESENT.total_seconds() / 60:.0f} minutes away). Leave out --as-of to decide now; "
                           f"replay other times on the paper broker or with `lab backtest`")


def _closed_markets(broker: BrokerInterface, classes: set[str], as_of: datetime) -> dict[str, str]:
    """The asset classes whose market the broker says is closed at ``as_of``, each with its
    note: brokers reject orders then, so the cycle places none there (the next cycle in
    market hours decides again) rather than storing one rejection per decision."""
    closed = {}
    for asset_class in sorted(classes):
        clock = broker.clock(as_of, asset_class)
        if not clock.is_open:
            opens = f", next open {clock.next_open.isoformat()}" if clock.next_open else ""
            closed[asset_class] = (f"{asset_class} market closed at {as_of.isoformat()}{opens}: no {asset_class} "
                                   f"entries or exits this cycle")
    return closed


def _stale_notes(asset_class: str, behind: Mapping[str, pd.Timestamp | None], as_of: datetime,
                 spans: Mapping[str, tuple[pd.Timestamp, pd.Timestamp]]) -> list[str]:
    """Why symbols got no entry this cycle: their bars stop before the one it decides on, or
    (none loaded; ``spans``: their stored first and last bars, ``lab.bars.stored_spans``) they
    start after it, which no ingest changes, or none are stored."""
    if not behind:
        return []
    due = last_bar_at(asset_class, as_of).date()
    by_last: dict[tuple[str, str], list[str]] = {}
    for symbol, last in behind.items():
        if last is not None:
            key = (f"latest bar {last.date()}", "ingest first (`lab ingest`)")
        elif symbol not in spans:
            key = ("no bars stored", "ingest first (`lab ingest`)")
        elif (first := spans[symbol][0]).date() > due:
            key = (f"stored bars start at {first.date()}", "nothing to decide on before then")
        else:
            key = (f"latest stored bar {spans[symbol][1].date()}", "ingest first (`lab ingest`)")
        by_last.setdefault(key, []).append(symbol)
    return [f"no entries in {', '.join(symbols)} ({what}; a cycle at {as_of.isoformat()} decides on the "
            f"{asset_class} bar of {due}): {hint}" for (what, hint), symbols in by_last.items()]


def _stored_result(ctx: LabContext, portfolio: str, as_of: datetime) -> CycleResult | None:
    """The result of the cycle at ``as_of`` when it completed already (a re-run is a no-op)."""
    with session_scope(ctx.engine) as session:
        row = session.scalar(select(db.TradingCycle).where(db.TradingCycle.portfolio == portfolio,
                                                          db.TradingCycle.as_of == as_of))
        if row is None or row.status != "completed":
            return None
        summary = {**(row.summary or {}), "as_of": as_of.isoformat(), "already_completed": True,
                   "completed_at": row.finished_at.isoformat()}
    return CycleResult.from_summary(summary)


def _claim(ctx: LabContext, portfolio: str, as_of: datetime, *, present: datetime | None) -> None:
    """Start (or resume) the cycle row. A portfolio's cycles run forward in time: one before
    its latest would decide on older prices than its books and orders already hold, and one
    after an unfinished cycle would leave that one never resumed. ``present``: a real broker's
    clock, near which alone its cycles run (``_at_present``)."""
    with session_scope(ctx.engine, write_lock=True) as session:
        row = session.scalar(select(db.TradingCycle).where(db.TradingCycle.portfolio == portfolio,
                                                          db.TradingCycle.as_of == as_of))
        later = session.scalar(select(func.max(db.TradingCycle.as_of)).where(
            db.TradingCycle.portfolio == portfolio, db.TradingCycle.as_of > as_of))
        if later is not None:
            raise TradingError(f"portfolio {portfolio!r} already ran a cycle at {later.isoformat()}: cycles run "
                               f"forward in time, so one at {as_of.isoformat()} cannot run on its books (replay the "
                               f"past with `lab backtest`, or trade it in another portfolio)")
        if row is None:
            _after_unfinished(session, portfolio, as_of, present)
            session.add(db.TradingCycle(portfolio=portfolio, as_of=as_of, status="started", stage="claimed"))


def _after_unfinished(session, portfolio: str, as_of: datetime, present: datetime | None) -> None:
    """Refuse a new cycle while an earlier one is unfinished: re-running that one resumes it,
    and a later cycle first would leave it refused for good (cycles run forward). One that can
    never resume, a real broker's away from its present, is marked abandoned instead."""
    unfinished = session.scalars(select(db.TradingCycle).where(
        db.TradingCycle.portfolio == portfolio, db.TradingCycle.as_of < as_of,
        db.TradingCycle.status == "started").order_by(db.TradingCycle.as_of)).all()
    for earlier in unfinished:
        if present is not None and abs(present - earlier.as_of) > _PRESENT:
            earlier.status, earlier.finished_at = "abandoned", utcnow()
            continue
        when = earlier.as_of.isoformat()
        raise TradingError(f"portfolio {portfolio!r} has an unfinished cycle at {when} (it failed or was "
                           f"stopped mid-way): re-run it (it resumes) before the cycle at {as_of.isoformat()}, "
                           f"e.g. `lab trade cycle --as-of {when} --portfolio {portfolio}`")


def _complete(ctx: LabContext, portfolio: str, as_of: datetime, result: CycleResult) -> None:
    with session_scope(ctx.engine, write_lock=True) as session:
        row = session.scalar(select(db.TradingCycle).where(db.TradingCycle.portfolio == portfolio,
                                                          db.TradingCycle.as_of == as_of))
        row.status, row.stage, row.finished_at, row.summary = "completed", "snapshot", utcnow(), result.summary()


def _market(engine: Engine, config: TradingConfig, as_of: datetime, manager: PortfolioManager,
            open_orders: list[Order]) -> MarketSnapshot:
    """What a decision at ``as_of`` sees, with the bars of every symbol the books hold or have
    open orders in, from the oldest open order on (the paper account replays them)."""
    held = {p.symbol for p in manager.open_positions()} | {o.symbol for o in open_orders}
    since = min((o.created_at for o in open_orders), default=None)
    return load_market(engine, config, as_of, extra_symbols=held, since=since)


def paper_account(engine: Engine, config: TradingConfig, manager: PortfolioManager,
                  open_orders: list[Order]) -> PaperTradingExecutor:
    """The paper account of ``manager``'s portfolio as its latest cycle leaves it, for work
    between cycles (the kill switch cancels its orders here). A paper account has no present
    of its own: its time moves with its cycles, so it sees the bars up to the latest cycle's
    (what that cycle filled, or, unfinished, fills on resuming) and none after."""
    with session_scope(engine) as session:
        latest = session.scalar(select(func.max(db.TradingCycle.as_of)).where(
            db.TradingCycle.portfolio == manager.portfolio))
    times = [o.created_at for o in open_orders] + ([latest] if latest is not None else [])
    if not times:
        raise TradingError(f"portfolio {manager.portfolio!r} has no paper account yet: no cycle ran on it")
    return _paper_broker(config, manager, open_orders, _market(engine, config, max(times), manager, open_orders))


def _paper_broker(config, manager: PortfolioManager, open_orders: list[Order],
                  market: MarketSnapshot) -> PaperTradingExecutor:
    """The paper account as the books left it, with every bar since its open orders replayed.
    An order recorded but never submitted (a crash between the two) is not the account's: the
    step's sync submits it, once it passes the pre-trade checks."""
    submitted = [o for o in open_orders if o.broker_order_id is not None]
    executor = PaperTradingExecutor.from_config(config, cash=manager.cash, positions=manager.open_positions(),
                                                orders=submitted, last_prices=market.prices())
    for symbol in sorted({o.symbol for o in submitted}):
        earliest = min(o.created_at for o in submitted if o.symbol == symbol)
        for ts, bar in market.bars_after(symbol, earliest).iterrows():
            executor.on_bar(symbol, Bar(ts.to_pydatetime(), *(float(bar[c]) for c in
                                                              ("open", "high", "low", "close", "volume"))))
    return executor


def _default_checks(ctx: LabContext, portfolio: str, as_of: datetime,
                    prices: Mapping[str, float]) -> list[PreTradeCheck]:
    """The kill switch, then pre-trade validation (limits, allow-list, price band)."""
    from lab.trading.killswitch import is_killed
    from lab.trading.pretrade import notional_today, validate_order

    def kill_switch(order: Order) -> str | None:
        return "kill switch is on" if is_killed(ctx.engine, portfolio) else None

    def validation(order: Order) -> str | None:
        return validate_order(order, last_price=prices.get(order.symbol, float("nan")), config=ctx.config,
                              notional_today=notional_today(ctx.engine, portfolio, as_of, prices))

    return [kill_switch, validation]


def _store_signals(ctx: LabContext, portfolio: str, as_of: datetime, signals: pd.DataFrame) -> dict[tuple, int]:
    """Insert signals not stored yet; ids by (strategy, symbol, side)."""
    ids: dict[tuple, int] = {}
    with session_scope(ctx.engine, write_lock=True) as session:
        stored = {(r.strategy, r.symbol, r.side): r for r in session.scalars(select(db.Signal).where(
            db.Signal.portfolio == portfolio, db.Signal.as_of == as_of))}
        for s in signals.itertuples(index=False):
            key = (s.strategy, s.symbol, s.side)
            row = stored.get(key)
            if row is None:
                row = db.Signal(portfolio=portfolio, as_of=as_of, strategy=s.strategy, symbol=s.symbol,
                                side=s.side, confidence=float(s.confidence), entry=float(s.entry),
                                stop_loss=float(s.stop_loss), take_profit=float(s.take_profit), ev=float(s.ev),
                                rr=float(s.rr), model_version=int(s.model_version), status="new",
                                details={"hedge_ratio": float(s.hedge_ratio)} if math.isfinite(s.hedge_ratio) else None)
                session.add(row)
                session.flush()
            ids[key] = row.id
    return ids


class _SqlJournal(SqlBookkeeper):
    """The step's journal in SQL: the orders and fills (``store.SqlBookkeeper``), signal
    outcomes on their rows, the halt in ``trading_controls``; each stage goes to the hook."""

    def __init__(self, ctx: LabContext, portfolio: str, as_of: datetime, manager: PortfolioManager,
                 broker: str, hook: Callable[[str], None]):
        super().__init__(ctx.engine, manager, broker)
        self.ctx, self.portfolio, self.as_of = ctx, portfolio, as_of
        self.stage = hook
        self.notes: list[str] = []
        self.asset_types = {s: name for name, u in ctx.config.universe.asset_classes().items()
                            for s in (*u.symbols, u.benchmark)}

    def outcome(self, candidate: Candidate, status: str, reason: str | None) -> None:
        with session_scope(self.ctx.engine) as session:
            row = session.get(db.Signal, candidate.ref)
            row.status, row.reason = status, reason
        if reason is not None:  # refused, or ordered smaller than asked
            what = "not ordered:" if status == "skipped" else "ordered, limited by"
            self.notes.append(f"{candidate.symbol} {candidate.strategy} signal {what} {reason}")

    def halted(self, reason: str) -> None:
        set_halt(self.ctx.engine, self.portfolio, True, reason)
