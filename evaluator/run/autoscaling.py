"""Scale from zero: before an evaluation that asks for GPU workers, make sure the Ray cluster has a GPU node,
asking Ray's autoscaler for one when it has none; after the evaluation, withdraw the request so that the node,
once idle, goes away.

The clusters of cluster/ keep their `gpu` worker group at zero Pods between evaluations (`minReplicas: 0`).
Pending actors would make the autoscaler add a node too, but the driver lays its workers out on the nodes
present (`evaluator.run.worker_layout.plan_workers`) before it starts any actor: so it asks first, for one worker's
shape (`evaluator.run.worker_layout.worker_shape`: 1 CPU, 1 GPU unless sized), and waits for a node that holds it.

Whether an autoscaler could add such a node is the autoscaler's own answer. Ray 2.60 shows a driver no list of
the node types an autoscaler may launch (the GCS's "cluster config", `ray._private.state.state.
get_cluster_config()`, is never written by Ray's own autoscalers), but autoscaler v2 reports, every round, each
requested shape that none of its node types can ever hold (`infeasible_cluster_resource_constraints` of the
GCS's cluster status). So:
- a node holding the shape is alive: nothing to do;
- no autoscaler v2 (a local Ray, a cluster started without it, autoscaler v1): `UsageError` at once, as before;
- autoscaler v2 reports the request infeasible (no node type has the GPUs: e.g. a fixed cluster, whose head
  runs the read-only autoscaler): `UsageError`, within one autoscaler round (1-5 s);
- else wait, logging every 10 s; no node within `--scale-up-timeout`: `ServiceUnavailable` (exit 3: the GPU
  node group may be out of capacity, a retry may succeed).

The request is cluster-wide: `request_resources` replaces whatever any driver asked before, and it outlives a
driver that is killed. `GpuNodes.release()` runs in the driver's `finally`; while waiting, the request is
asserted again every 10 s, so another driver's release cannot cancel it. A request left by a killed driver
keeps one GPU node up until the next evaluation's release.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from time import monotonic, sleep

import ray
from ray.exceptions import RayError
from ray.util.client import ray as ray_client

from evaluator.config import Device, Workers
from evaluator.run.worker_layout import worker_shape
from sim.errors import ServiceUnavailable, UsageError, first_line

logger = logging.getLogger(__name__)

LOG_EVERY_S = 10.0
"""How often the wait says how long it has waited (and asserts the request again)."""
POLL_S = 1.0
"""Between two looks at the nodes and the autoscaler's status (one GCS call each)."""
NO_GPU = "--device cuda but the Ray cluster has no GPU"


