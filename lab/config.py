"""The user's configuration file, ``config/trading.json``, validated on load.

Every section is a frozen pydantic model that rejects unknown keys, so a typo is an error
that names its key path instead of a silently ignored setting.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lab.errors import ConfigError

__all__ = [
    "AssetClass",
    "TradingConfig",
    "StrategyConfig",
    "RiskConfig",
    "SizingConfig",
    "ExecutionConfig",
    "load_config",
    "check_config",
    "check_strategies",
]

AssetClass = Literal["stocks", "crypto"]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFraction = Annotated[float, Field(gt=0.0, le=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssetUniverse(_Section):
    symbols: list[str] = Field(min_length=1)
    benchmark: str

    @field_validator("symbols")
    @classmethod
    def _unique_upper(cls, symbols: list[str]) -> list[str]:
        cleaned = [s.strip().upper() for s in symbols]
        if any(not s for s in cleaned):
            raise ValueError("symbols must be non-empty strings")
        dupes = sorted({s for s in cleaned if cleaned.count(s) > 1})
        if dupes:
            raise ValueError(f"duplicate symbols: {', '.join(dupes)}")
        return cleaned

    @field_validator("benchmark")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.strip().upper()

    @property
    def tickers(self) -> tuple[str, ...]:
        """The benchmark and the symbols: every series this class ingests."""
        return (self.benchmark, *self.symbols)


class UniverseConfig(_Section):
    stocks: AssetUniverse | None = None
    crypto: AssetUniverse | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> UniverseConfig:
        if self.stocks is None and self.crypto is None:
            raise ValueError("at least one of stocks or crypto is required")
        return self

    @model_validator(mode="after")
    def _one_class_per_ticker(self) -> UniverseConfig:
        """price_history keys a series by symbol: a ticker in both classes (SOL the NYSE stock,
        SOL the coin) would have each class's ingest overwrite the other's bars."""
        both = sorted(set(self.stocks.tickers) & set(self.crypto.tickers)) if self.stocks and self.crypto else []
        if both:
            raise ValueError("; ".join(f"{s} is both a stocks and a crypto symbol" for s in both)
                             + ": a ticker has one price series, so it can be in one asset class only")
        return self

    def asset_classes(self) -> dict[str, AssetUniverse]:
        return {name: u for name, u in (("stocks", self.stocks), ("crypto", self.crypto)) if u is not None}


class DataConfig(_Section):
    source: Literal["offline", "live", "files"] = "offline"
    #: a date, checked on load: a bad one (2004-13-01) would otherwise fail only in ``lab ingest``
    history_start: date = date(2004, 1, 1)
    files_path: str | None = None


class StrategyConfig(_Section):
    enabled: bool = True
    asset_classes: list[AssetClass] = Field(default_factory=lambda: ["stocks"], min_length=1)
    min_confidence: PositiveFraction = 0.6
    max_positions: Annotated[int, Field(ge=1, le=100)] = 5
    stop_loss: PositiveFraction | None = None
    take_profit: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    max_holding_days: Annotated[int, Field(ge=1, le=365)] | None = None
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)


class SizingConfig(_Section):
    #: all_in: ``all_in_fraction`` of equity (at most the cash) as a cash-sized order, whose
    #: quantity the broker resolves at the fill price
    method: Literal["fixed", "percent", "risk", "kelly", "all_in"] = "risk"
    fixed_amount: Annotated[float, Field(gt=0)] = 1_000.0
    all_in_fraction: PositiveFraction = 1.0
    percent_of_equity: PositiveFraction = 0.02
    risk_per_trade: Annotated[float, Field(gt=0.0, le=0.05)] = 0.01
    kelly_fraction: PositiveFraction = 0.25
    kelly_cap: PositiveFraction = 0.05


class RiskConfig(_Section):
    max_positions: Annotated[int, Field(ge=1, le=500)] = 12
    max_position_pct: PositiveFraction = 0.05
    cash_reserve_pct: Fraction = 0.15
    max_sector_pct: PositiveFraction = 0.30
    max_drawdown_halt: PositiveFraction = 0.20
    allow_shorts: bool = False


class ExecutionConfig(_Section):
    broker: Literal["paper", "alpaca", "binance"] = "paper"
    live: bool = False
    initial_cash: Annotated[float, Field(gt=0)] = 100_000.0
    slippage_bps: Annotated[float, Field(ge=0, le=500)] = 10.0
    fee_bps: dict[AssetClass, Annotated[float, Field(ge=0, le=500)]] = Field(
        default_factory=lambda: {"stocks": 1.0, "crypto": 10.0}
    )
    max_volume_share: PositiveFraction = 0.10
    max_order_notional: Annotated[float, Field(gt=0)] = 25_000.0
    max_daily_notional: Annotated[float, Field(gt=0)] = 250_000.0
    price_band_pct: PositiveFraction = 0.10


class TuningConfig(_Section):
    trials: Annotated[int, Field(ge=1, le=10_000)] = 16
    time_budget_s: Annotated[float, Field(gt=0)] = 600.0
    #: walk-forward folds trials are compared on; a holdout of one more such window follows them
    folds: Annotated[int, Field(ge=2, le=50)] = 4
    seed: int = 7
    min_auc_margin: Annotated[float, Field(ge=0, le=0.5)] = 0.02


class Schedule(_Section):
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, cron: str) -> str:
        if len(cron.split()) != 5:
            raise ValueError(f"cron must have 5 fields, got {cron!r}")
        return cron

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {tz!r}") from None
        return tz


def _default_schedules() -> dict[str, Schedule]:
    """Each trading cycle runs after the collection that brings the bar it decides on (a
    cycle gives no entry on a symbol whose last complete bar is missing)."""
    ny = "America/New_York"
    return {
        "stock_collection": Schedule(cron="0 16 * * 1-5", timezone=ny),
        "crypto_collection": Schedule(cron="0 */6 * * *", timezone="UTC"),
        "trading_training": Schedule(cron="0 22 * * 0", timezone=ny),
        "stock_trading_cycle": Schedule(cron="30 9 * * 1-5", timezone=ny),
        "crypto_trading_cycle": Schedule(cron="30 0 * * *", timezone="UTC"),
    }


class RateLimit(_Section):
    per_minute: Annotated[int, Field(ge=1)]
    per_day: Annotated[int, Field(ge=1)] | None = None


def _default_rate_limits() -> dict[str, RateLimit]:
    return {
        "alphavantage": RateLimit(per_minute=5, per_day=25),
        "coingecko": RateLimit(per_minute=30),
        "yahoo": RateLimit(per_minute=60),
        "binance": RateLimit(per_minute=600),
    }


class TradingConfig(_Section):
    universe: UniverseConfig
    data: DataConfig = DataConfig()
    strategies: dict[str, StrategyConfig] = Field(default_factory=dict)
    sizing: SizingConfig = SizingConfig()
    risk: RiskConfig = RiskConfig()
    execution: ExecutionConfig = ExecutionConfig()
    tuning: TuningConfig = TuningConfig()
    schedules: dict[str, Schedule] = Field(default_factory=_default_schedules)
    rate_limits: dict[str, RateLimit] = Field(default_factory=_default_rate_limits)

    def enabled_strategies(self) -> dict[str, StrategyConfig]:
        return {name: s for name, s in self.strategies.items() if s.enabled}

    def strategy_asset_classes(self, name: str) -> list[str]:
        """The asset classes a strategy trades: its config section's, else its declared ones."""
        if name in self.strategies:
            return list(self.strategies[name].asset_classes)
        from lab.strategy import get_strategy

        return list(get_strategy(name).asset_classes)

    def short_only_strategies(self, names: Iterable[str]) -> list[str]:
        """Those of ``names`` that trade short on every signal (a pair's other leg) while
        ``risk.allow_shorts`` is false: the books would refuse each of their entries."""
        if self.risk.allow_shorts:
            return []
        from lab.strategy import get_strategy

        return [name for name in names if get_strategy(name).needs_shorts]

    def asset_class_of(self, symbol: str) -> AssetClass | None:
        return self._asset_classes.get(symbol)

    @cached_property
    def _asset_classes(self) -> dict[str, AssetClass]:
        """Each universe symbol's and benchmark's asset class (one each: validation refuses a
        ticker in two): pre-trade validation asks it of every order a backtest places."""
        out: dict[str, AssetClass] = {}
        for name, universe in self.universe.asset_classes().items():
            out.update(dict.fromkeys(universe.tickers, name))  # type: ignore[arg-type]
        return out


