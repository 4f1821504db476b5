"""Feature rows for ``{symbols, as_of}`` requests, computed exactly as the trading engine does.

There is one feature-assembly path in the lab: ``lab.trading.market.load_market`` (bars up to
``as_of`` with each asset class's benchmark, fundamentals known at ``as_of``, pair legs) and
its ``MarketSnapshot.latest``. This module only decides which symbols to load, explains the
symbols that got no usable row, and picks the model's columns.

Rules (documented in the API): a date ``as_of`` means that day's bar, as a trading cycle's
date does (its midnight-UTC label; ``universe.calendars.last_bar_at``); a time reads only the
bars complete by then (a stock session's bar after its close); a naive datetime is UTC, and no
``as_of`` means now. One in the future (a date after today, a time more than
``lab.trading.calendar.SKEW`` ahead) is refused (422, ``invalid_request``): no bar exists
there, and the answer would be now's under a later name; so is one dated before
``EARLIEST_AS_OF``, which bars (nanosecond timestamps, from 1677) and the feature lookback
cannot reach. A symbol is refused (422, ``bad_symbols``) when it is not what the strategy's
features are computed on (a pair strategy's: two different symbols "AAA/BBB", else
``not_pairs``; any other's: one symbol, not a pair, else ``not_single``), when nothing is
stored for it (``unknown``), when it has no bar at or before ``as_of`` within the feature
lookback (``no_bars``), or when a feature the model uses is undefined (NaN) at ``as_of``, e.g.
in its warm-up window (``undefined``: symbol -> features).
Unlike explicit ``rows``, where ``null`` is the caller's choice, the service does not guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time

import numpy as np
from sqlalchemy import Engine, select

from lab.config import TradingConfig
from lab.db.models import PriceBar
from lab.errors import DataError
from lab.features import get_feature_set
from lab.trading.market import HISTORY_DAYS, load_market

__all__ = ["EARLIEST_AS_OF", "SymbolProblems", "before_earliest", "decision_time", "symbol_matrix"]

#: bars are pandas nanosecond timestamps (from 1677-09-21) and features read ``HISTORY_DAYS``
#: of bars before ``as_of``: an earlier ``as_of`` cannot be computed
EARLIEST_AS_OF = date(1700, 1, 1)


@dataclass(eq=False)
class SymbolProblems(ValueError):
    """Every symbol without a usable feature row, by reason."""

    as_of: datetime
    not_pairs: list[str] = field(default_factory=list)
    not_single: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    no_bars: list[str] = field(default_factory=list)
    undefined: dict[str, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.as_dict())

    def __str__(self) -> str:
        parts = []
        if self.not_pairs:
            parts.append(f"not a pair of two different symbols \"AAA/BBB\": {', '.join(map(repr, self.not_pairs))}")
        if self.not_single:
            parts.append(f"a pair, not one symbol (this strategy's features are per symbol): "
                         f"{', '.join(self.not_single)}")
        if self.unknown:
            parts.append(f"no stored bars for: {', '.join(self.unknown)}")
        if self.no_bars:
            parts.append(f"no bar at or before {self.as_of.isoformat()} (within {HISTORY_DAYS} days) for: "
                         f"{', '.join(self.no_bars)}")
        if self.undefined:
            parts.append("features undefined (NaN) at as_of for: " + "; ".join(
                f"{symbol} ({', '.join(names)})" for symbol, names in self.undefined.items()))
        return "; ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in (("not_pairs", self.not_pairs), ("not_single", self.not_single),
                                  ("unknown", self.unknown), ("no_bars", self.no_bars),
                                  ("undefined", self.undefined)) if v}


def before_earliest(as_of: datetime | date) -> bool:
    """Whether ``as_of`` is dated before ``EARLIEST_AS_OF`` (its own date: converting a time
    near year 1 to UTC can overflow)."""
    return (as_of.date() if isinstance(as_of, datetime) else as_of) < EARLIEST_AS_OF


def decision_time(as_of: datetime | date | None, now: datetime) -> datetime:
    """The tz-aware decision time a request's ``as_of`` stands for (see the module rules)."""
    if as_of is None:
        return now
    if not isinstance(as_of, datetime):
        return datetime.combine(as_of, time.min, tzinfo=UTC)
    return as_of.astimezone(UTC) if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)


def symbol_matrix(engine: Engine, config: TradingConfig, feature_set: str, symbols: Sequence[str],
                  as_of: datetime, feature_names: Sequence[str]) -> np.ndarray:
    """The model's input row per symbol (same order as ``symbols``); SymbolProblems otherwise."""
    problems = SymbolProblems(as_of)
    kind = get_feature_set(feature_set).kind
    unique = _well_formed(list(dict.fromkeys(symbols)), kind, problems)
    legs = {leg for symbol in unique for leg in symbol.split("/")}  # a pair "AAA/BBB" needs both legs
    market = load_market(engine, config, as_of, extra_symbols=legs, fundamentals=kind == "fundamental")
    latest = market.latest(feature_set, unique, as_of)
    absent = [s for s in unique if s not in latest.index]
    if absent:
        stored = _stored(engine, {leg for symbol in absent for leg in symbol.split("/")})
        for symbol in absent:
            known = all(leg in stored for leg in symbol.split("/"))
            (problems.no_bars if known else problems.unknown).append(symbol)
    if len(latest):
        lacking = [name for name in feature_names if name not in latest.columns]
        if lacking:
            raise DataError(f"feature set {feature_set} does not compute {', '.join(lacking)}, "
                            f"which the model uses")
        latest = latest[list(feature_names)].astype(np.float64)
        for symbol, row in latest.iterrows():
            undefined = [name for name, value in row.items() if np.isnan(value)]
            if undefined:
                problems.undefined[str(symbol)] = undefined
    if problems:
        raise problems
    return latest.loc[list(symbols)].to_numpy(dtype=np.float64)


def _well_formed(symbols: list[str], kind: str, problems: SymbolProblems) -> list[str]:
    """The symbols shaped as the feature set's kind needs; the others go into ``problems``."""
    well_formed = []
    for symbol in symbols:
        legs = symbol.split("/")
        if kind == "pair" and not (len(legs) == 2 and all(legs) and legs[0] != legs[1]):
            problems.not_pairs.append(symbol)
        elif kind != "pair" and len(legs) > 1:
            problems.not_single.append(symbol)
        else:
            well_formed.append(symbol)
    return well_formed


def _stored(engine: Engine, symbols: set[str]) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(select(PriceBar.symbol).where(PriceBar.symbol.in_(symbols)).distinct()))
