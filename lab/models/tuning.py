"""Walk-forward hyper-parameter tuning of one strategy's model on Ray Tune.

Optuna's TPE sampler (seeded) proposes, ASHA stops trials whose first folds already look
poor (one fold = one Tune iteration), and trials run side by side, one CPU each. The
problem's arrays go into the object store once (``tune.with_parameters``). Tune's per-trial
cost is kept low: no CSV/JSON/TensorBoard loggers, no checkpoints (the best params are
refit on the driver on every core once the trials are over, which is also what makes the
saved model reproducible), and actors are reused between trials. What remains is mostly
fixed per run: each trial slot starts a fresh worker process (about 2 s here) that imports
Ray Tune, XGBoost and this package, so this module does not import the database layer.
"""

from __future__ import annotations

import logging
import os
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
from lab.errors import ConfigError
from lab.models.problem import Problem, check_search_space
from lab.models.scoring import deflated_sharpe_ratio, sharpe_ratio
from lab.strategy import Param, Strategy, get_strategy

__all__ = ["TuningResult", "tune_strategy", "prepare_problem", "tune_domains", "code_version"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True, kw_only=True)
class TuningResult:
    """The best trial of a run, refit on all rows, with honest out-of-sample statistics."""

    strategy: str
    asset_class: str | None
    task: str
    metric: str
    best_params: dict[str, Any]
    best_score: float
    fold_metrics: list[dict[str, Any]]
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
        return self.best_score if self.task == "classification" else None

    @property
    def metrics(self) -> dict[str, Any]:
        """What the registry stores next to the model."""
        return {"metric": self.metric, "oos_score": self.best_score, "oos_auc": self.oos_auc,
                "sharpe": self.sharpe, "deflated_sharpe": self.deflated_sharpe, "n_trials": self.n_trials,
                "folds": self.fold_metrics, "oos_return": float(np.prod([1 + f["return"] for f in self.fold_metrics]) - 1)}


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
        horizon=label.horizon, n_folds=folds, embargo=label.horizon, cost=cost, seed=seed,
        asset_class=asset_class, features=features, feature_fingerprint=feature_fingerprint)


def _trial(config: dict[str, Any], problem: Problem) -> None:
    """One Tune trial: walk forward, report the running mean score after every fold."""
    import ray
    from ray import tune

    scores, returns, folds = [], [], []
    started = time.perf_counter()
    for fold in problem.walk_forward(config):
        scores.append(fold.metrics[problem.metric])
        returns.append(fold.returns)
        folds.append(fold.metrics)
        report = {"score": float(np.nanmean(scores)), "folds_done": len(scores),
                  "fit_s": time.perf_counter() - started}
        if len(scores) == len(problem.folds):
            report |= {"fold_metrics": folds, "oos_returns": np.concatenate(returns).tolist(),
                       "node_id": ray.get_runtime_context().get_node_id()}
        tune.report(report)


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


def _progress_callback(progress: Progress, total: int):
    from ray.tune import Callback

    class _Progress(Callback):
        done = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            progress(self.done, total)

        on_trial_error = on_trial_complete

    return _Progress()


def tune_strategy(strategy_name: str, data: pd.DataFrame, *, trials: int, time_budget_s: float, seed: int,
                  folds: int, storage_dir: Path | str, asset_class: str | None = None,
                  features: list[str] | None = None, feature_fingerprint: str | None = None,
                  search_space: Mapping[str, Param] | None = None, cost: float = 0.0,
                  max_concurrent: int | None = None, progress: Progress | None = None) -> TuningResult:
    """Tune ``strategy_name`` on ``data`` and refit the best trial; see the module docstring.

    ``data``: symbol, timestamp, <features>, label, forward_return (the realised return over
    the label horizon, used to score trading). ``cost``: round-trip fees + slippage as a
    fraction. ``max_concurrent=1`` gives a serial, fully reproducible run.
    """
    if trials < 1:
        raise ConfigError([f"trials must be >= 1, got {trials}"])
    strategy = get_strategy(strategy_name)
    space = dict(search_space if search_space is not None else strategy.search_space)
    problem = prepare_problem(strategy, data, folds=folds, seed=seed, cost=cost, asset_class=asset_class,
                              features=features, feature_fingerprint=feature_fingerprint, search_space=space)
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from lab.runtime import ensure_ray

    ensure_ray()
    started = datetime.now(UTC)
    storage = Path(storage_dir).resolve()
    cpus = max(int(ray.cluster_resources().get("CPU", 1)), 1)
    n_folds = len(problem.folds)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trial, problem=problem), {"cpu": 1}),
        param_space=tune_domains(space),
        tune_config=tune.TuneConfig(
            metric="score", mode="max", num_samples=trials, time_budget_s=time_budget_s,
            max_concurrent_trials=max_concurrent or min(cpus, trials), reuse_actors=True,
            search_alg=OptunaSearch(seed=seed),
            scheduler=ASHAScheduler(time_attr="folds_done", max_t=n_folds, grace_period=min(2, n_folds),
                                    reduction_factor=2)),
        run_config=tune.RunConfig(
            name=f"{strategy_name}-{started:%Y%m%dT%H%M%S%f}", storage_path=str(storage), verbose=0,
            callbacks=[_progress_callback(progress, trials)] if progress else None),
    )
    with _quiet_tune():
        grid = tuner.fit()
    results = [grid[i] for i in range(len(grid))]  # trial order
    finished = [r for r in results if r.error is None and r.metrics and r.metrics.get("folds_done") == n_folds]
    if not finished:
        errors = "; ".join(str(r.error).splitlines()[0] for r in results if r.error is not None)[:500]
        raise ConfigError([f"no trial of {strategy_name!r} finished all {n_folds} folds"
                           + (f": {errors}" if errors else " within the time budget")])
    best = max(finished, key=lambda r: r.metrics["score"])  # grid order is trial order: ties stay stable
    params = {k: (int(v) if space[k].is_int else float(v)) for k, v in best.config.items()}
    returns = np.asarray(best.metrics["oos_returns"], dtype=float)
    trial_sharpes = [sharpe_ratio(np.asarray(r.metrics["oos_returns"])) for r in finished]
    n_tried = sum(1 for r in results if r.metrics)
    # the trials are over, so the refit may use every core here (the file does not depend on it)
    model = problem.fit(params, threads=os.cpu_count() or 1)
    model_path = model.save(storage / grid.experiment_path.split("/")[-1] / "best.ubj")
    return TuningResult(
        strategy=strategy_name, asset_class=asset_class, task=problem.task, metric=problem.metric,
        best_params=params, best_score=float(best.metrics["score"]), fold_metrics=best.metrics["fold_metrics"],
        sharpe=sharpe_ratio(returns), deflated_sharpe=deflated_sharpe_ratio(returns, trial_sharpes, n_tried),
        n_trials=n_tried, trial_sharpes=trial_sharpes, model_path=model_path, storage_path=Path(grid.experiment_path),
        code_version=code_version(), started_at=started, finished_at=datetime.now(UTC),
        nodes=tuple(sorted({r.metrics["node_id"] for r in finished})),
        fit_seconds=sum(r.metrics.get("fit_s", 0.0) for r in results if r.metrics), problem=problem)
