"""Multi-node placement on a real `ray.cluster_utils.Cluster` whose nodes advertise fake GPUs, and the cost
estimate's node-seconds on a cluster whose nodes come and go.

Runs in its own pytest session (`-m cluster`): the cluster needs its own Ray, apart from the shared one. The
tests use a few different clusters, one at a time (`Clusters`): tests of one cluster are next to each other,
in file order, and the ones that add or remove nodes come last.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import ray
from ray._private.state import state
from ray.cluster_utils import Cluster

from evaluator.config import EvalConfig
from evaluator.run.driver import evaluate

pytestmark = pytest.mark.cluster


class Clusters:
    """At most one `Cluster` (and this process's connection to it) at a time: asking for another shuts the
    current one down first."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.cluster: Cluster | None = None

    def use(self, name: str, head: dict, nodes: list[dict]) -> Cluster:
        if self.name == name and self.cluster is not None:
            return self.cluster
        self.shutdown()
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        cluster = Cluster(initialize_head=True, head_node_args=head)
        for node in nodes:
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        self.name, self.cluster = name, cluster
        return cluster

    def shutdown(self) -> None:
        if self.cluster is not None:
            ray.shutdown()
            self.cluster.shutdown()
        self.name, self.cluster = None, None


@pytest.fixture(scope="module")
def clusters():
    holder = Clusters()
    yield holder
    holder.shutdown()


@pytest.fixture
def two_node_cluster(clusters: Clusters) -> Cluster:
    return clusters.use("two nodes", {"num_cpus": 2, "num_gpus": 2}, [{"num_cpus": 2, "num_gpus": 2}])


@pytest.fixture
def gpu_cluster(clusters: Clusters) -> Cluster:
    """A head that runs nothing (as on KubeRay), a node of 8 CPUs and 1 GPU, one of 4 CPUs and 2 GPUs."""
    nodes = [{"num_cpus": 8, "num_gpus": 1}, {"num_cpus": 4, "num_gpus": 2}]
    return clusters.use("gpu nodes", {"num_cpus": 0, "num_gpus": 0}, nodes)


def alive_worker_nodes() -> dict[str, str]:
    """Actor id -> node id of each alive RayEvalWorker actor."""
    return {
        actor_id: actor["Address"]["NodeID"]
        for actor_id, actor in state.actor_table(None).items()
        if actor.get("ActorClassName") == "RayEvalWorker" and actor.get("State") == "ALIVE"
    }


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
        hosts = set(alive_worker_nodes().values())
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


# -- GPU nodes filled ---------------------------------------------------------------------------------------------

GPU_RUN = {
    "policy_uris": ("builtin://navigator", "builtin://random"),
    "suite": "smoke",
    "device": "cuda",
    "episodes": 4,
    "shard_size": 1,  # 16 units: enough for 12 workers
    "replays": False,
}


def node_cpus() -> dict[str, float]:
    return {node["NodeID"]: node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node["Alive"]}


def test_cuda_fills_each_gpu_node_with_workers_sharing_its_gpus(gpu_cluster, tmp_path: Path):
    """No sizing flags: one worker per CPU of each GPU node, pinned there, the node's GPUs shared among them (8
    x 1/8 of one GPU, 4 x 1/2 of two), as the report's workers block shows; the head runs none and costs nothing."""
    outcome = evaluate(EvalConfig(**GPU_RUN, data_dir=tmp_path))
    assert not outcome.failed
    workers = outcome.report.workers
    cpus = node_cpus()
    assert sorted(Counter(cpus[w.node_id] for w in workers).items()) == [(4.0, 4), (8.0, 8)]
    for node, shares in [(n, [w.gpu_share for w in workers if w.node_id == n]) for n in {w.node_id for w in workers}]:
        assert shares == [0.125] * 8 if cpus[node] == 8 else shares == [0.5] * 4
        per_gpu: dict[str, float] = defaultdict(float)
        for worker in (w for w in workers if w.node_id == node):
            assert len(worker.gpu_ids) == 1, "a fractional share lives on one GPU"
            per_gpu[worker.gpu_ids[0]] += worker.gpu_share
        assert len(per_gpu) == (1 if cpus[node] == 8 else 2) and max(per_gpu.values()) <= 1.0
    assert {w.device for w in workers} == {"cpu"}, "no CUDA here: every worker falls back to cpu"
    cost = outcome.report.cost
    assert cost is not None and set(cost.node_types) == {"local"} and cost.node_types["local"].nodes == 2
    assert cost.total_usd == 0.0 and cost.unpriced == []


def test_explicit_workers_keep_whole_gpus(gpu_cluster, tmp_path: Path):
    outcome = evaluate(EvalConfig(**GPU_RUN, num_workers=3, data_dir=tmp_path))
    workers = outcome.report.workers
    assert len(workers) == 3 and {w.gpu_share for w in workers} == {1.0}
    assert len({(w.node_id, w.gpu_ids[0]) for w in workers}) == 3, "each holds its own GPU"


# -- the cost estimate ------------------------------------------------------------------------------------------

PRICES = "as_of: 2025-05-01\nsource: test\nprices: {m6i.large: 0.096, m6i.xlarge: 0.192, local: 0.0}\n"


def test_cost_counts_the_time_up_of_each_node_that_ran_workers(clusters: Clusters, tmp_path: Path):
    """Node A runs the workers from the start; node B joins, A is removed mid-run, the workers are replaced on
    B. The report's node-seconds per type agree with the lifetimes seen here, within the clock's resolution."""
    cluster = clusters.use("cost", {"num_cpus": 0}, [{"num_cpus": 2, "labels": {"instance-type": "m6i.large"}}])
    [node_a] = cluster.worker_nodes
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    config = EvalConfig(
        policy_uris=("builtin://navigator", "builtin://random"),
        suite="navigation",
        env="walls",
        episodes=96,  # 96 units of ~0.05 s: the evaluation is still running when A goes
        shard_size=2,
        num_workers=2,
        reuse_results=False,
        replays=False,
        data_dir=tmp_path,
        prices_file=prices,
    )
    outcome = []
    evaluating = threading.Event()
    began = time.time()

    def progress(done: int, _total: int) -> None:
        if done:  # a unit is in: the evaluation runs (a first call with 0 comes before any unit)
            evaluating.set()

    runner = threading.Thread(target=lambda: outcome.append(evaluate(config, on_progress=progress)))
    runner.start()
    deadline = time.monotonic() + 60
    while not alive_worker_nodes() and time.monotonic() < deadline:
        time.sleep(0.05)
    workers_seen = time.time()
    assert alive_worker_nodes(), "no worker started"
    before_b = time.time()
    cluster.add_node(num_cpus=2, labels={"instance-type": "m6i.xlarge"})
    cluster.wait_for_nodes()
    b_up = time.time()
    assert evaluating.wait(60), "no unit finished"
    cluster.remove_node(node_a)
    a_down = time.time()
    runner.join(timeout=300)
    ended = time.time()
    [done] = outcome
    cost = done.report.cost
    assert done.report.timing.workers_replaced >= 1 and not done.failed
    assert set(cost.node_types) == {"m6i.large", "m6i.xlarge"}, "the head ran no worker: not counted"
    held_a = cost.node_types["m6i.large"].node_seconds
    held_b = cost.node_types["m6i.xlarge"].node_seconds
    clock = 2.5  # the clock's one-second samples, the GCS noticing a removed node, a busy machine
    assert a_down - workers_seen - clock <= held_a <= a_down - began + clock
    assert ended - b_up - clock <= held_b <= ended - before_b + 0.5
    assert cost.total_usd == pytest.approx((held_a * 0.096 + held_b * 0.192) / 3600)
    assert sum(c.usd for c in cost.checkpoints) == pytest.approx(cost.total_usd)
    assert cost.usd_per_million_agent_steps == pytest.approx(cost.total_usd / done.report.timing.agent_steps * 1e6)