class GpuNodes:
    """`ensure()` before sizing the worker pool, `release()` in the same `finally` that kills the workers."""

    def __init__(self, workers: Workers) -> None:
        self.workers = workers
        self.bundle = worker_shape(workers)
        """One worker's resources: a node holding it can host at least one worker."""
        self.requested = False
        self.scale_up_s: float | None = None
        """Seconds from the request to the node's arrival, when one was requested."""

    def ensure(self) -> None:
        """Return when an alive node holds one worker (at once for --device cpu); raise as the module says."""
        if self.workers.device is not Device.CUDA or fits_a_node(ray.nodes(), self.bundle):
            return
        if ray_client.is_connected():
            raise UsageError(
                f"{NO_GPU}, and through a ray:// address the driver cannot ask the autoscaler for a GPU node; "
                "use the GCS address (host:6379) or `ray job submit`, or --device cpu"
            )
        if not autoscaler_v2_enabled():
            raise UsageError(f"{NO_GPU} and no autoscaler (v2) that could add one; use --device cpu or a GPU cluster")
        timeout_s = self.workers.scale_up_timeout
        logger.info("no GPU node in the Ray cluster: asking the autoscaler for one holding %s", self.bundle)
        self._request()
        self.scale_up_s = self._wait(timeout_s)
        logger.info("a GPU node joined %.1f s after the request", self.scale_up_s)

    def release(self) -> None:
        """Withdraw the request (if this driver made one) so that the autoscaler may remove the idle node."""
        if not self.requested:
            return
        self.requested = False
        try:
            request_resources(bundles=[])
        except (RayError, ConnectionError, TimeoutError, RuntimeError) as exc:  # the cluster may be what failed
            logger.warning("could not withdraw the GPU node request (%s); the node stays up until the next one's", exc)

    def _request(self) -> None:
        try:
            request_resources(bundles=[self.bundle])
        except (RayError, ConnectionError, TimeoutError) as exc:
            raise ServiceUnavailable(f"cannot ask the Ray autoscaler for a GPU node: {first_line(exc)}") from None
        self.requested = True

    def _wait(self, timeout_s: float) -> float:
        """Seconds until a node holding the bundle is alive; raises UsageError when the autoscaler says none of
        its node types can, ServiceUnavailable after `timeout_s`."""
        started = monotonic()
        asked_at_version = None  # the GCS's state version once our request is in it
        next_log = started + LOG_EVERY_S
        while True:
            if fits_a_node(ray.nodes(), self.bundle):
                return monotonic() - started
            status = cluster_status()
            if asked_at_version is None:
                asked_at_version = status.cluster_resource_state.cluster_resource_state_version
            if is_infeasible(status, self.bundle, asked_at_version):
                raise UsageError(
                    f"{NO_GPU}, and no node type of its autoscaler has {self.bundle['GPU']:g} GPU and "
                    f"{self.bundle['CPU']:g} CPU for one worker; use --device cpu, smaller --gpus-per-worker / "
                    "--cpus-per-worker, or a GPU worker group"
                )
            waited = monotonic() - started
            if waited >= timeout_s:
                raise ServiceUnavailable(
                    f"no GPU node joined the Ray cluster within {timeout_s:g} s of asking its autoscaler "
                    "(--scale-up-timeout); the GPU node group may be out of capacity: retry later"
                )
            if monotonic() >= next_log:
                logger.info("waiting for a GPU node from the autoscaler: %.0f s", waited)
                next_log += LOG_EVERY_S
                self._request()  # again: another driver's release may have replaced it
            sleep(POLL_S)


def fits_a_node(nodes: Sequence[Mapping], bundle: Mapping[str, float]) -> bool:
    """Whether an alive node's total resources hold `bundle` (`nodes`: `ray.nodes()`)."""
    return any(
        node["Alive"] and all(node["Resources"].get(name, 0.0) >= amount for name, amount in bundle.items())
        for node in nodes
    )


def is_infeasible(status, bundle: Mapping[str, float], asked_at_version: int) -> bool:
    """Whether autoscaler v2, having seen our request (its last seen state version is at least the one that
    held it), lists `bundle` among the requests none of its node types can hold. `status`: a
    `GetClusterStatusReply`."""
    state = status.autoscaling_state
    if state.last_seen_cluster_resource_state_version < asked_at_version:
        return False
    wanted = {name: float(amount) for name, amount in bundle.items()}
    return any(
        dict(request.request.resources_bundle) == wanted
        for constraint in state.infeasible_cluster_resource_constraints
        for request in constraint.resource_requests
    )


def autoscaler_v2_enabled() -> bool:
    """What the cluster's head says (the GCS's flag, set when the head runs autoscaler v2); not this process's
    environment."""
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    try:
        return is_autoscaler_v2(fetch_from_server=True)
    except (RayError, ConnectionError, TimeoutError) as exc:
        raise ServiceUnavailable(f"cannot read the Ray cluster's autoscaler setting: {first_line(exc)}") from None


def cluster_status():
    """The GCS's cluster status (`GetClusterStatusReply`): node states, the resource requests, and what the
    autoscaler last reported. `ray.autoscaler.v2.sdk.get_cluster_status` reads the same reply but drops the
    infeasible requests, so it is parsed here."""
    from ray._raylet import GcsClient
    from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply

    try:
        raw = GcsClient(ray.get_runtime_context().gcs_address).get_cluster_status(timeout_s=10)
    except (RayError, ConnectionError, TimeoutError) as exc:
        raise ServiceUnavailable(f"cannot read the Ray autoscaler's status: {first_line(exc)}") from None
    reply = GetClusterStatusReply()
    reply.ParseFromString(raw)
    return reply


def request_resources(bundles: list[dict[str, float]]) -> None:
    """`ray.autoscaler.sdk.request_resources` (v2: a cluster resource constraint in the GCS); imported late,
    as the rest of Ray's autoscaler."""
    from ray.autoscaler.sdk import request_resources as ray_request_resources

    ray_request_resources(bundles=bundles)
