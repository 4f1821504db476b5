"""Where a backtest's decisions come from at each bar of the historical clock.

``EngineDecisions`` is the live cycle's: the portfolio manager's exits (stops, targets,
holding time) and the trade signal engine's entries, with features from the live cycle's
``FeatureFrames`` computed once over the whole history (every feature at t reads bars up to t
only) and model confidence from
``WalkForwardPredictions`` (models fitted on bars strictly before each window) or the
registry. ``CrossoverDecisions`` replays precomputed entry/exit flags (the rule-based
baseline that the cross-check against backtesting.py runs).
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
import pandas as pd

from lab.backtest.data import datetimes
from lab.config import TradingConfig
from lab.errors import DataError
from lab.features import get_feature_set, labelled_rows
from lab.models.predictor import XGBPredictor, fit_threads, predictor_class
from lab.models.problem import RETURN_COLUMN
from lab.models.scoring import label_payoff
from lab.registry import ModelRegistry, VersionInfo
from lab.strategy import get_strategy
from lab.trading.model import Intent, Order, Side
from lab.trading.portfolio import ExitDecision, PortfolioManager
from lab.trading.predictions import NoActiveModel, Payoff, Prediction, PredictionSource, RegistryPredictions
from lab.trading.signals import FeatureSource, Screening, TradeSignalEngine, exit_decisions
from lab.trading.step import Candidate

__all__ = [
    "CrossoverDecisions",
    "Decisions",
    "EngineDecisions",
    "WalkForwardPredictions",
    "pretrained_predictions",
]


class Decisions(Protocol):
    #: what decides, in words (the report states it among the run's assumptions)
    basis: str

    def exits(self, as_of: datetime, manager: PortfolioManager, pending: Sequence[Order]) -> list[ExitDecision]:
        ...

    def entries(self, as_of: datetime, prices: Mapping[str, float], closed: Collection[str]) -> list[Candidate]:
        """The entries the signals ask for, best first, in no asset class whose market is
        ``closed`` at ``as_of`` (the live cycle neither screens nor orders there)."""
        ...

    def exit_mask(self, index: pd.DatetimeIndex, symbols: Sequence[str]) -> np.ndarray | None:
        """Bars x symbols: False where ``exits`` can close no position in that symbol at that
        bar (the clock then need not step an account that only holds such positions); None
        when any held position may exit on any bar."""
        ...

    def screening(self) -> Mapping[str, Screening]:
        """Per strategy, summed over the bars asked so far: how far its symbols got before
        becoming entries (empty where the entries are given, not screened)."""
        ...


@dataclass(frozen=True)
class _Window:
    start: pd.Timestamp
    predictor: XGBPredictor
    number: int
    #: measured on the window's training rows, as tuning measures a registered model's
    payoff: Payoff


class _AsOf:
    """The predictions a decision at one ``as_of`` may use."""

    def __init__(self, owner: WalkForwardPredictions, as_of: pd.Timestamp):
        self._owner, self._as_of = owner, as_of

    def predict(self, strategy: str, rows: pd.DataFrame) -> Prediction:
        window = self._owner.window(strategy, self._as_of)
        values = window.predictor.predict(rows) if len(rows) else np.empty(0)
        return Prediction(np.asarray(values, dtype=float), window.number, window.payoff)


class WalkForwardPredictions:
    """One model per strategy and window, each fitted on bars strictly before its window, with
    the payoff of that window's training rows."""

    def __init__(self, windows: Mapping[str, list[_Window]]):
        self._windows = {name: sorted(ws, key=lambda w: w.start) for name, ws in windows.items()}

    @classmethod
    def fit(cls, strategies: Iterable[str], bars: Mapping[str, pd.DataFrame], *, symbols: Mapping[str, list[str]],
            asset_classes: Mapping[str, str], start: pd.Timestamp, end: pd.Timestamp, window_days: int,
            train_days: int, seed: int, benchmarks: Mapping[str, str] | None = None,
            fundamentals: pd.DataFrame | None = None) -> WalkForwardPredictions:
        """Fit every (strategy, window) on the rows of bars strictly before the window (whose
        labels end before it too); ``symbols`` are each strategy's training symbols and
        ``benchmarks`` each symbol's benchmark, so training sees the same relative-strength
        features the signal engine computes when it trades; ``fundamentals`` the point-in-time
        table a fundamental feature set reads (each row sees what was known at its bar)."""
        starts = list(pd.date_range(start, end, freq=f"{window_days}D", tz="UTC")) or [start]
        windows: dict[str, list[_Window]] = {}
        for name in strategies:
            declared = get_strategy(name)
            fs = get_feature_set(declared.feature_set)
            classes = {asset_classes.get(s, "stocks") for s in symbols[name]}
            predictor_type = predictor_class(classes.pop() if len(classes) == 1 else None)
            task = "classification" if declared.label.is_classification else "regression"
            groups: dict[str | None, list[str]] = {}
            for symbol in (s for s in symbols[name] if s in bars):
                bench = (benchmarks or {}).get(symbol)
                groups.setdefault(bench if fs.kind != "pair" and bench in bars else None, []).append(symbol)
            # every bar's features and label once; each window takes the rows whose label
            # ends before it (the same rows as computing on the bars before it)
            history = pd.concat([
                labelled_rows({s: bars[s].loc[:end] for s in members}, declared.feature_set, declared.label,
                              benchmark=bars[bench].loc[:end] if bench else None,
                              fundamentals=fundamentals if fs.kind == "fundamental" else None)
                for bench, members in (groups or {None: []}).items()], ignore_index=True)
            stamps, label_ends, labelled = history["timestamp"], history["label_end"], history["label"].notna()
            windows[name] = []
            for number, window_start in enumerate(starts, start=1):
                cutoff = window_start - pd.Timedelta(microseconds=1)
                first = window_start - pd.Timedelta(days=train_days)
                data = history.loc[(stamps >= first) & (label_ends <= cutoff) & labelled]
                if data.empty:
                    raise DataError(f"{name}: no training rows before {window_start.date()} "
                                    f"(needs bars from {first.date()})")
                predictor = predictor_type(task, strategy=name, seed=seed, label={
                    "kind": declared.label.kind, "horizon": declared.label.horizon})
                predictor.train(data[list(fs.columns)], data["label"], threads=fit_threads())  # same trees
                payoff = Payoff(**label_payoff(data["label"].to_numpy(), data[RETURN_COLUMN].to_numpy()))
                windows[name].append(_Window(window_start, predictor, number, payoff))
        return cls(windows)

    def window(self, strategy: str, as_of: pd.Timestamp) -> _Window:
        windows = self._windows.get(strategy)
        if not windows:
            raise NoActiveModel(f"strategy {strategy!r} has no walk-forward model in this backtest")
        at = bisect.bisect_right([w.start for w in windows], as_of) - 1
        if at < 0:
            raise DataError(f"{strategy}: no model for {as_of.date()}, before the first window")
        return windows[at]

    def at(self, as_of: datetime) -> PredictionSource:
        return _AsOf(self, pd.Timestamp(as_of))

    def describe(self) -> dict[str, list[str]]:
        return {name: [w.start.date().isoformat() for w in ws] for name, ws in self._windows.items()}


