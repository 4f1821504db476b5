"""The lab's books and risk rules: cash, positions, P&L, sizing, entry limits and exits.

The manager holds state only as values it is given (no database, no clock), so the live
cycle and a backtest drive the same rules; the cycle loads and stores the books around it.
Every entry passes ``size_entry``, which applies every configured limit at once: max open
positions (in total and per strategy), max share of equity per position, the cash reserve,
the sector cap, long-only unless shorts are configured, and the drawdown halt.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import msgspec

from lab.config import TradingConfig
from lab.strategy import get_strategy
from lab.trading.costs import CostModel, round_qty, units_within
from lab.trading.model import Fill, Intent, Order, Position, Side, cash_delta

__all__ = ["PortfolioManager", "EntryDecision", "ExitDecision", "strategy_levels"]


class EntryDecision(msgspec.Struct, frozen=True, gc=False):
    qty: float
    reason: str | None = None  # why the entry is refused or smaller than asked
    #: the most money the entry may spend under the risk rules' caps (a cash-sized order's
    #: ceiling: at a lower fill price the same cash would buy past a cap)
    budget: float = math.inf


class ExitDecision(msgspec.Struct, frozen=True, gc=False):
    position: Position
    intent: Intent
    reason: str


def strategy_levels(config: TradingConfig, strategy: str) -> tuple[float, float, int | None]:
    """(stop-loss fraction, take-profit fraction, max holding days): config over declaration."""
    declared = get_strategy(strategy)
    override = config.strategies.get(strategy)
    stop = override.stop_loss if override and override.stop_loss is not None else declared.stop_loss
    take = override.take_profit if override and override.take_profit is not None else declared.take_profit
    days = override.max_holding_days if override and override.max_holding_days else declared.holding_days[1]
    return stop, take, days


class PortfolioManager:
    def __init__(
        self,
        config: TradingConfig,
        *,
        portfolio: str = "paper",
        cash: float | None = None,
        initial_cash: float | None = None,
        positions: Iterable[Position] = (),
        peak_equity: float | None = None,
        halted: bool = False,
        halt_reason: str | None = None,
        sectors: Mapping[str, str] | None = None,
    ):
        self.config = config
        self.portfolio = portfolio
        self.initial_cash = config.execution.initial_cash if initial_cash is None else initial_cash
        self.cash = self.initial_cash if cash is None else cash
        self.positions: dict[tuple[str, str], Position] = {(p.strategy, p.symbol): p for p in positions}
        self.peak_equity = peak_equity if peak_equity is not None else self.equity
        self.halted = halted
        self.halt_reason = halt_reason
        self.sectors = dict(sectors or {})
        self.costs = CostModel.from_config(config.execution)

    # --- books -----------------------------------------------------------------------------

    def apply_fill(self, fill: Fill, *, asset_type: str, order: Order | None = None) -> Position:
        """Book a fill: cash and the (strategy, symbol) position; an entry fill carries the
        order's protective levels onto the position."""
        key = (fill.strategy, fill.symbol)
        position = self.positions.get(key)
        if position is None:
            position = self.positions[key] = Position(
                portfolio=self.portfolio, strategy=fill.strategy, symbol=fill.symbol,
                asset_type=asset_type, sector=self.sectors.get(fill.symbol))
        position.apply(fill)
        self.cash += cash_delta(fill)
        if order is not None and order.intent is Intent.ENTRY and position.is_open:
            position.stop_loss, position.take_profit = order.stop_loss, order.take_profit
            position.pair = order.pair
        return position

    def mark(self, prices: Mapping[str, float]) -> None:
        for position in self.positions.values():
            price = prices.get(position.symbol)
            if price is not None and math.isfinite(price):
                position.last_price = price

    def open_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if p.is_open]

    @property
    def positions_value(self) -> float:
        return math.fsum([p.market_value for p in self.positions.values()])

    @property
    def equity(self) -> float:
        return self.cash + self.positions_value

    @property
    def realized_pnl(self) -> float:
        return math.fsum(p.realized_pnl for p in self.positions.values())

    @property
    def unrealized_pnl(self) -> float:
        return math.fsum(p.unrealized_pnl for p in self.positions.values())

    @property
    def drawdown(self) -> float:
        return self._drawdown(self.equity)

    def _drawdown(self, equity: float) -> float:
        return 0.0 if self.peak_equity <= 0 else max(0.0, 1 - equity / self.peak_equity)

    def by_strategy(self) -> dict[str, dict[str, float]]:
        """Realized and unrealized P&L, market value and open positions per strategy."""
        out: dict[str, dict[str, float]] = {}
        for p in self.positions.values():
            row = out.setdefault(p.strategy, {"realized_pnl": 0.0, "unrealized_pnl": 0.0,
                                              "market_value": 0.0, "open_positions": 0})
            row["realized_pnl"] += p.realized_pnl
            row["unrealized_pnl"] += p.unrealized_pnl
            row["market_value"] += p.market_value
            row["open_positions"] += int(p.is_open)
        return out

    def update_drawdown(self) -> bool:
        """Track the equity peak; halt new entries once drawdown reaches the configured limit.
        Returns True when this call started the halt. The halt stays until ``lift_halt``."""
        equity = self.equity
        self.peak_equity = max(self.peak_equity, equity)
        limit = self.config.risk.max_drawdown_halt
        if not self.halted and (drawdown := self._drawdown(equity)) >= limit:
            self.halted = True
            self.halt_reason = (f"drawdown {drawdown:.1%} from peak {self.peak_equity:,.2f} "
                                f"reached the {limit:.0%} limit")
            return True
        return False

    def lift_halt(self) -> None:
        """Deliberately resume entries; the peak restarts at today's equity."""
        self.halted, self.halt_reason = False, None
        self.peak_equity = self.equity

    # --- sizing and limits -----------------------------------------------------------------

    def target_qty(self, *, entry: float, stop_loss: float | None, confidence: float, odds: float | None,
                   asset_type: str) -> float:
        """Quantity by the configured sizing method, before the risk limits. Kelly bets on
        ``confidence`` at ``odds``, the signal's expected win per unit of expected loss as its
        model's payoff measured them (the take-profit/stop-loss ratio is not what the model's
        probability wins and loses); none without odds."""
        sizing, equity = self.config.sizing, self.equity
        if sizing.method == "all_in":
            return self.round_qty((self.entry_notional() or 0.0) / self.costs.unit_cost(entry, asset_type), asset_type)
        if sizing.method == "fixed":
            notional = sizing.fixed_amount
        elif sizing.method == "percent":
            notional = equity * sizing.percent_of_equity
        elif sizing.method == "risk":
            per_unit = abs(entry - stop_loss) if stop_loss is not None else 0.0
            return self.round_qty(equity * sizing.risk_per_trade / per_unit, asset_type) if per_unit > 0 else 0.0
        else:  # fractional Kelly on the signal's probability (confidence) and odds (payoff)
            kelly = confidence - (1 - confidence) / odds if odds else 0.0
            notional = equity * min(max(kelly, 0.0) * sizing.kelly_fraction, sizing.kelly_cap)
        return self.round_qty(notional / entry, asset_type)

    def entry_notional(self) -> float | None:
        """The cash an ``all_in`` entry may spend (its order is sized in cash and resolved at
        the fill price); None for the quantity-sized methods."""
        sizing = self.config.sizing
        if sizing.method != "all_in":
            return None
        return max(min(sizing.all_in_fraction * self.equity, self.cash), 0.0)

    def size_entry(self, *, strategy: str, symbol: str, side: Side, entry: float, qty: float,
                   asset_type: str, pending: Iterable[Order] = (), pair: str | None = None,
                   prices: Mapping[str, float] | None = None) -> EntryDecision:
        """The largest quantity up to ``qty`` that breaks no risk rule (0 with the reason).
        A leg of ``pair`` counts with its pair as one position of its strategy. The pending
        entries count against the cash and their sector's cap at what they may cost
        (``_commitment``: a market order at its symbol's price in ``prices``, else at ``entry``);
        the cash owed back on short positions is not free to spend."""
        risk, equity = self.config.risk, self.equity
        pending = [o for o in pending if o.status.is_open and o.intent is Intent.ENTRY]
        if self.halted:
            return EntryDecision(0.0, f"entries halted: {self.halt_reason}")
        if side is Side.SELL and not risk.allow_shorts:
            return EntryDecision(0.0, "short entries disabled (risk.allow_shorts is false)")
        if not (math.isfinite(entry) and entry > 0 and math.isfinite(qty) and qty > 0):
            return EntryDecision(0.0, f"nothing to buy: qty {qty!r} at {entry!r}")
        positions = self.open_positions()
        held = {(p.strategy, p.symbol) for p in positions}
        if (strategy, symbol) in held or any(o.strategy == strategy and o.symbol == symbol for o in pending):
            return EntryDecision(0.0, "already held or being entered")  # the signal names strategy and symbol
        open_count = len(held | {(o.strategy, o.symbol) for o in pending})  # a part-filled entry is held already
        if open_count >= risk.max_positions:
            return EntryDecision(0.0, f"max positions reached ({risk.max_positions})")
        strategy_cap = self.config.strategies[strategy].max_positions if strategy in self.config.strategies else None
        if strategy_cap is not None:
            mine = {p.pair or p.symbol for p in positions if p.strategy == strategy} \
                | {o.pair or o.symbol for o in pending if o.strategy == strategy}
            mine.discard(pair)
            if len(mine) >= strategy_cap:
                return EntryDecision(0.0, f"max positions for {strategy} reached ({strategy_cap})")
        cost_rate = self.costs.unit_cost(entry, asset_type)
        committed = [(o, self._commitment(o, entry if o.symbol == symbol else (prices or {}).get(o.symbol, entry)))
                     for o in pending]
        owed = math.fsum(-p.market_value for p in positions if p.qty < 0)  # buying the shorts back
        free_cash = self.cash - owed - math.fsum(cost for _, cost in committed)
        # (cap in money, the rule's name): a name is written out only for the rule that binds
        caps = [(equity * risk.max_position_pct, "max {risk.max_position_pct:.0%} of equity per position"),
                (free_cash - risk.cash_reserve_pct * equity, "{risk.cash_reserve_pct:.0%} cash reserve")]
        sector = self.sectors.get(symbol)
        if sector is not None:
            used = math.fsum([abs(p.market_value) for p in positions if p.sector == sector]
                             + [cost for o, cost in committed if self.sectors.get(o.symbol) == sector])
            caps.append((equity * risk.max_sector_pct - used, "sector {sector} cap {risk.max_sector_pct:.0%}"))
        allowed, rule = qty, None
        for money, name in caps:
            cap = units_within(money, cost_rate, asset_type)
            if cap < allowed:
                allowed, rule = cap, name
        reason = None if rule is None else rule.format(risk=risk, sector=sector)
        if allowed <= 0:
            return EntryDecision(0.0, f"no room: {reason}")
        return EntryDecision(allowed, reason, budget=min(money for money, _ in caps))

    def _commitment(self, order: Order, price: float) -> float:
        """What a pending entry may still cost: ``Order.open_notional`` (a market order at
        ``price``) with fees and slippage; a cash-sized order's notional has them already."""
        value = order.open_notional(price)
        return value if order.cash_sized else value * self.costs.unit_cost(1.0, order.asset_type)

    def exits(self, as_of: datetime, pending: Iterable[Order] = ()) -> list[ExitDecision]:
        """Positions to close now: stop-loss, take-profit, or held past the strategy's days.
        A pair's legs are judged together (``_pair_exits``)."""
        pending = [o for o in pending if o.status.is_open]
        exiting = {(o.strategy, o.symbol) for o in pending if o.intent is not Intent.ENTRY}
        entering = {(o.strategy, o.symbol) for o in pending if o.intent is Intent.ENTRY}
        decisions, pairs = [], {}
        for p in self.open_positions():
            if (p.strategy, p.symbol) in exiting:
                continue
            if p.pair is not None:
                pairs.setdefault((p.strategy, p.pair), []).append(p)
                continue
            if p.last_price is None:
                continue
            long = p.qty > 0
            _, _, days = strategy_levels(self.config, p.strategy)
            if p.stop_loss is not None and (p.last_price <= p.stop_loss if long else p.last_price >= p.stop_loss):
                decisions.append(ExitDecision(p, Intent.STOP_LOSS, f"price {p.last_price:g} hit stop {p.stop_loss:g}"))
            elif p.take_profit is not None and (p.last_price >= p.take_profit if long
                                                else p.last_price <= p.take_profit):
                decisions.append(ExitDecision(p, Intent.TAKE_PROFIT,
                                              f"price {p.last_price:g} hit target {p.take_profit:g}"))
            elif days is not None and p.opened_at is not None and as_of - p.opened_at >= timedelta(days=days):
                decisions.append(ExitDecision(p, Intent.TIME_EXIT, f"held {(as_of - p.opened_at).days} days "
                                              f"(max {days})"))
        for (strategy, pair), legs in pairs.items():
            decisions.extend(self._pair_exits(as_of, strategy, pair, legs, entering))
        return decisions

    def _pair_exits(self, as_of: datetime, strategy: str, pair: str, legs: list[Position],
                    entering: set[tuple[str, str]]) -> list[ExitDecision]:
        """Both legs close together: on the pair's P&L against its gross notional (the
        strategy's stop-loss and take-profit fractions) or its holding time. A leg whose
        partner is neither held nor being entered (a rejected or exited leg) is closed."""
        if len(legs) == 1:
            partner = next((s for s in pair.split("/") if s != legs[0].symbol), pair)
            if (strategy, partner) in entering:
                return []
            return [ExitDecision(legs[0], Intent.EXIT, f"pair {pair}: the {partner} leg is not held")]
        if any(p.last_price is None for p in legs):
            return []
        gross = math.fsum(abs(p.qty) * p.avg_price for p in legs)
        pnl = math.fsum(p.unrealized_pnl for p in legs) / gross if gross > 0 else 0.0
        stop, take, days = strategy_levels(self.config, strategy)
        opened = min((p.opened_at for p in legs if p.opened_at is not None), default=None)
        if pnl <= -stop:
            intent, reason = Intent.STOP_LOSS, f"pair {pair} P&L {pnl:.2%} of gross hit the stop -{stop:.0%}"
        elif pnl >= take:
            intent, reason = Intent.TAKE_PROFIT, f"pair {pair} P&L {pnl:.2%} of gross hit the target {take:.0%}"
        elif days is not None and opened is not None and as_of - opened >= timedelta(days=days):
            intent, reason = Intent.TIME_EXIT, f"pair {pair} held {(as_of - opened).days} days (max {days})"
        else:
            return []
        return [ExitDecision(p, intent, reason) for p in legs]

    round_qty = staticmethod(round_qty)
