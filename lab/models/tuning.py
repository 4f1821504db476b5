"""Walk-forward hyper-parameter tuning of the strategies' models on Ray Tune.

Optuna's TPE sampler (seeded) proposes, ASHA stops trials whose first folds already look
poor (one fold = one Tune iteration), and trials run side by side, one CPU each. The
problems' arrays go into the object store once (``tune.with_parameters``). Tune's per-trial
cost is kept low: no CSV/JSON/TensorBoard loggers, no checkpoints (the best params are
refit on the driver on every core once the trials are over, which is also what makes the
saved model reproducible), and actors are reused between trials. What remains is mostly
fixed per run: each trial slot starts a fresh worker process (about 2 s here) that imports
Ray Tune, XGBoost and this package, so this module does not import the database layer, and
``tune_strategies`` tunes several strategies in one Tune run: each keeps its own TPE study
and ASHA brackets (``_PerStrategySearch``, ``_PerStrategyScheduler``), while the trial
workers, their start-up and the run's tail are shared.

Trials see the tuning folds only. The best of them is scored once on the problem's holdout
(the test window after those folds, which no trial read): the best of many trials' fold
means is biased upward by the number of trials, even on pure noise, so the holdout figures
are the out-of-sample ones a result reports and promotion judges.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import lab
from lab.errors import ConfigError, LabError
from lab.models.predictor import fit_threads
from lab.models.problem import Problem, check_search_space
from lab.models.scoring import deflated_sharpe_ratio, sharpe_ratio
from lab.strategy import Param, Strategy, get_strategy

__all__ = ["TuningResult", "TuneJob", "tune_strategy", "tune_strategies", "prepare_problem", "tune_domains",
           "code_version"]

Progress = Callable[[int, int], None]
#: progress(strategy, trials_done, trials_total)
StrategyProgress = Callable[[str, int, int], None]

_STRATEGY_KEY = "strategy"  # the trial config entry naming whose problem a trial works on
_METRIC = "score"  # a trial's running mean of its strategy's metric over the tuning folds so far


@dataclass(frozen=True, kw_only=True)
class TuningResult:
    """The best trial of a run, refit on all rows, with honest out-of-sample statistics.

    ``oos_score``, ``holdout_metrics``, ``sharpe`` and ``deflated_sharpe`` are the best
    params' figures on the holdout, which the selection never saw; ``tuning_score`` and
    ``fold_metrics`` are what the selection compared (the tuning folds), biased upward by it.
    """

    strategy: str
    asset_class: str | None
    task: str
    metric: str
    best_params: dict[str, Any]
    #: the best params' ``metric`` on the holdout
    oos_score: float
    holdout_metrics: dict[str, Any]
    #: the best trial's mean ``metric`` over the tuning folds (the maximum over the trials)
    tuning_score: float
    fold_metrics: list[dict[str, Any]]
    #: of the holdout's holding-period returns; deflated for the trials, which only understates it there
    sharpe: float
    deflated_sharpe: float
    n_trials: int
    trial_sharpes: list[float]
    model_path: Path
    storage_path: Path
    code_version: str
    started_at: datetime
    finished_at: datetime
    #: Ray node ids the finished trials ran on
    nodes: tuple[str, ...]
    #: seconds trials spent fitting and scoring (the rest of the wall time is Tune's overhead)
    fit_seconds: float
    problem: Problem = field(repr=False)

    @property
    def oos_auc(self) -> float | None:
        return self.oos_score if self.task == "classification" else None

    @property
    def metrics(self) -> dict[str, Any]:
        """What the registry stores next to the model; ``payoff`` (``Problem.payoff``, of the
        rows the model was fitted on) is what the signal engine prices its trades at."""
        return {"metric": self.metric, "oos_score": self.oos_score, "oos_auc": self.oos_auc,
                "sharpe": self.sharpe, "deflated_sharpe": self.deflated_sharpe, "n_trials": self.n_trials,
                "oos_return": self.holdout_metrics["return"], "holdout": self.holdout_metrics,
                "tuning_score": self.tuning_score, "folds": self.fold_metrics, "payoff": self.problem.payoff()}


def code_version() -> str:
    """The lab's version plus the git commit of the checkout, when there is one."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(lab.__file__).parent, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return lab.__version__
    return f"{lab.__version__}+{sha}"


def tune_domains(space: Mapping[str, Param]) -> dict[str, Any]:
    from ray import tune

    domains = {}
    for name, p in space.items():
        if p.is_int:
            domains[name] = (tune.lograndint if p.log else tune.randint)(int(p.low), int(p.high) + 1)
        else:
            domains[name] = (tune.loguniform if p.log else tune.uniform)(float(p.low), float(p.high))
    return domains