class _Fixed:
    """One prediction source for every bar: the registry ``versions`` (strategy -> version) it
    predicts with."""

    def __init__(self, source: PredictionSource, versions: Mapping[str, VersionInfo]):
        self._source = source
        self._versions = dict(versions)

    def at(self, as_of: datetime) -> PredictionSource:
        return self._source

    @property
    def models(self) -> dict[str, dict[str, int]]:
        """Each strategy's version as a run stores it and is named by: its registry id (what
        tells it apart) and its number (what people call it, "v3")."""
        return {name: {"id": v.id, "version": v.version} for name, v in self._versions.items()}


def pretrained_predictions(registry: ModelRegistry, strategies: Iterable[str], start: pd.Timestamp) -> _Fixed:
    """The active registry versions, each trained strictly before ``start`` and storing the
    payoff its signals are priced at (else an error), pinned for the whole run."""
    versions = {}
    for name in strategies:
        version = registry.get_active_version(name, "trading")
        if version is None:
            raise NoActiveModel(f"strategy {name!r} has no active model version; train one with "
                                f"`lab tune --strategy {name}` or use walk-forward retraining")
        # the last bar the model learned from when the registry knows it, else its registration
        train_end = version.metrics.get("train_end")
        learned_until = pd.Timestamp(train_end) if train_end else pd.Timestamp(version.created_at)
        if learned_until >= start:
            what = "learned from bars up to" if train_end else "was registered"
            raise DataError(f"strategy {name!r}: the active model v{version.version} {what} "
                            f"{learned_until.date()}, not before the backtest start {start.date()}; its "
                            f"results would not be out of sample (use walk-forward retraining)")
        # refused here, not strategy by strategy at its first signal, which would leave it out unsaid
        Payoff.of(version.metrics.get("payoff"), strategy=name, version=version.version)
        versions[name] = version
    return _Fixed(RegistryPredictions(registry, versions=versions), versions)


