"""One trading cycle: sync fills, mark prices, check the drawdown halt and exits, generate
signals, size entries under the risk rules, place orders, sync again, snapshot.

Idempotent per (portfolio, as_of): a completed cycle is not run again, and a crashed one
resumes. Every order's client id is derived from its decision, is stored before it is
submitted, and brokers deduplicate on it, so a re-run never places a second order. Fills
are booked one transaction each (see ``lab.trading.store``), so the books survive a kill
at any point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

import pandas as pd
from sqlalchemy import select

from lab.db import session_scope
from lab.db import models as db
from lab.db.types import utcnow
from lab.errors import TradingError
from lab.runtime import LabContext
from lab.trading.broker import BrokerInterface, OrderNotFound
from lab.trading.market import MarketSnapshot, load_market
from lab.trading.model import Intent, Order, OrderType, Side, client_order_id
from lab.trading.paper import Bar, PaperTradingExecutor
from lab.trading.portfolio import PortfolioManager
from lab.trading.predictions import PredictionSource
from lab.trading.signals import FeatureSource, TradeSignalEngine
from lab.trading.store import book_fill, load_books, load_open_orders, save_snapshot, set_halt, store_order

__all__ = ["CycleResult", "PreTradeCheck", "run_trading_cycle", "STAGES"]

#: named points of a cycle; ``hook(stage)`` is called at each (crash tests pause there)
STAGES = ("claimed", "synced", "exits_placed", "signals_stored", "order_stored", "fill_booked",
          "entries_placed", "snapshot")

#: a pre-trade check returns None to pass or the reason to reject the order
PreTradeCheck = Callable[[Order], str | None]


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

    def summary(self) -> dict:
        out = asdict(self)
        out["as_of"] = self.as_of.isoformat()
        return out


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
) -> CycleResult:
    """Run (or resume, or skip when completed) the cycle of ``portfolio`` at ``as_of``.

    ``broker`` defaults to the paper executor rebuilt from the books; ``features`` to
    ``lab.features`` on the stored bars; ``pre_trade_checks`` to the lab's validation and
    kill switch (``lab.trading.pretrade`` / ``lab.trading.killswitch``). ``asset_classes``
    limits new entries to those classes (stocks and crypto run on their own schedules);
    exits are always checked for every held position.
    """
    if as_of.tzinfo is None:
        raise TradingError(f"as_of must be timezone-aware, got {as_of.isoformat()}")
    hook = hook or (lambda stage: None)
    engine, config = ctx.engine, ctx.config
    done = _claim(ctx, portfolio, as_of)
    if done is not None:
        return done
    hook("claimed")
    manager = load_books(engine, config, portfolio)
    open_orders = load_open_orders(engine, portfolio)
    held = {p.symbol for p in manager.open_positions()} | {o.symbol for o in open_orders}
    since = min((o.created_at for o in open_orders), default=None)
    market = load_market(engine, config, as_of, extra_symbols=held, since=since)
    if broker is None:
        broker = _paper_broker(config, manager, open_orders, market)
    checks = (list(pre_trade_checks) if pre_trade_checks is not None
              else _default_checks(ctx, portfolio, as_of, market.prices()))
    run = _Run(ctx, as_of, manager, broker, checks, hook)

    run.sync(open_orders)
    hook("synced")
    prices = market.prices()
    manager.mark(prices)
    if manager.update_drawdown():
        set_halt(engine, portfolio, True, manager.halt_reason)
        run.notes.append(manager.halt_reason or "halted")
    run.place_exits()
    hook("exits_placed")
    if manager.halted:
        run.notes.append(f"no new entries: {manager.halt_reason}")
    else:
        engine_ = TradeSignalEngine(config, predictions, features or market, as_of=as_of, prices=prices)
        universe = {name: list(u.symbols) for name, u in config.universe.asset_classes().items()
                    if asset_classes is None or name in asset_classes}
        signals = engine_.generate(universe)
        run.notes.extend(engine_.skipped.values())
        signal_ids = _store_signals(ctx, portfolio, as_of, signals)
        hook("signals_stored")
        run.signals = len(signals)
        run.place_entries(signals, signal_ids)
    hook("entries_placed")
    run.sync(load_open_orders(engine, portfolio))
    manager.mark(prices)
    manager.update_drawdown()
    benchmark = next(iter(config.universe.asset_classes().values())).benchmark
    save_snapshot(engine, manager, as_of, benchmark_close=prices.get(benchmark))
    hook("snapshot")
    result = run.result()
    _complete(ctx, portfolio, as_of, result)
    return result


def _claim(ctx: LabContext, portfolio: str, as_of: datetime) -> CycleResult | None:
    """Start (or resume) the cycle row; the stored result when it already completed."""
    with session_scope(ctx.engine, write_lock=True) as session:
        row = session.scalar(select(db.TradingCycle).where(db.TradingCycle.portfolio == portfolio,
                                                          db.TradingCycle.as_of == as_of))
        if row is None:
            session.add(db.TradingCycle(portfolio=portfolio, as_of=as_of, status="started", stage="claimed"))
            return None
        if row.status != "completed":
            return None
        summary = dict(row.summary or {})
        summary.pop("as_of", None)
        summary["already_completed"] = True
        return CycleResult(as_of=as_of, **summary)


def _complete(ctx: LabContext, portfolio: str, as_of: datetime, result: CycleResult) -> None:
    with session_scope(ctx.engine, write_lock=True) as session:
        row = session.scalar(select(db.TradingCycle).where(db.TradingCycle.portfolio == portfolio,
                                                          db.TradingCycle.as_of == as_of))
        row.status, row.stage, row.finished_at, row.summary = "completed", "snapshot", utcnow(), result.summary()


def _paper_broker(config, manager: PortfolioManager, open_orders: list[Order],
                  market: MarketSnapshot) -> PaperTradingExecutor:
    """The paper account as the books left it, with every bar since its open orders replayed."""
    executor = PaperTradingExecutor.from_config(
        config, cash=manager.cash, positions=manager.open_positions(), orders=open_orders,
        last_prices=market.prices())
    for symbol in sorted({o.symbol for o in open_orders}):
        earliest = min(o.created_at for o in open_orders if o.symbol == symbol)
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
                              notional_today=notional_today(ctx.engine, portfolio, as_of))

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
                                rr=float(s.rr), model_version=int(s.model_version), status="new")
                session.add(row)
                session.flush()
            ids[key] = row.id
    return ids


class _Run:
    """The mutable state of one cycle: books, broker, counters."""

    def __init__(self, ctx: LabContext, as_of: datetime, manager: PortfolioManager,
                 broker: BrokerInterface, checks: list[PreTradeCheck], hook: Callable[[str], None]):
        self.ctx, self.as_of, self.manager, self.broker = ctx, as_of, manager, broker
        self.checks, self.hook = checks, hook
        self.fills = self.placed = self.rejected = self.exits = self.signals = 0
        self.notes: list[str] = []
        self.asset_types = {s: name for name, u in ctx.config.universe.asset_classes().items()
                            for s in (*u.symbols, u.benchmark)}

    def sync(self, orders: list[Order]) -> None:
        """Book every new fill of the given stored orders; submit any the broker never got."""
        for stored in orders:
            try:
                current = self.broker.get_order(stored.client_order_id)
            except OrderNotFound:
                current = self.broker.submit(stored)
            for fill in current.fills:
                if book_fill(self.ctx.engine, self.manager, current, fill):
                    self.fills += 1
                    self.hook("fill_booked")
            if not current.status.is_open:
                store_order(self.ctx.engine, current, broker=self.broker.name)

    def place_exits(self) -> None:
        pending = load_open_orders(self.ctx.engine, self.manager.portfolio)
        for decision in self.manager.exits(self.as_of, pending):
            p = decision.position
            order = self._order(p.strategy, p.symbol, Side.SELL if p.qty > 0 else Side.BUY, abs(p.qty),
                                decision.intent)
            if self._place(order, note=decision.reason):
                self.exits += 1

    def place_entries(self, signals: pd.DataFrame, signal_ids: Mapping[tuple, int]) -> None:
        for s in signals.itertuples(index=False):
            signal_id = signal_ids[(s.strategy, s.symbol, s.side)]
            if "/" in s.symbol:
                self._skip(signal_id, "pairs legs are not executed yet (needs both legs as one order)")
                continue
            asset_type = self.asset_types.get(s.symbol, "stocks")
            pending = load_open_orders(self.ctx.engine, self.manager.portfolio)
            coid = client_order_id(self.manager.portfolio, self.as_of, s.strategy, s.symbol, Intent.ENTRY)
            if any(o.client_order_id == coid for o in pending):
                continue  # placed before a crash; already counted
            wanted = self.manager.target_qty(entry=s.entry, stop_loss=s.stop_loss, confidence=s.confidence,
                                             rr=s.rr, asset_type=asset_type)
            decision = self.manager.size_entry(strategy=s.strategy, symbol=s.symbol, side=Side(s.side),
                                               entry=s.entry, qty=wanted, asset_type=asset_type, pending=pending)
            if decision.qty <= 0:
                self._skip(signal_id, decision.reason or "sized to zero")
                continue
            order = self._order(s.strategy, s.symbol, Side(s.side), decision.qty, Intent.ENTRY,
                                stop_loss=float(s.stop_loss), take_profit=float(s.take_profit))
            self._place(order, signal_id=signal_id)
            self._mark_signal(signal_id, "ordered", decision.reason)

    def _order(self, strategy: str, symbol: str, side: Side, qty: float, intent: Intent, **levels) -> Order:
        return Order(client_order_id=client_order_id(self.manager.portfolio, self.as_of, strategy, symbol, intent),
                     portfolio=self.manager.portfolio, strategy=strategy, symbol=symbol,
                     asset_type=self.asset_types.get(symbol, "stocks"), side=side, qty=qty,
                     order_type=OrderType.MARKET, intent=intent, created_at=self.as_of, **levels)

    def _place(self, order: Order, *, signal_id: int | None = None, note: str | None = None) -> bool:
        """Store, check, submit. False when this decision was already placed (a re-run)."""
        engine, broker = self.ctx.engine, self.broker.name
        refusal = next((r for check in self.checks if (r := check(order)) is not None), None)
        if refusal is not None:
            if store_order(engine, order.rejected(refusal), broker=broker, signal_id=signal_id):
                self.rejected += 1
            return False
        if not store_order(engine, order, broker=broker, signal_id=signal_id):
            return False
        self.hook("order_stored")
        answer = self.broker.submit(order)
        store_order(engine, answer, broker=broker)
        if answer.status.value == "rejected":
            self.rejected += 1
            self.notes.append(f"{order.symbol} {order.intent}: rejected: {answer.reason}")
        else:
            self.placed += 1
            if note:
                self.notes.append(f"{order.symbol} {order.intent}: {note}")
        return True

    def _skip(self, signal_id: int, reason: str) -> None:
        self._mark_signal(signal_id, "skipped", reason)

    def _mark_signal(self, signal_id: int, status: str, reason: str | None) -> None:
        with session_scope(self.ctx.engine) as session:
            row = session.get(db.Signal, signal_id)
            row.status, row.reason = status, reason

    def result(self) -> CycleResult:
        m = self.manager
        return CycleResult(portfolio=m.portfolio, as_of=self.as_of, already_completed=False, fills=self.fills,
                           orders_placed=self.placed, rejected=self.rejected, exits=self.exits,
                           signals=self.signals, cash=m.cash, equity=m.equity, halted=m.halted,
                           notes=self.notes)

