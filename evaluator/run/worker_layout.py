"""Where the workers go: the cluster's nodes in, one slot per worker out (its node, CPUs and GPU share).

Pure (no Ray): `evaluator.run.ray_cluster` reads `ray.nodes()` and launches one actor per slot.

Why fill GPU nodes: mettagrid's C++ step holds the GIL, so a worker steps its environments on one core. One
worker per GPU leaves a node with 48 vCPUs and 4 GPUs stepping on 4 cores. So with `--device cuda` and no
explicit sizing, every GPU node gets as many workers as it has CPUs for (`floor(CPUs / cpus_per_worker)`),
sharing the node's GPUs in fractions, each pinned to its node: 12 workers x 1/12 GPU on a 12-CPU 1-GPU node.
Explicit `--num-workers` or `--gpus-per-worker` keep the uniform pool (the same resources for every worker,
wherever Ray places it); `--cpus-per-worker` is honoured by both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evaluator.config import Device, Workers
from sim.errors import UsageError

DEFAULT_CPUS_PER_WORKER = 1.0
"""CPUs per worker when `--cpus-per-worker` is not given (one core steps one worker: the GIL)."""
DEFAULT_GPUS_PER_WORKER = 1.0
"""GPUs per worker of the uniform pool (`--device cuda` with `--num-workers`) when `--gpus-per-worker` is not given."""
RESOURCE_UNIT = 10_000
"""Ray keeps resource quantities as fixed point in units of 1/10,000: a share finer than that is lost (or refused)."""


@dataclass(frozen=True)
class NodeResources:
    """A live Ray node's total logical resources (what `ray.nodes()` reports)."""

    node_id: str
    cpus: float
    gpus: float


@dataclass(frozen=True)
class WorkerSlot:
    """One worker's place: the resources its actor asks for, and the node it is pinned to."""

    num_cpus: float
    num_gpus: float
    node_id: str | None = None
    """Pinned there (hard node affinity); None: wherever Ray finds room."""


def alive_nodes(ray_nodes: Iterable[Mapping[str, Any]]) -> list[NodeResources]:
    """The live nodes of a `ray.nodes()` answer, in node id order (so a layout never depends on listing order)."""
    nodes = [
        NodeResources(node["NodeID"], float(node["Resources"].get("CPU", 0)), float(node["Resources"].get("GPU", 0)))
        for node in ray_nodes
        if node.get("Alive")
    ]
    return sorted(nodes, key=lambda node: node.node_id)


def plan_workers(workers: Workers, nodes: Sequence[NodeResources], num_units: int) -> list[WorkerSlot]:
    """The worker slots of this run: the GPU nodes filled (`--device cuda`, no `--num-workers` and no
    `--gpus-per-worker`), else the uniform pool. Never more workers than units; at least one."""
    cuda = workers.device is Device.CUDA
    if cuda and sum(node.gpus for node in nodes) <= 0:
        raise UsageError("--device cuda but the Ray cluster has no GPU; use --device cpu or a GPU cluster")
    cpus = workers.cpus_per_worker or DEFAULT_CPUS_PER_WORKER
    if cuda and workers.num_workers is None and workers.gpus_per_worker is None:
        return fill_gpu_nodes([node for node in nodes if node.gpus > 0], cpus, num_units)
    return uniform_slots(workers, nodes, num_units)


def worker_shape(workers: Workers) -> dict[str, float]:
    """The resources a node must hold for one worker of this run ({CPU, GPU}; GPU counts with --device cuda):
    the explicit sizes, else one CPU and one whole GPU (the filled layout shares a GPU, but needs a node with
    one). What a request to the autoscaler asks for, before any slot exists."""
    return {
        "CPU": workers.cpus_per_worker or DEFAULT_CPUS_PER_WORKER,
        "GPU": workers.gpus_per_worker or DEFAULT_GPUS_PER_WORKER,
    }


def uniform_slots(workers: Workers, nodes: Sequence[NodeResources], num_units: int) -> list[WorkerSlot]:
    """Explicit `--num-workers`, else as many as the cluster's CPUs (and GPUs, for cuda) hold, each with the same
    resources and no pinning."""
    cpus = workers.cpus_per_worker or DEFAULT_CPUS_PER_WORKER
    gpus = (workers.gpus_per_worker or DEFAULT_GPUS_PER_WORKER) if workers.device is Device.CUDA else 0.0
    if workers.num_workers:
        count = workers.num_workers
    else:
        count = int(sum(node.cpus for node in nodes) // cpus)
        if gpus:
            count = min(count, int(sum(node.gpus for node in nodes) // gpus))
    return [WorkerSlot(num_cpus=cpus, num_gpus=gpus)] * max(1, min(count, num_units))


def fill_gpu_nodes(nodes: Sequence[NodeResources], cpus_per_worker: float, max_workers: int) -> list[WorkerSlot]:
    """Every GPU node as many workers as its CPUs hold, trimmed evenly across nodes to `max_workers`, each
    pinned to its node with its share of the node's GPUs (`gpu_share`). Slots alternate between nodes, so the
    first units sent spread over the cluster."""
    capacities = [int(node.cpus // cpus_per_worker) for node in nodes]
    if not any(capacities):
        raise UsageError(
            f"no GPU node has {cpus_per_worker:g} CPUs for a worker; lower --cpus-per-worker, or size the pool "
            "with --num-workers / --gpus-per-worker"
        )
    counts = spread(capacities, max(1, max_workers))
    per_node = [
        [WorkerSlot(num_cpus=cpus_per_worker, num_gpus=gpu_share(node.gpus, count), node_id=node.node_id)] * count
        for node, count in zip(nodes, counts, strict=True)
    ]
    return [slots[rank] for rank in range(max(counts)) for slots in per_node if rank < len(slots)]


def spread(capacities: Sequence[int], total: int) -> list[int]:
    """`total` workers over nodes holding at most `capacities[i]` each, as evenly as they allow (one at a time,
    round robin over the nodes with room); fewer when all are full."""
    counts = [0] * len(capacities)
    left = min(total, sum(capacities))
    while left:
        for i, capacity in enumerate(capacities):
            if left and counts[i] < capacity:
                counts[i] += 1
                left -= 1
    return counts


def gpu_share(gpus: float, count: int) -> float:
    """Each of `count` workers' share of a node's `gpus`. One whole GPU when the node has at least as many GPUs
    as workers (a worker drives one device, `cuda:0` of those Ray gives it: a second would sit idle). Otherwise a
    fraction, because Ray places a fractional request on a single GPU: the workers are spread over the devices
    (at most `ceil(count / devices)` on one) and each gets that device's equal part, rounded down to Ray's
    precision so that the shares never add up to more than a device (0.0833 x 12 on one GPU, 0.5 x 4 on two)."""
    if count <= 0:
        return 0.0
    devices = math.floor(gpus)
    if devices >= count:
        return 1.0
    if devices == 0:  # a node advertising part of one GPU
        return _round_down(gpus / count)
    return _round_down(1.0 / math.ceil(count / devices))


def could_host(node: NodeResources, slot: WorkerSlot) -> bool:
    """Whether `slot`'s worker could run on `node` at all (its node, or enough resources for an unpinned one)."""
    if slot.node_id is not None:
        return slot.node_id == node.node_id
    return node.cpus >= slot.num_cpus and node.gpus >= slot.num_gpus


def _round_down(share: float) -> float:
    return math.floor(round(share * RESOURCE_UNIT, 6)) / RESOURCE_UNIT
