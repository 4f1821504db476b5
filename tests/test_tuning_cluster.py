"""Tuning on a multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and a worker node).

It runs in a subprocess with its own Ray, so it neither joins nor disturbs the shared
``ray_session`` of the test process.
"""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import ray
    from ray.cluster_utils import Cluster
    from lab.models import tune_strategy
    from lab.models.synthetic import random_walk_market
    from lab.strategy import Param

    # the head (where the driver runs) has no CPU: every trial must run on a worker node
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": 100 * 1024**2, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=100 * 1024**2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    space = {"max_depth": Param(default=3, low=2, high=3), "n_estimators": Param(default=20, low=10, high=30)}
    try:
        result = tune_strategy("swing", random_walk_market(symbols=3, days=300, signal=0.6, seed=5),
                               trials=4, time_budget_s=240, seed=7, folds=2, storage_dir=sys.argv[1],
                               search_space=space)
        print(json.dumps({"nodes": result.nodes, "auc": result.oos_score, "trials": result.n_trials,
                          "head": cluster.head_node.node_id, "workers": [w.node_id for w in workers]}))
    finally:
        ray.shutdown()
        cluster.shutdown()
""")


@pytest.mark.slow
def test_trials_run_on_the_worker_nodes_of_a_cluster(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "runs")], capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["nodes"] and set(report["nodes"]) <= set(report["workers"])
    assert report["head"] not in report["nodes"]
    assert report["trials"] == 4 and report["auc"] > 0.6
