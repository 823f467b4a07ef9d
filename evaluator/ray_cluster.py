"""Connecting to Ray and sizing the worker pool: attach or start, how many actors, with which resources.

Resources are chosen here, where the workers are launched (not baked into the actor class).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence

import ray
from ray.exceptions import RayError

from actors.eval_worker import EvalWorker
from actors.protocol import WorkerStats
from evaluator.config import Device, EvalConfig
from sim.errors import ServiceUnavailable, UsageError, first_line

logger = logging.getLogger(__name__)


class RayEvalWorker(EvalWorker):
    """EvalWorker told its GPU ids and node by Ray (only known inside the actor process)."""

    def __init__(self, **kwargs: object) -> None:
        context = ray.get_runtime_context()
        super().__init__(gpu_ids=[str(i) for i in ray.get_gpu_ids()], node_id=context.get_node_id(), **kwargs)


def connect(config: EvalConfig) -> tuple[float, bool]:
    """Attach to the running Ray (tests, `ray job submit` sets RAY_ADDRESS) or start a local one.
    Returns (seconds spent, whether we initialised this process's connection and so must shut it down)."""
    if config.ray_address:
        check_reachable(config.ray_address)
    if ray.is_initialized():
        return 0.0, False
    started = time.perf_counter()
    try:
        if config.ray_address:
            ray.init(address=config.ray_address, logging_level=logging.WARNING)
        else:
            # address="local": always a fresh instance, never a cluster someone `ray start`ed on this machine.
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, TimeoutError) as exc:  # the cluster went away or did not answer: an outage
        where = config.ray_address or "a local Ray instance"
        raise ServiceUnavailable(f"cannot connect to {where}: {first_line(exc)}; retry when it is up") from None
    except (RayError, RuntimeError, ValueError) as exc:
        where = config.ray_address or "a local Ray instance"
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


def worker_count(config: EvalConfig, resources: dict[str, float], num_units: int) -> int:
    """Explicit --num-workers, else as many as the cluster's CPUs (or GPUs for cuda) hold; never more
    workers than units."""
    if config.device is Device.CUDA and resources.get("GPU", 0) <= 0:
        raise UsageError("--device cuda but the Ray cluster has no GPU; use --device cpu or a GPU cluster")
    if config.num_workers:
        count = config.num_workers
    else:
        count = int(resources.get("CPU", 1) // config.cpus_per_worker)
        if config.device is Device.CUDA:
            count = min(count, int(resources.get("GPU", 0) // config.gpus_per_worker))
    return max(1, min(count, num_units))


def worker_factory(config: EvalConfig) -> Callable[[], ray.actor.ActorHandle]:
    """Resources are explicit: without num_cpus an actor asking for GPUs would also take a whole CPU.
    No Ray restarts: the scheduler replaces a dead worker itself, so its accounting of in-flight units
    never races an actor coming back."""
    gpus = config.gpus_per_worker if config.device is Device.CUDA else 0
    actor = ray.remote(RayEvalWorker).options(num_cpus=config.cpus_per_worker, num_gpus=gpus, max_restarts=0)
    threads = max(1, int(config.cpus_per_worker))

    def start() -> ray.actor.ActorHandle:
        return actor.remote(
            device=config.device.value,
            num_threads=threads,
            policy_cache_size=config.policy_cache_size,
            trust_remote_code=config.trust_remote_code,
        )

    return start


def worker_stats(workers: Sequence[ray.actor.ActorHandle]) -> list[WorkerStats]:
    """Counters of the workers still alive at the end (one may die after its last unit: its results are
    already in, only its counters are lost)."""
    stats = []
    for worker in workers:
        try:
            stats.append(ray.get(worker.stats.remote()))
        except RayError as exc:
            logger.warning("worker died after its last unit; its counters are lost (%s)", type(exc).__name__)
    return stats
