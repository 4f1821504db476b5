"""Why a backtest traded as often as it did. Per strategy: how many symbol-bars the signal
engine screened, how many fired the entry rule and passed the confidence and risk/reward
bars, how many of those signals the books ordered or refused (with the refusals' reasons),
and how many entry orders filled. A run with few or no trades reads here what stopped them."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from lab.trading.signals import Screening
from lab.trading.step import Candidate

__all__ = ["FUNNEL_STAGES", "SignalFunnel", "funnel_table", "refusals"]

#: a strategy's figures in order, with what each counts; the first four only where the
#: signal engine screened (a run on given entry flags has none)
FUNNEL_STAGES = {
    "screened": "symbol-bars (pair-bars) with features",
    "rule": "of them, the entry rule fired",
    "confident": "of those, past min confidence and risk/reward, with a positive expected value",
    "best": "the highest model confidence of a rule hit",
    "signals": "handed to the books (within max_positions)",
    "ordered": "signals the books ordered",
    "refused": "signals the books refused (why: below)",
    "filled": "entry orders filled (a pair: two legs)",
}

#: refusal reasons kept per strategy, the most frequent first
_REASONS = 5
#: an amount in a reason (money, to the cent), different refusal by refusal: counted as one reason
_AMOUNT = re.compile(r"\d[\d,]*\.\d+")


class SignalFunnel:
    """Counts the signals a run's clock hands the books and, as the journals' ``outcome``,
    what became of each."""

    def __init__(self) -> None:
        self._signals: Counter[str] = Counter()
        self._ordered: Counter[str] = Counter()
        self._refused: dict[str, Counter[str]] = {}

    def offered(self, candidate: Candidate) -> None:
        self._signals[candidate.strategy] += 1

    def outcome(self, candidate: Candidate, status: str, reason: str | None) -> None:
        if status == "ordered":
            self._ordered[candidate.strategy] += 1
        else:
            self._refused.setdefault(candidate.strategy, Counter())[_AMOUNT.sub("…", reason or status)] += 1

    def summary(self, strategies: Sequence[str], screening: Mapping[str, Screening],
                orders: pd.DataFrame) -> dict[str, dict[str, Any]]:
        """Per strategy: the ``FUNNEL_STAGES`` figures and ``reasons`` (the most frequent refusals)."""
        entries = orders[(orders["intent"] == "entry") & (orders["filled_qty"] > 0)]
        filled = entries["strategy"].value_counts()
        out = {}
        for name in strategies:
            screened = screening.get(name)
            refused = self._refused.get(name, Counter())
            out[name] = {
                **({"screened": screened.screened, "rule": screened.rule, "confident": screened.confident,
                    "best": screened.best} if screened is not None else {}),
                "signals": self._signals[name], "ordered": self._ordered[name], "refused": refused.total(),
                "filled": int(filled.get(name, 0)), "reasons": dict(refused.most_common(_REASONS)),
            }
        return out


def funnel_table(funnel: Mapping[str, Mapping[str, Any]]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The funnel as text cells, read top down: one row per ``FUNNEL_STAGES`` stage, one
    column per strategy ("-" where the run screened nothing, its entries being given), then
    what the stage counts; for the CLI and the report alike."""
    def cell(f: Mapping[str, Any], stage: str) -> str:
        value = f.get(stage)
        return "-" if value is None else f"{value:.2f}" if stage == "best" else str(value)

    return ("", *funnel, "what it counts"), [(stage, *(cell(f, stage) for f in funnel.values()), meaning)
                                             for stage, meaning in FUNNEL_STAGES.items()]


def refusals(funnel: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per strategy and reason the books refused its signals for, with how often."""
    return [f"{name}: {count} refused: {reason}" for name, f in funnel.items() for reason, count in f["reasons"].items()]
