"""The one cost model of a trade: fees per asset class and market-order slippage.

The portfolio manager sizes entries with it and the paper executor charges fills with it,
so an entry sized as affordable is affordable at the fill (no second, stricter estimate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from lab.config import ExecutionConfig

__all__ = ["CostModel", "SlippageModel", "round_qty", "units_within"]


def round_qty(qty: float, asset_type: str) -> float:
    """Whole shares for stocks; crypto to 1e-6 units. Rounds down (past float noise)."""
    if not math.isfinite(qty) or qty <= 0:
        return 0.0
    step = _step(asset_type)
    return math.floor(qty / step + 1e-9) * step


def units_within(money: float, unit_cost: float, asset_type: str) -> float:
    """The most units (``round_qty`` steps) whose cost stays within ``money``: the rounding's
    allowance for float noise may take ``money / unit_cost`` a hair past what the money pays
    (10,000 at 1.0000000000000002 a share is not 10,000 shares), and a broker refuses that."""
    qty = round_qty(max(money / unit_cost, 0.0), asset_type)
    return qty - _step(asset_type) if qty > 0 and qty * unit_cost > money else qty


def _step(asset_type: str) -> float:
    return 1.0 if asset_type == "stocks" else 1e-6


@dataclass(frozen=True)
class SlippageModel:
    """Adverse price move of a market fill: ``base_bps`` plus ``impact_bps`` per 100% of the
    bar's volume taken, capped at ``max_bps`` (0.1-0.5% is the usual range for daily bars)."""

    base_bps: float = 10.0
    impact_bps: float = 0.0
    max_bps: float = 50.0

    def fraction(self, qty: float, volume: float) -> float:
        share = qty / volume if volume > 0 else 0.0
        return min(self.base_bps + self.impact_bps * share, self.max_bps) / 10_000

    @cached_property
    def worst(self) -> float:
        """The largest fraction any fill can pay (asked for every order sized or checked)."""
        return (self.max_bps if self.impact_bps > 0 else min(self.base_bps, self.max_bps)) / 10_000


@dataclass(frozen=True)
class CostModel:
    fee_bps: Mapping[str, float] = field(default_factory=dict)
    slippage: SlippageModel = SlippageModel()

    @classmethod
    def from_config(cls, execution: ExecutionConfig) -> CostModel:
        """The configured fees and a flat ``slippage_bps`` (exactly that, no floor or cap)."""
        bps = execution.slippage_bps
        return cls(dict(execution.fee_bps), SlippageModel(base_bps=bps, max_bps=bps))

    def fee_rate(self, asset_type: str) -> float:
        return self.fee_bps.get(asset_type, 0.0) / 10_000

    def fee(self, qty: float, price: float, asset_type: str) -> float:
        return qty * price * self.fee_rate(asset_type)

    def unit_cost(self, price: float, asset_type: str, *, slipped: bool = True) -> float:
        """The most cash one unit bought at ``price`` can take: worst-case slippage (market and
        stop orders), then the fee on the slipped price."""
        slip = self.slippage.worst if slipped else 0.0
        return price * (1 + slip) * (1 + self.fee_rate(asset_type))

    def affordable(self, cash: float, fill_price: float, asset_type: str) -> float:
        """Units ``cash`` buys at a known fill price (slippage included), fee paid; whole
        shares for stocks."""
        units = cash / (fill_price * (1 + self.fee_rate(asset_type)))
        if not math.isfinite(units) or units <= 0:
            return 0.0
        return float(math.floor(units)) if asset_type == "stocks" else units * (1 - 1e-9)