def _key_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def _describe(error: dict[str, Any], model: type[BaseModel]) -> str:
    if error["type"] == "extra_forbidden":
        *parent, key = error["loc"]
        hint = difflib.get_close_matches(str(key), _known_keys(model, tuple(parent)), n=1)
        return f"unknown key {str(key)!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    return str(error["msg"])


def _known_keys(model: type[BaseModel], parent: tuple[Any, ...]) -> list[str]:
    """Field names at ``parent`` in the schema, for did-you-mean hints."""
    current: Any = model
    for part in parent:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        # unwrap Optional / dict[str, X]
        args = getattr(current, "__args__", ())
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            current = models[-1]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def check_config(path: Path) -> list[str]:
    """Every problem in the file as ``file: key.path: message`` lines (empty when valid)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"{path}: file not found"]
    except OSError as exc:
        return [f"{path}: cannot read it ({exc.strerror})"]
    except UnicodeDecodeError as exc:
        return [f"{path}: not UTF-8 text (byte {exc.start}): expected a JSON file"]
    except json.JSONDecodeError as exc:
        return [f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"]
    if not isinstance(raw, dict):
        return [f"{path}: <root>: expected a JSON object"]
    problems = []
    try:
        TradingConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{_key_path(e['loc'])}: {_describe(e, TradingConfig)}" for e in exc.errors()]
    strategies = raw.get("strategies")
    if isinstance(strategies, dict):
        problems += check_strategies(strategies)
    return [f"{path}: {problem}" for problem in problems]


def check_strategies(strategies: dict[str, Any]) -> list[str]:
    """Strategy names and parameters must match what the strategy modules declare (the
    model checks only their types): one line per problem, as ``strategies.<key path>: ...``."""
    from lab.strategy import available_strategies

    known = available_strategies()
    problems = []
    for name, strategy_config in strategies.items():
        declared = known.get(name)
        if declared is None:
            hint = difflib.get_close_matches(name, list(known), n=1)
            problems.append(
                f"strategies.{name}: unknown strategy" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
            continue
        params = strategy_config.get("params") if isinstance(strategy_config, dict) else None
        if isinstance(params, dict):
            problems.extend(f"strategies.{name}.params.{p}" for p in declared.check_params(params))
    return problems


def config_warnings(config: TradingConfig) -> list[str]:
    """What is valid but cannot work as configured, one line each (``lab config check``)."""
    return [*(f"strategies.{name}: enabled, but it trades short on every signal (a pair's other leg) and "
              f"risk.allow_shorts is false, so every entry of it will be refused: set risk.allow_shorts "
              f"to true or disable {name}" for name in config.short_only_strategies(config.enabled_strategies())),
            *_label_mismatches(config)]


def _label_mismatches(config: TradingConfig) -> list[str]:
    """Exit levels set apart from the barriers a strategy's model learns (a triple-barrier
    label): its confidence is the odds of the declared trade, and the signal engine prices
    the expected value of the configured one with them."""
    from lab.strategy import get_strategy

    out = []
    for name, section in config.strategies.items():
        label = get_strategy(name).label
        if label.kind != "triple_barrier":
            continue
        learned = {"stop_loss": label.stop, "take_profit": label.threshold, "max_holding_days": label.horizon}
        for key, barrier in learned.items():
            if (value := getattr(section, key)) is not None and value != barrier:
                out.append(f"strategies.{name}.{key}: {value:g}, but its model learns the odds of {barrier:g} "
                           f"(its label's barrier): leave it unset to trade what the model predicts")
    return out


def load_config(path: Path | str) -> TradingConfig:
    """Load and validate; raises ConfigError listing every problem."""
    path = Path(path)
    problems = check_config(path)
    if problems:
        raise ConfigError(problems)
    return TradingConfig.model_validate(json.loads(path.read_text(encoding="utf-8")))
