"""Connecting to Ray and launching the worker pool: attach or start (`ray_session`), then one actor per worker
slot (`evaluator.run.worker_layout` decides the slots: how many actors, with which resources, on which nodes;
`worker_factory` starts them, `evaluator.run.ray_executor` runs units on them).

Resources are chosen here, where the workers are launched (not baked into the actor class).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.eval_worker import EvalWorker
from actors.protocol import CoPlayerBytes
from evaluator.config import Workers
from evaluator.cost.estimate import Usage
from evaluator.cost.node_clock import NodeClock, node_type
from evaluator.run.autoscaling import GpuNodes
from evaluator.run.worker_layout import WorkerSlot, alive_nodes, could_host, plan_workers, uniform_slots
from sim.errors import ServiceUnavailable, UsageError, first_line

logger = logging.getLogger(__name__)


class RayEvalWorker(EvalWorker):
    """EvalWorker told its GPU ids and node by Ray (only known inside the actor process)."""

    def __init__(self, **kwargs: object) -> None:
        context = ray.get_runtime_context()
        super().__init__(gpu_ids=[str(i) for i in ray.get_gpu_ids()], node_id=context.get_node_id(), **kwargs)


@dataclass(frozen=True)
class Cluster:
    ray_init_s: float
    """Seconds `connect` took (0 when this process was already connected)."""
    nodes: list[dict[str, Any]]
    """`ray.nodes()` once a node can host a worker."""


@contextlib.contextmanager
def ray_session(workers: Workers, usage: Usage) -> Iterator[Cluster]:
    """Connect (`connect`), make sure a node can host a worker (a GPU node asked of the autoscaler when there is
    none: `evaluator.run.autoscaling.GpuNodes`) and clock every node's time up into `usage.lifetimes` (the cost
    estimate) until the block ends; then withdraw the GPU node request and shut Ray down if we started it. Stop
    the workers inside the block: the idle GPU node may then be removed."""
    ray_init_s, started_ray = connect(workers)
    gpu_nodes = GpuNodes(workers)
    clock = NodeClock().start()
    try:
        gpu_nodes.ensure()
        yield Cluster(ray_init_s=ray_init_s, nodes=ray.nodes())
    finally:
        gpu_nodes.release()
        usage.lifetimes = clock.stop()
        if started_ray:
            ray.shutdown()


def connect(workers: Workers) -> tuple[float, bool]:
    """Attach to the running Ray (tests, `ray job submit` sets RAY_ADDRESS) or start a local one.
    Returns (seconds spent, whether we initialised this process's connection and so must shut it down)."""
    if workers.ray_address:
        check_reachable(workers.ray_address)
    if ray.is_initialized():
        return 0.0, False
    started = time.perf_counter()
    try:
        if workers.ray_address:
            ray.init(address=workers.ray_address, logging_level=logging.WARNING)
        else:
            # address="local": always a fresh instance, never a cluster someone `ray start`ed on this machine.
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, TimeoutError) as exc:  # the cluster went away or did not answer: an outage
        where = workers.ray_address or "a local Ray instance"
        raise ServiceUnavailable(f"cannot connect to {where}: {first_line(exc)}; retry when it is up") from None
    except (RayError, RuntimeError, ValueError) as exc:
        where = workers.ray_address or "a local Ray instance"
        raise UsageError(f"cannot connect to {where}: {first_line(exc)}; check --ray-address") from None
    return time.perf_counter() - started, True


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connect to the GCS (or Ray client) port first: ray.init on a dead address blocks for minutes."""
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if address in ("auto", "local") or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ServiceUnavailable(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check --ray-address / RAY_ADDRESS, "
            "or retry when it is up"
        ) from None


def worker_slots(workers: Workers, ray_nodes: Sequence[Mapping[str, Any]], num_units: int) -> list[WorkerSlot]:
    """The pool for `ray.nodes()`' live nodes (`evaluator.run.worker_layout.plan_workers`)."""
    return plan_workers(workers, alive_nodes(ray_nodes), num_units)


def host_types(ray_nodes: Sequence[Mapping[str, Any]], slots: Sequence[WorkerSlot]) -> set[str]:
    """The node types (`evaluator.cost.node_clock.node_type`) of the live nodes that could host one of `slots`: the
    ones the price table must price before the evaluation starts."""
    resources = {node.node_id: node for node in alive_nodes(ray_nodes)}
    return {
        node_type(raw.get("Labels") or {})
        for raw in ray_nodes
        if raw["NodeID"] in resources and any(could_host(resources[raw["NodeID"]], slot) for slot in slots)
    }


def worker_factory(
    workers: Workers,
    slots: Sequence[WorkerSlot] | None = None,
    co_players: Mapping[str, CoPlayerBytes] | None = None,
) -> Callable[[int], ray.actor.ActorHandle]:
    """`start(i)` starts the actor of slot `i` (default: the uniform pool's resources for every `i`). Resources
    are explicit: without num_cpus an actor asking for GPUs would also take a whole CPU. No Ray restarts: the
    Ray executor (`evaluator.run.ray_executor`) replaces a dead worker itself, so its accounting of in-flight
    units never races an actor coming back; the replacement takes the dead worker's slot (same node, same
    share). Every worker gets the run's co-players' bytes (`co_players`, few and small) once, at its start. A pinned
    slot whose node has gone starts its replacement unpinned with the same share (hard affinity
    to a dead node could never start); it goes wherever Ray, or the autoscaler, finds room."""
    actor = ray.remote(RayEvalWorker)
    default = uniform_slots(workers, [], 1)[0]
    started: set[int] = set()

    def start(index: int) -> ray.actor.ActorHandle:
        slot = slots[index] if slots is not None else default
        options: dict[str, Any] = {"num_cpus": slot.num_cpus, "num_gpus": slot.num_gpus, "max_restarts": 0}
        if slot.node_id is not None:
            if index not in started or _alive(slot.node_id):
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(slot.node_id, soft=False)
            else:
                logger.warning(
                    "worker %d's node %s is gone; its replacement goes where there is room", index, slot.node_id
                )
        started.add(index)
        return actor.options(**options).remote(
            device=workers.device.value,
            num_threads=max(1, int(slot.num_cpus)),
            policy_cache_size=workers.policy_cache_size,
            gpu_share=slot.num_gpus,
            trust_remote_code=workers.trust_remote_code,
            co_players=dict(co_players or {}),
        )

    return start


def _alive(node_id: str) -> bool:
    return any(node["NodeID"] == node_id and node.get("Alive") for node in ray.nodes())
