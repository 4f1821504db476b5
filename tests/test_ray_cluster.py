"""The lab on a running multi-node Ray cluster reached through ``RAY_ADDRESS``.

A subprocess starts its own cluster (``ray.cluster_utils.Cluster``: a head with no CPU and two
worker nodes), so the shared ``ray_session`` is neither joined nor disturbed; a second, fresh
process then joins it the way the lab's commands do, through ``RAY_ADDRESS`` and
``lab.runtime.ensure_ray``, with token authentication on both sides, and fans features out on it.
"""

import json
import os
import subprocess
import sys
import textwrap

CLUSTER = textwrap.dedent("""
    import os, subprocess, sys
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": 100 * 1024**2, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=100 * 1024**2)
    cluster.wait_for_nodes()
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    try:
        done = subprocess.run([sys.executable, "-c", sys.argv[1]], env=env, capture_output=True, text=True,
                              timeout=300)
        sys.stderr.write(done.stderr[-3000:])
        print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}")
        print(cluster.address)
    finally:
        cluster.shutdown()
""")

DRIVER = textwrap.dedent("""
    import json, os
    from lab.features import compute_universe_features
    from lab.runtime import ensure_ray
    from tests.test_features_support import universe

    ensure_ray()
    import ray

    bars = universe(12, 300, seed=3)
    on_ray = compute_universe_features(bars, "technical@1", use_ray=True)
    serial = compute_universe_features(bars, "technical@1", use_ray=False)
    print(json.dumps({"auth_mode": os.environ.get("RAY_AUTH_MODE"), "nodes": len(ray.nodes()),
                      "gcs": ray.get_runtime_context().gcs_address, "symbols": len(on_ray),
                      "same": all(on_ray[s].equals(serial[s]) for s in bars)}))
""")


def test_features_fan_out_on_a_cluster_joined_through_ray_address(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # the cluster is started with token auth, as `ray start` does in Ray 2.60; the driver's
    # RAY_AUTH_MODE must match it (the lab passes the user's setting through)
    env = {**os.environ, "LAB_HOME": str(tmp_path), "PYTHONPATH": root, "RAY_AUTH_MODE": "token"}
    done = subprocess.run([sys.executable, "-c", CLUSTER, DRIVER], capture_output=True, text=True, timeout=400,
                          env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    *_, line, address = done.stdout.strip().splitlines()
    report = json.loads(line)
    assert report, done.stderr[-3000:]
    assert report["gcs"] == address and report["nodes"] == 3
    assert report["auth_mode"] == "token"
    assert report["symbols"] == 12 and report["same"]