def prepare_problem(strategy: type[Strategy], data: pd.DataFrame, *, folds: int, seed: int,
                    cost: float = 0.0, asset_class: str | None = None, features: list[str] | None = None,
                    feature_fingerprint: str | None = None,
                    search_space: Mapping[str, Param] | None = None) -> Problem:
    """Every input check, before Ray is touched."""
    check_search_space(search_space if search_space is not None else strategy.search_space)
    label = strategy.label
    return Problem.build(
        strategy.name, data, task="classification" if label.is_classification else "regression",
        label={"kind": label.kind, "horizon": label.horizon, "threshold": label.threshold, "stop": label.stop},
        n_folds=folds, embargo=label.horizon, cost=cost, seed=seed,
        asset_class=asset_class, features=features, feature_fingerprint=feature_fingerprint)


def _trial(config: dict[str, Any], problems: dict[str, Problem]) -> None:
    """One Tune trial: walk forward, report the running mean score after every fold."""
    import ray
    from ray import tune

    params = dict(config)
    problem = problems[params.pop(_STRATEGY_KEY)]
    scores, returns, folds = [], [], []
    started = time.perf_counter()
    for fold in problem.walk_forward(params):
        scores.append(fold.metrics[problem.metric])
        returns.append(fold.returns)
        folds.append(fold.metrics)
        report = {_METRIC: float(np.nanmean(scores)), "folds_done": len(scores),
                  "fit_s": time.perf_counter() - started}
        if len(scores) == len(problem.folds):
            report |= {"fold_metrics": folds, "fold_returns": np.concatenate(returns).tolist(),
                       "node_id": ray.get_runtime_context().get_node_id()}
        tune.report(report)


def _per_strategy_search(spaces: Mapping[str, Mapping[str, Param]], trials: int, seed: int):
    """A Searcher holding one seeded OptunaSearch (TPE) per strategy, each seeing only its trials.

    Proposals alternate between the strategies that have budget left (the one with the
    fewest proposals first), so run serially each study asks and learns exactly as it would
    alone.
    """
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    class _PerStrategySearch(Searcher):
        def __init__(self) -> None:
            super().__init__(metric=_METRIC, mode="max")
            self.studies = {name: OptunaSearch(space=OptunaSearch.convert_search_space(tune_domains(space)),
                                               metric=_METRIC, mode="max", seed=seed)
                            for name, space in spaces.items()}
            self.proposed = dict.fromkeys(spaces, 0)
            self.owner: dict[str, str] = {}

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            waiting = [name for name in self.studies if self.proposed[name] < trials]
            if not waiting:
                return Searcher.FINISHED
            name = min(waiting, key=self.proposed.__getitem__)
            config = self.studies[name].suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            self.proposed[name] += 1
            self.owner[trial_id] = name
            return {**config, _STRATEGY_KEY: name}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self.studies[self.owner[trial_id]].on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self.studies[self.owner[trial_id]].on_trial_complete(trial_id, result=result, error=error)

        def save(self, checkpoint_path: str) -> None:  # Tune's experiment state (what OptunaSearch saves)
            with open(checkpoint_path, "wb") as file:
                pickle.dump((self.proposed, self.owner, {n: s.__dict__ for n, s in self.studies.items()}), file)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as file:
                self.proposed, self.owner, states = pickle.load(file)
            for name, state in states.items():
                self.studies[name].__dict__.update(state)

    return _PerStrategySearch()