class EngineDecisions:
    """The trading cycle's decisions: its exits (``exit_decisions``) and signal-engine entries."""

    def __init__(self, config: TradingConfig, predictions: WalkForwardPredictions | _Fixed,
                 features: FeatureSource, universe: Mapping[str, Sequence[str]], *, basis: str):
        self.config, self.predictions, self.features, self.basis = config, predictions, features, basis
        self.universe = {k: list(v) for k, v in universe.items()}
        self._screening: dict[str, Screening] = {}

    def exits(self, as_of: datetime, manager: PortfolioManager, pending: Sequence[Order]) -> list[ExitDecision]:
        return exit_decisions(self.config, manager, self.features, as_of, pending)

    def exit_mask(self, index: pd.DatetimeIndex, symbols: Sequence[str]) -> None:
        return None  # stops, targets, holding time and exit rules may fire on any bar

    def entries(self, as_of: datetime, prices: Mapping[str, float], closed: Collection[str]) -> list[Candidate]:
        engine = TradeSignalEngine(self.config, self.predictions.at(as_of), self.features, as_of=as_of,
                                   prices=prices)
        # as the live cycle, which enters no symbol whose bars stop before the last complete
        # session: here, a symbol without a bar now (``prices`` holds those with one)
        signals = engine.generate({k: [s for s in v if s in prices] for k, v in self.universe.items() if k not in closed})
        for name, screening in engine.screened.items():
            total = self._screening.setdefault(name, Screening())
            total += screening  # in place
        return [Candidate.from_record(record) for record in signals.to_dict("records")]

    def screening(self) -> Mapping[str, Screening]:
        return self._screening


class CrossoverDecisions:
    """Precomputed flags (index ts, columns symbols): enter when flat on ``entries``, close on
    ``exits``. No stop or target: the rule alone decides."""

    basis = "precomputed entry and exit flags (no model)"

    def __init__(self, strategy: str, entries: pd.DataFrame, exits: pd.DataFrame):
        self.strategy = strategy
        self._symbols = np.asarray(entries.columns, dtype=object)
        self._index = pd.DatetimeIndex(entries.index)
        # keyed by datetimes, as the clock asks (a Timestamp key compares slowly with one)
        self._row = {ts: i for i, ts in enumerate(datetimes(self._index))}
        self._entries = entries.fillna(False).to_numpy(dtype=bool)
        self._exits = exits.reindex(index=entries.index, columns=entries.columns).fillna(False).to_numpy(dtype=bool)
        self._any_entry, self._any_exit = self._entries.any(axis=1), self._exits.any(axis=1)
        self._last_flagged: tuple[int, frozenset[str]] = (-1, frozenset())
        self._last_row: tuple[datetime | None, int | None] = (None, None)

    def exits(self, as_of: datetime, manager: PortfolioManager, pending: Sequence[Order]) -> list[ExitDecision]:
        row = self._row_of(as_of)
        if row is None or not self._any_exit[row]:
            return []
        flagged = self._flagged(row)
        due = [p for p in manager.open_positions() if p.strategy == self.strategy and p.symbol in flagged]
        if not due:
            return []  # most accounts at a bar with exits elsewhere
        exiting = {(o.strategy, o.symbol) for o in pending if o.intent is not Intent.ENTRY}
        return [ExitDecision(p, Intent.EXIT, "exit rule") for p in due if (p.strategy, p.symbol) not in exiting]

    def _row_of(self, as_of: datetime) -> int | None:
        """The flags' row of ``as_of``, kept for the next account asking about the same bar."""
        if as_of is not self._last_row[0]:
            self._last_row = (as_of, self._row.get(as_of))
        return self._last_row[1]

    def _flagged(self, row: int) -> frozenset[str]:
        """The symbols flagged at ``row``, kept for the next account asking about the same bar."""
        if self._last_flagged[0] != row:
            self._last_flagged = (row, frozenset(self._symbols[self._exits[row]]))
        return self._last_flagged[1]

    def exit_mask(self, index: pd.DatetimeIndex, symbols: Sequence[str]) -> np.ndarray:
        flags = pd.DataFrame(self._exits, index=self._index, columns=self._symbols)
        return flags.reindex(index=index, columns=list(symbols), fill_value=False).to_numpy(dtype=bool)

    def entries(self, as_of: datetime, prices: Mapping[str, float], closed: Collection[str]) -> list[Candidate]:
        """The flagged symbols with a bar now (``prices``): a closed market's symbols have none."""
        row = self._row_of(as_of)
        if row is None or not self._any_entry[row]:
            return []
        return [Candidate(strategy=self.strategy, symbol=s, side=Side.BUY, entry=prices[s], confidence=1.0)
                for s in self._symbols[self._entries[row]] if s in prices]

    def screening(self) -> Mapping[str, Screening]:
        return {}  # the flags are the entries
