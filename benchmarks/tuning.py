"""Tuning throughput: the lab's Ray Tune run vs a plain sequential Optuna loop.

Two strategies x 16 trials on the same synthetic market. The reference runs the same TPE
sampler (same seed) with Optuna's successive-halving pruner (the synchronous sibling of
ASHA) and the identical walk-forward XGBoost fits in one process, each fit using both
cores (nthread=2), and then scores the best params on the holdout and fits them on all
rows, as the lab does before it returns (its out-of-sample figures and the model it saves).
The lab runs what ``lab tune`` runs: both strategies in one Tune run (``tune_strategies``),
one single-thread trial per CPU side by side.

Last line: JSON with lab_wall_s, sequential_wall_s, ratio_vs_sequential (lab / sequential,
lower is better), trial_overhead_s (Tune's wall time per trial beyond fitting) and trials
per minute of each. ``--quick`` shrinks the market and the trial count to finish in < 1 min; ``--symbols`` and
``--days`` set the market's size (the default is a 50-symbol universe over 10 years).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import optuna

from lab.models.synthetic import random_walk_market
from lab.models.tuning import TuneJob, prepare_problem, tune_strategies, tune_strategy
from lab.strategy import get_strategy

STRATEGIES = ("swing", "momentum")


def sequential(strategy: str, data, *, trials: int, folds: int, seed: int, cost: float) -> None:
    spec = get_strategy(strategy)
    problem = prepare_problem(spec, data, folds=folds, seed=seed, cost=cost)
    space = {name: (optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log) if p.is_int
                    else optuna.distributions.FloatDistribution(float(p.low), float(p.high), log=p.log))
             for name, p in spec.search_space.items()}
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=2))

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial._suggest(name, dist) for name, dist in space.items()}
        scores = []
        for fold in problem.walk_forward(params | {"nthread": 2}):
            scores.append(fold.metrics[problem.metric])
            trial.report(float(np.nanmean(scores)), len(scores))
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.nanmean(scores))

    study.optimize(objective, n_trials=trials)
    problem.score_holdout(study.best_params | {"nthread": 2})  # the figures the gate reads, as the lab's run ends
    problem.fit(study.best_params, threads=2)  # and the final model on all rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--symbols", type=int, default=None, help="market width (default 50; 8 with --quick)")
    parser.add_argument("--days", type=int, default=None, help="bars per symbol (default 2520; 600 with --quick)")
    args = parser.parse_args()
    # default: a 50-symbol universe over 10 years of daily bars, the size tuning is for
    trials, symbols, days = (6, 8, 600) if args.quick else (16, 50, 2520)
    symbols, days = args.symbols or symbols, args.days or days
    folds, seed, cost = 4, 7, 0.0022
    data = random_walk_market(symbols=symbols, days=days, signal=0.3, noise_features=5, seed=seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    import ray

    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as storage:
        tune_strategy("swing", data.iloc[:2000], trials=2, time_budget_s=60, seed=seed, folds=2,
                      storage_dir=storage, cost=cost)  # warm-up: workers, imports
        started = time.perf_counter()
        results = tune_strategies([TuneJob(strategy=name, data=data, cost=cost) for name in STRATEGIES],
                                  trials=trials, time_budget_s=3600, seed=seed, folds=folds, storage_dir=storage)
        lab_wall = time.perf_counter() - started
        fit_s = sum(result.fit_seconds for result in results)
    slots = min(int(ray.cluster_resources()["CPU"]), trials)
    ray.shutdown()

    started = time.perf_counter()
    for name in STRATEGIES:
        sequential(name, data, trials=trials, folds=folds, seed=seed, cost=cost)
    sequential_wall = time.perf_counter() - started

    total = trials * len(STRATEGIES)
    print(json.dumps({
        "trials": total, "rows": len(data), "folds": folds, "cpus": slots,
        "lab_wall_s": round(lab_wall, 3), "sequential_wall_s": round(sequential_wall, 3),
        "ratio_vs_sequential": round(lab_wall / sequential_wall, 3),
        "trial_overhead_s": round(max(lab_wall * slots - fit_s, 0.0) / total, 3),
        "lab_trials_per_minute": round(60 * total / lab_wall, 2),
        "sequential_trials_per_minute": round(60 * total / sequential_wall, 2),
    }))


if __name__ == "__main__":
    main()
