"""The worker layout (`evaluator.run.worker_layout`), without Ray: GPU nodes filled with fractional-GPU workers,
explicit sizing keeping the uniform pool, shares that Ray can place."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evaluator.config import EvalConfig, Workers
from evaluator.run.worker_layout import (
    NodeResources,
    WorkerSlot,
    alive_nodes,
    fill_gpu_nodes,
    gpu_share,
    plan_workers,
    spread,
    worker_shape,
)
from sim.errors import UsageError

A = NodeResources("a", cpus=8, gpus=1)
B = NodeResources("b", cpus=4, gpus=2)
CPU_ONLY = NodeResources("c", cpus=16, gpus=0)


def config(**fields) -> Workers:
    """The workers slice of an evaluation with these options (what the layout takes)."""
    return EvalConfig(policy_uris=("builtin://random",), **fields).workers


@pytest.mark.parametrize(
    ("gpus", "count", "share"),
    [(1, 12, 0.0833), (1, 8, 0.125), (2, 4, 0.5), (2, 3, 0.5), (4, 48, 0.0833), (4, 2, 1.0), (4, 3, 1.0), (1, 1, 1.0)],
)
def test_gpu_share(gpus: float, count: int, share: float):
    assert gpu_share(gpus, count) == share


@given(gpus=st.integers(1, 8), count=st.integers(1, 400))
def test_shares_fit_the_node_and_one_device_each(gpus: int, count: int):
    """Ray's precision is 1e-4 and it packs a fraction on one GPU: the shares never add up to more than the node
    has, the workers packed on one device fit it, and no worker holds more than the one GPU it drives."""
    share = gpu_share(gpus, count)
    assert share >= 1e-4 and share * count <= gpus + 1e-9
    assert share * 10_000 == pytest.approx(round(share * 10_000))
    if share < 1:
        assert math.ceil(count / gpus) * share <= 1 + 1e-9
    else:
        assert share == 1.0 and count <= gpus


def test_gpu_nodes_are_filled_one_worker_per_cpu_pinned_to_their_node():
    slots = plan_workers(config(device="cuda"), [A, B, CPU_ONLY], num_units=100)
    by_node = {node: [s for s in slots if s.node_id == node] for node in ("a", "b", "c")}
    assert len(by_node["a"]) == 8 and {s.num_gpus for s in by_node["a"]} == {0.125}
    assert len(by_node["b"]) == 4 and {s.num_gpus for s in by_node["b"]} == {0.5}
    assert by_node["c"] == [], "a CPU-only node gets no cuda worker"
    assert {s.num_cpus for s in slots} == {1.0}
    assert [s.node_id for s in slots[:4]] == ["a", "b", "a", "b"], "slots alternate between nodes"


def test_a_big_gpu_node_steps_on_every_core():
    slots = fill_gpu_nodes([NodeResources("g5.12xlarge", cpus=48, gpus=4)], 1.0, max_workers=1000)
    assert len(slots) == 48 and slots[0].num_gpus == 0.0833
    assert sum(s.num_gpus for s in slots) <= 4


def test_fewer_units_than_cpus_trims_evenly_and_widens_the_shares():
    slots = plan_workers(config(device="cuda"), [A, B], num_units=6)
    assert [s.node_id for s in slots].count("a") == 3 and [s.node_id for s in slots].count("b") == 3
    assert {s.num_gpus for s in slots if s.node_id == "a"} == {0.3333}
    assert {s.num_gpus for s in slots if s.node_id == "b"} == {0.5}, "3 workers on 2 GPUs: 2 share one"
    assert plan_workers(config(device="cuda"), [A, B], num_units=2) == [
        WorkerSlot(1.0, 1.0, "a"),
        WorkerSlot(1.0, 1.0, "b"),
    ]


def test_spread_is_even_within_capacities():
    assert spread([8, 4], 6) == [3, 3]
    assert spread([8, 2], 9) == [7, 2]
    assert spread([1, 1], 5) == [1, 1]
    assert spread([0, 3], 2) == [0, 2]


def test_cpus_per_worker_sizes_the_filled_layout():
    slots = plan_workers(config(device="cuda", cpus_per_worker=2), [A, B], num_units=100)
    assert [s for s in slots if s.node_id == "a"] == [WorkerSlot(2.0, 0.25, "a")] * 4
    assert [s for s in slots if s.node_id == "b"] == [WorkerSlot(2.0, 1.0, "b")] * 2, "2 workers, 2 GPUs: whole"


def test_explicit_sizing_keeps_the_uniform_pool():
    assert plan_workers(config(device="cuda", num_workers=3), [A, B], 100) == [WorkerSlot(1.0, 1.0)] * 3
    assert plan_workers(config(device="cuda", gpus_per_worker=0.5), [A, B], 100) == [WorkerSlot(1.0, 0.5)] * 6
    assert plan_workers(config(), [A, B, CPU_ONLY], 100) == [WorkerSlot(1.0, 0.0)] * 28
    assert plan_workers(config(cpus_per_worker=4), [A, B], 2) == [WorkerSlot(4.0, 0.0)] * 2
    assert plan_workers(config(num_workers=50), [A], 10) == [WorkerSlot(1.0, 0.0)] * 10, "never more than units"


def test_cuda_without_gpus_or_cpus_is_bad_usage():
    with pytest.raises(UsageError, match="--device cuda but the Ray cluster has no GPU"):
        plan_workers(config(device="cuda"), [CPU_ONLY], 10)
    with pytest.raises(UsageError, match="no GPU node has 16 CPUs for a worker"):
        plan_workers(config(device="cuda", cpus_per_worker=16), [A, B], 10)


def test_alive_nodes_reads_ray_nodes():
    raw = [
        {"NodeID": "z", "Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0, "memory": 1e9}},
        {"NodeID": "dead", "Alive": False, "Resources": {"CPU": 4.0}},
        {"NodeID": "head", "Alive": True, "Resources": {"memory": 1e9}},
    ]
    assert alive_nodes(raw) == [NodeResources("head", 0.0, 0.0), NodeResources("z", 4.0, 1.0)]


def test_worker_shape_is_one_worker_of_the_run():
    assert worker_shape(config(device="cuda")) == {"CPU": 1.0, "GPU": 1.0}
    assert worker_shape(config(device="cuda", cpus_per_worker=2, gpus_per_worker=0.25)) == {"CPU": 2.0, "GPU": 0.25}