def _per_strategy_scheduler(fold_counts: Mapping[str, int]):
    """A scheduler holding one ASHA per strategy: a trial is only compared with its own strategy's."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    class _PerStrategyScheduler(FIFOScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.by_strategy = {name: ASHAScheduler(time_attr="folds_done", metric=_METRIC, mode="max", max_t=n,
                                                    grace_period=min(2, n), reduction_factor=2)
                                for name, n in fold_counts.items()}
            self._metric = _METRIC

        def _of(self, trial):
            return self.by_strategy[trial.config[_STRATEGY_KEY]]

        def on_trial_add(self, tune_controller, trial) -> None:
            self._of(trial).on_trial_add(tune_controller, trial)

        def on_trial_error(self, tune_controller, trial) -> None:
            self._of(trial).on_trial_error(tune_controller, trial)

        def on_trial_result(self, tune_controller, trial, result) -> str:
            return self._of(trial).on_trial_result(tune_controller, trial, result)

        def on_trial_complete(self, tune_controller, trial, result) -> None:
            self._of(trial).on_trial_complete(tune_controller, trial, result)

        def on_trial_remove(self, tune_controller, trial) -> None:
            self._of(trial).on_trial_remove(tune_controller, trial)

        def debug_string(self) -> str:
            return "; ".join(f"{name}: {s.debug_string()}" for name, s in self.by_strategy.items())

    return _PerStrategyScheduler()


@contextmanager
def _quiet_tune() -> Iterator[None]:
    """No per-trial CSV/JSON/TensorBoard files: they cost more than a small trial itself."""
    import optuna

    keys = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    # without result files the analysis warns that it cannot re-read them; results stay in memory
    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level, optuna_level = analysis_log.level, optuna.logging.get_verbosity()
    analysis_log.setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        analysis_log.setLevel(level)
        optuna.logging.set_verbosity(optuna_level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _progress_callback(progress: StrategyProgress, per_strategy: int):
    from ray.tune import Callback

    class _Progress(Callback):
        """Reports to ``progress`` in this process. Tune pickles its callbacks with the run's
        state (for a restore), and a sink such as a terminal progress bar holds locks that do
        not pickle: the pickled copy reports nothing (so nothing here may close over it)."""

        def __init__(self, progress: StrategyProgress, per_strategy: int) -> None:
            self.progress: StrategyProgress | None = progress
            self.per_strategy = per_strategy
            self.done: dict[str, int] = {}

        def __getstate__(self) -> dict:
            return {**self.__dict__, "progress": None}

        def on_trial_complete(self, iteration, trials, trial, **info):
            name = trial.config[_STRATEGY_KEY]
            self.done[name] = self.done.get(name, 0) + 1
            if self.progress is not None:
                self.progress(name, self.done[name], self.per_strategy)

        on_trial_error = on_trial_complete

    return _Progress(progress, per_strategy)


@dataclass(frozen=True, kw_only=True)
class TuneJob:
    """One strategy's inputs to ``tune_strategies`` (the budget is the run's).

    ``data``: symbol, timestamp, <features>, label, label_end (the time of the last bar the
    label reads, which purges the folds), forward_return (the realised return over the label
    horizon, used to score trading). ``cost``: round-trip fees + slippage as a
    fraction.
    """

    strategy: str
    data: pd.DataFrame = field(repr=False)
    asset_class: str | None = None
    features: list[str] | None = None
    feature_fingerprint: str | None = None
    search_space: Mapping[str, Param] | None = None
    cost: float = 0.0


def tune_strategy(strategy_name: str, data: pd.DataFrame, *, trials: int, time_budget_s: float, seed: int,
                  folds: int, storage_dir: Path | str, asset_class: str | None = None,
                  features: list[str] | None = None, feature_fingerprint: str | None = None,
                  search_space: Mapping[str, Param] | None = None, cost: float = 0.0,
                  max_concurrent: int | None = None, progress: Progress | None = None) -> TuningResult:
    """Tune one strategy (``tune_strategies`` with one job); its errors are raised.

    ``max_concurrent=1`` gives a serial, fully reproducible run.
    """
    job = TuneJob(strategy=strategy_name, data=data, asset_class=asset_class, features=features,
                  feature_fingerprint=feature_fingerprint, search_space=search_space, cost=cost)
    (outcome,) = tune_strategies([job], trials=trials, time_budget_s=time_budget_s, seed=seed, folds=folds,
                                 storage_dir=storage_dir, max_concurrent=max_concurrent,
                                 progress=(lambda _name, done, total: progress(done, total)) if progress else None)
    if isinstance(outcome, LabError):
        raise outcome
    return outcome


def tune_strategies(jobs: list[TuneJob], *, trials: int, time_budget_s: float, seed: int, folds: int,
                    storage_dir: Path | str, max_concurrent: int | None = None,
                    progress: StrategyProgress | None = None) -> list[TuningResult | LabError]:
    """Tune every job's strategy (``trials`` each) in one Ray Tune run and refit each best trial.

    One outcome per job, in order: its result, or the error that stopped that strategy alone
    (bad input is found before any trial starts; a strategy with no trial through all folds
    fails after the run). ``time_budget_s`` is per strategy (the run gets the sum). Every
    strategy's arrays sit in the object store for the whole run.
    """
    if trials < 1:
        raise ConfigError([f"trials must be >= 1, got {trials}"])
    names = [job.strategy for job in jobs]
    if len(set(names)) != len(names):
        raise ConfigError([f"each strategy once per run, got {', '.join(names)}"])
    outcomes: list[TuningResult | LabError | None] = [None] * len(jobs)
    problems: dict[str, Problem] = {}
    spaces: dict[str, dict[str, Param]] = {}
    for index, job in enumerate(jobs):
        try:
            strategy = get_strategy(job.strategy)
            space = dict(job.search_space if job.search_space is not None else strategy.search_space)
            problems[job.strategy] = prepare_problem(
                strategy, job.data, folds=folds, seed=seed, cost=job.cost, asset_class=job.asset_class,
                features=job.features, feature_fingerprint=job.feature_fingerprint, search_space=space)
            spaces[job.strategy] = space
        except LabError as exc:
            outcomes[index] = exc
    if problems:
        results = _run(problems, spaces, trials=trials, time_budget_s=time_budget_s * len(problems), seed=seed,
                       storage_dir=storage_dir, max_concurrent=max_concurrent, progress=progress)
        for index, job in enumerate(jobs):
            if outcomes[index] is None:
                outcomes[index] = results[job.strategy]
    return outcomes  # type: ignore[return-value]  # every slot is filled


def _run(problems: dict[str, Problem], spaces: dict[str, dict[str, Param]], *, trials: int, time_budget_s: float,
         seed: int, storage_dir: Path | str, max_concurrent: int | None,
         progress: StrategyProgress | None) -> dict[str, TuningResult | LabError]:
    import ray
    from ray import tune

    from lab.runtime import ensure_ray

    ensure_ray()
    started = datetime.now(UTC)
    storage = Path(storage_dir).resolve()
    cpus = max(int(ray.cluster_resources().get("CPU", 1)), 1)
    total = trials * len(problems)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trial, problems=problems), {"cpu": 1}),
        tune_config=tune.TuneConfig(
            num_samples=total, time_budget_s=time_budget_s,
            max_concurrent_trials=max_concurrent or min(cpus, total), reuse_actors=True,
            search_alg=_per_strategy_search(spaces, trials, seed),
            scheduler=_per_strategy_scheduler({name: len(p.folds) for name, p in problems.items()})),
        run_config=tune.RunConfig(
            name=f"{'+'.join(problems)}-{started:%Y%m%dT%H%M%S%f}", storage_path=str(storage), verbose=0,
            callbacks=[_progress_callback(progress, trials)] if progress else None),
    )
    with _quiet_tune():
        grid = tuner.fit()
    run_dir = Path(grid.experiment_path)
    by_strategy: dict[str, list] = {name: [] for name in problems}
    for i in range(len(grid)):  # trial order
        result = grid[i]
        if result.config and _STRATEGY_KEY in result.config:
            by_strategy[result.config[_STRATEGY_KEY]].append(result)
    outcomes: dict[str, TuningResult | LabError] = {}
    for name, problem in problems.items():
        try:
            outcomes[name] = _best(name, problem, spaces[name], by_strategy[name], run_dir, started)
        except LabError as exc:
            outcomes[name] = exc
    return outcomes


def _best(name: str, problem: Problem, space: dict[str, Param], results: list, run_dir: Path,
          started: datetime) -> TuningResult:
    """The strategy's best trial, scored on the holdout and refit on all rows."""
    n_folds = len(problem.folds)
    finished = [r for r in results if r.error is None and r.metrics and r.metrics.get("folds_done") == n_folds]
    if not finished:
        errors = "; ".join(str(r.error).splitlines()[0] for r in results if r.error is not None)[:500]
        raise ConfigError([f"no trial of {name!r} finished all {n_folds} folds"
                           + (f": {errors}" if errors else " within the time budget")])
    best = max(finished, key=lambda r: r.metrics[_METRIC])  # trial order: ties stay stable
    params = {k: (int(v) if space[k].is_int else float(v)) for k, v in best.config.items() if k != _STRATEGY_KEY}
    holdout = problem.score_holdout(params)
    trial_sharpes = [sharpe_ratio(np.asarray(r.metrics["fold_returns"])) for r in finished]
    n_tried = sum(1 for r in results if r.metrics)
    # the trials are over, so the refit may use every core here (the file does not depend on it)
    model = problem.fit(params, threads=fit_threads())
    model_path = model.save(run_dir / f"{name}-best.ubj")
    return TuningResult(
        strategy=name, asset_class=problem.asset_class, task=problem.task, metric=problem.metric,
        best_params=params, oos_score=float(holdout.metrics[problem.metric]),
        holdout_metrics=holdout.metrics | problem.holdout.describe(),
        tuning_score=float(best.metrics[_METRIC]), fold_metrics=best.metrics["fold_metrics"],
        sharpe=sharpe_ratio(holdout.returns),
        deflated_sharpe=deflated_sharpe_ratio(holdout.returns, trial_sharpes, n_tried),
        n_trials=n_tried, trial_sharpes=trial_sharpes, model_path=model_path, storage_path=run_dir,
        code_version=code_version(), started_at=started, finished_at=datetime.now(UTC),
        nodes=tuple(sorted({r.metrics["node_id"] for r in finished})),
        fit_seconds=sum(r.metrics.get("fit_s", 0.0) for r in results if r.metrics), problem=problem)
