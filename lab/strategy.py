"""What a strategy declares, and how the lab finds the declarations in ``strategies/``.

A strategy is a small class of class attributes: the feature set its model reads, the label
it learns, the XGBoost search space, its rule parameters (each with low/high/default, so
tuning and config validation read them from one place), its exits and holding period, and
vectorized ``entry_rule`` (and, optionally, ``exit_rule``) hooks. The engine does the rest.
Adding a strategy means adding a module to ``strategies/``; nothing else changes.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import pandas as pd

__all__ = ["Param", "Label", "Strategy", "available_strategies", "get_strategy"]


@dataclass(frozen=True, kw_only=True)
class Param:
    """A typed parameter with its search range next to it."""

    default: float | int
    low: float | int
    high: float | int
    log: bool = False
    #: the only values allowed inside the range (e.g. the lookbacks a feature set has columns for)
    choices: tuple[float | int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.low <= self.default <= self.high:
            raise ValueError(f"default {self.default} outside [{self.low}, {self.high}]")
        if self.choices is not None and self.default not in self.choices:
            raise ValueError(f"default {self.default} not one of {self.choices}")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.default, self.low, self.high))

    def check(self, value: Any) -> str | None:
        """None when ``value`` is acceptable, else what is wrong with it."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {value!r}"
        if self.is_int and not float(value).is_integer():
            return f"expected an integer, got {value!r}"
        if not self.low <= value <= self.high:
            return f"{value!r} is outside [{self.low}, {self.high}]"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {', '.join(map(str, self.choices))}"
        return None


@dataclass(frozen=True, kw_only=True)
class Label:
    """An explicit forward-looking target: ``kind`` over the next ``horizon`` bars."""

    kind: str  # direction | magnitude | volatility | triple_barrier
    horizon: int = 5
    threshold: float = 0.05  # volatility: the move size; triple_barrier: take-profit
    stop: float = 0.05  # triple_barrier: stop-loss

    @property
    def is_classification(self) -> bool:
        return self.kind != "magnitude"


class Strategy:
    """Base of every strategy declaration (subclass it in ``strategies/<name>.py``)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    asset_classes: ClassVar[tuple[str, ...]] = ("stocks",)
    feature_set: ClassVar[str]
    label: ClassVar[Label]
    holding_days: ClassVar[tuple[int, int]] = (5, 20)
    stop_loss: ClassVar[float] = 0.07
    take_profit: ClassVar[float] = 0.15
    min_confidence: ClassVar[float] = 0.6
    side: ClassVar[str] = "buy"
    #: every trade takes a short position (a pair's other leg): without ``risk.allow_shorts``
    #: it could not trade at all
    needs_shorts: ClassVar[bool] = False
    #: rule parameters used by ``entry_rule`` (overridable in config/trading.json)
    params: ClassVar[dict[str, Param]] = {}
    #: XGBoost hyper-parameters tuned by Ray Tune + Optuna
    search_space: ClassVar[dict[str, Param]] = {
        "max_depth": Param(default=3, low=2, high=6),
        "learning_rate": Param(default=0.05, low=0.01, high=0.3, log=True),
        "n_estimators": Param(default=200, low=50, high=400),
        "subsample": Param(default=0.8, low=0.5, high=1.0),
        "colsample_bytree": Param(default=0.8, low=0.5, high=1.0),
        "min_child_weight": Param(default=5.0, low=1.0, high=20.0, log=True),
    }

    def __init__(self, **overrides: Any):
        problems = self.check_params(overrides)
        if problems:
            raise ValueError(f"strategy {self.name!r}: " + "; ".join(problems))
        self.values: dict[str, Any] = {k: p.default for k, p in self.params.items()} | overrides

    @classmethod
    def check_params(cls, values: dict[str, Any]) -> list[str]:
        """One line per bad parameter (unknown names get a did-you-mean hint)."""
        problems = []
        for key, value in values.items():
            declared = cls.params.get(key)
            if declared is None:
                hint = difflib.get_close_matches(key, list(cls.params), n=1)
                problems.append(f"{key}: unknown parameter" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            elif (reason := declared.check(value)) is not None:
                problems.append(f"{key}: {reason}")
        return problems

    def entry_rule(self, latest: pd.DataFrame) -> pd.Series:
        """Rule-based pre-filter on the latest feature row per symbol (True = candidate).

        ``latest`` is indexed by symbol and holds the strategy's feature set. The ML
        confidence is applied by the signal engine afterwards.
        """
        return pd.Series(True, index=latest.index)

    def sides(self, latest: pd.DataFrame) -> pd.Series:
        """The side of each candidate ("buy" or "sell"); the declared ``side`` unless the
        strategy trades both ways (pairs: sell the spread when it is rich, buy it when cheap)."""
        return pd.Series(self.side, index=latest.index, dtype=object)

    def exit_rule(self, latest: pd.DataFrame) -> pd.Series:
        """Rule-based exit on the latest feature row per held symbol (True = close it now).

        Checked every cycle and every backtest bar next to the stop-loss, take-profit and
        holding time; the default never exits. A held pair's row also holds
        ``held_spread_z``: the z-score of the spread its legs hold (the entry's hedge ratio).
        """
        return pd.Series(False, index=latest.index)

    @classmethod
    def has_exit_rule(cls) -> bool:
        return cls.exit_rule is not Strategy.exit_rule


@cache
def _strategy_classes() -> dict[str, type[Strategy]]:
    """Found once per process: the signal engine asks for a strategy at every backtest bar."""
    import strategies

    found: dict[str, type[Strategy]] = {}
    for module_info in pkgutil.iter_modules(strategies.__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"strategies.{module_info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Strategy) and value is not Strategy:
                if value.__module__ == module.__name__:
                    found[value.name] = value
    return found


def available_strategies() -> dict[str, type[Strategy]]:
    """Every strategy class declared in ``strategies/``, by name."""
    return dict(_strategy_classes())


def get_strategy(name: str) -> type[Strategy]:
    classes = _strategy_classes()
    if name not in classes:
        hint = difflib.get_close_matches(name, list(classes), n=1)
        from lab.errors import ConfigError

        raise ConfigError(
            [f"unknown strategy {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
             + f"; known: {', '.join(sorted(classes))}"]
        )
    return classes[name]
