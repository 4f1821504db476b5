"""A backtest run as a frozen, keyword-only config. The content hash of the spec, of the
settings it runs with and of the registry models it predicts with (a pretrained run) names
the run, its portfolio (``backtest:<hash>``) and its report folder: the same spec on the same
settings and models is the same run, stored again in its place; after an edit of
config/trading.json, or with another model version active, it is another run, stored beside
the first."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, ValidationError, field_validator, model_validator

from lab.config import TradingConfig
from lab.db.models import BACKTEST_PREFIX
from lab.errors import ConfigError

__all__ = ["BacktestSpec", "WalkForward", "folder_name", "nested_settings", "run_settings", "setting_names",
           "settings_label"]

#: the trading config a backtest reads: not its data sources, schedules, rate limits or
#: tuning, nor which real broker the live cycle uses (a backtest always fills on paper)
_RUN_SECTIONS: dict[str, Any] = {"universe": True, "sizing": True, "risk": True,
                                 "execution": {"initial_cash", "slippage_bps", "fee_bps", "max_volume_share",
                                               "max_order_notional", "max_daily_notional", "price_band_pct"}}


def run_settings(config: TradingConfig, strategies: list[str]) -> dict[str, Any]:
    """The settings a backtest of ``strategies`` runs with (``config``: the base config with
    the spec's overrides, its universe narrowed to the run's symbols)."""
    return config.model_dump(mode="json", include={**_RUN_SECTIONS, "strategies": set(strategies)})


def folder_name(portfolio: str) -> str:
    """A run's portfolio name as the name of its folders (reports, exports): no colon."""
    return portfolio.replace(":", "-")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="wrap")
    @classmethod
    def _named_problems(cls, data: Any, handler: ModelWrapValidatorHandler) -> Any:
        """A bad field is a ConfigError naming it (the CLI prints it as one line), not a
        pydantic traceback."""
        try:
            return handler(data)
        except ValidationError as exc:
            raise ConfigError([f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from None


class WalkForward(_Frozen):
    """How models stay out of sample.

    ``retrain``: before each window of ``window_days`` a fresh model per strategy is fitted
    on bars strictly before the window (labels cut there too). ``pretrained``: the active
    registry version of each strategy, which must have been registered before ``start``.
    """

    mode: Literal["retrain", "pretrained"] = "retrain"
    window_days: Annotated[int, Field(ge=7, le=3650)] = 182
    train_days: Annotated[int, Field(ge=60, le=36500)] = 1460


class BacktestSpec(_Frozen):
    strategies: list[str] = Field(min_length=1)
    start: date
    end: date
    symbols: list[str] | None = None  # None: the config universe of the strategies' asset classes
    #: the buy-and-hold line the run is compared with, never what its features read (each asset
    #: class's configured benchmark); None: the config benchmark of the first asset class the run trades
    benchmark: str | None = None
    name: str | None = None
    walk_forward: WalkForward = WalkForward()
    #: "per_symbol": one account per symbol with the full initial cash (a peer engine's model)
    accounts: Literal["shared", "per_symbol"] = "shared"
    #: deep-merged into config/trading.json (execution, sizing, risk, strategies.<name>.params, ...)
    config_overrides: dict[str, Any] = Field(default_factory=dict)
    seed: int = 7

    @field_validator("symbols")
    @classmethod
    def _upper(cls, symbols: list[str] | None) -> list[str] | None:
        if symbols is None:
            return None
        cleaned = [s.strip().upper() for s in symbols]
        if dupes := sorted({s for s in cleaned if cleaned.count(s) > 1}):
            raise ValueError(f"each symbol once, got {', '.join(dupes)} more than once")
        return cleaned

    @field_validator("benchmark")
    @classmethod
    def _upper_benchmark(cls, benchmark: str | None) -> str | None:
        """Written as the symbols are: ``--benchmark ko`` is KO."""
        if benchmark is not None and not benchmark.strip():
            raise ValueError("expected a symbol, got an empty name")
        return None if benchmark is None else benchmark.strip().upper()

    def portfolio_for(self, config: TradingConfig, models: Mapping[str, Any] | None = None) -> str:
        """The run's portfolio name: a hash of this spec, of the settings it runs with and of
        the registry ``models`` it predicts with (strategy -> its version, for a pretrained
        run; a retrained run fits its own from the spec, and its name is as it always was)."""
        identity: dict[str, Any] = {"spec": self.model_dump(mode="json"),
                                    "settings": run_settings(config, self.strategies)}
        if models:
            identity["models"] = dict(models)
        payload = json.dumps(identity, sort_keys=True)
        return f"{BACKTEST_PREFIX}{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    @property
    def label(self) -> str:
        return self.name or f"{'+'.join(self.strategies)} {self.start}..{self.end}"

    @property
    def start_ts(self) -> pd.Timestamp:
        return pd.Timestamp(self.start, tz="UTC")

    @property
    def end_ts(self) -> pd.Timestamp:
        """End of the last day: bars stamped any time on ``end`` are inside."""
        return pd.Timestamp(self.end, tz="UTC") + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)

    def with_settings(self, settings: Mapping[str, Any]) -> BacktestSpec:
        """This spec with ``settings`` (dotted config paths -> values) merged into its
        overrides and named after them: another key, another run."""
        overrides = _deep_merge(self.config_overrides, nested_settings(settings))
        return self.model_copy(update={"config_overrides": overrides,
                                       "name": f"{self.label} [{settings_label(settings)}]"})

    def trading_config(self, base: TradingConfig) -> TradingConfig:
        """The base config with this run's overrides, validated like the file itself."""
        merged = _deep_merge(base.model_dump(mode="json"), self.config_overrides)
        return TradingConfig.model_validate(merged)


def nested_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted config paths ("risk.max_positions") and their values as the nested overrides
    they stand for; a path that is not dotted names or lies inside another is refused."""
    out: dict[str, Any] = {}
    for path, value in settings.items():
        *parents, leaf = names = path.split(".")
        if not all(names):
            raise ConfigError([f"{path!r}: not a dotted config path"])
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError([f"{path}: lies inside another setting given"])
        if leaf in node:
            raise ConfigError([f"{path}: another setting given lies inside it"])
        node[leaf] = value
    return out


def setting_names(paths: Iterable[str]) -> dict[str, str]:
    """Each dotted path by its shortest ending that no other of ``paths`` ends with:
    "max_positions" alone, but "risk.max_positions" beside "strategies.momentum.max_positions"."""
    paths = list(paths)

    def name(path: str) -> str:
        parts = path.split(".")
        for size in range(1, len(parts)):
            tail = ".".join(parts[-size:])
            if not any(other != path and (other == tail or other.endswith(f".{tail}")) for other in paths):
                return tail
        return path

    return {path: name(path) for path in paths}


def settings_label(settings: Mapping[str, Any]) -> str:
    """``name=value, ...`` (names as ``setting_names``): how a run made of ``settings`` is told apart."""
    names = setting_names(settings)
    return ", ".join(f"{names[path]}={value}" for path, value in settings.items())


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out
