"""Multi-node placement on a real `ray.cluster_utils.Cluster` whose nodes advertise fake GPUs.

Runs in its own pytest session (`-m cluster`): the cluster needs its own Ray, apart from the shared one.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from evaluator.config import EvalConfig
from evaluator.driver import evaluate

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def two_node_cluster():
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 2})
    cluster.add_node(num_cpus=2, num_gpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.parametrize("gpus_per_worker", [1.0, 0.5])
def test_cuda_workers_spread_over_fake_gpu_nodes_and_fall_back_to_cpu(
    two_node_cluster, tmp_path: Path, gpus_per_worker: float
):
    """Four actors, two CPUs per node: two actors per node. With whole GPUs each actor of a node holds its
    own GPU id; with half GPUs Ray packs both actors of a node onto one GPU (fractions share a device)."""
    config = EvalConfig(
        policy_uris=("builtin://navigator", "builtin://random"),
        suite="smoke",
        device="cuda",
        gpus_per_worker=gpus_per_worker,
        num_workers=4,
        shard_size=1,
        data_dir=tmp_path,
    )
    outcome = evaluate(config)
    workers = outcome.report.workers
    assert len(workers) == 4
    assert sorted(Counter(w.node_id for w in workers).values()) == [2, 2]
    for node in {w.node_id for w in workers}:
        ids = [w.gpu_ids for w in workers if w.node_id == node]
        assert all(len(gpu_ids) == 1 for gpu_ids in ids)
        per_gpu = Counter(gpu_ids[0] for gpu_ids in ids)
        assert max(per_gpu.values()) * gpus_per_worker <= 1.0
        if gpus_per_worker == 1.0:
            assert len(per_gpu) == 2, "actors on one node must hold distinct GPUs"
    assert {w.device for w in workers} == {"cpu"}, "no CUDA here: every worker must fall back to cpu"
    assert not outcome.failed
    assert sum(w.policy_loads for w in workers) == outcome.report.timing.policy_loads


def test_removing_a_node_mid_run_loses_nothing(two_node_cluster, tmp_path: Path):
    """Four workers over three nodes; a worker-hosting node is removed mid-run; the report equals a clean run."""
    import threading
    import time

    from ray._private.state import state

    two_node_cluster.add_node(num_cpus=2)
    two_node_cluster.wait_for_nodes()
    config = EvalConfig(
        policy_uris=("builtin://navigator", "builtin://random"),
        suite="navigation",
        env="walls",
        episodes=24,
        shard_size=2,
        num_workers=4,
        reuse_results=False,
        replays=False,
        data_dir=tmp_path,
    )
    clean = evaluate(config.model_copy(update={"run_name": "clean"}))
    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(evaluate(config.model_copy(update={"run_name": "cut"}))))
    runner.start()
    removable = {node.node_id: node for node in two_node_cluster.worker_nodes}  # never the head
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        hosts = {
            actor["Address"]["NodeID"]
            for actor in state.actor_table(None).values()
            if actor.get("ActorClassName") == "RayEvalWorker" and actor.get("State") == "ALIVE"
        }
        victim = next((removable[n] for n in hosts if n in removable), None)
        time.sleep(0.05)
    assert victim is not None, "no worker landed on a removable node"
    time.sleep(0.5)
    two_node_cluster.remove_node(victim)
    runner.join(timeout=300)
    [cut] = outcome
    assert cut.report.timing.workers_replaced >= 1
    metrics = [[(c.name, c.metrics) for c in p.checkpoints] for p in cut.report.policies]
    assert metrics == [[(c.name, c.metrics) for c in p.checkpoints] for p in clean.report.policies]
