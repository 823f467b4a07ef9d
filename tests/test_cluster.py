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
