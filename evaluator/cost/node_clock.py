"""The node clock: how long each Ray node was up while the evaluation ran, as the driver saw it.

What Ray 2.60 offers: `ray.nodes()` (public, no dashboard needed) says which nodes are alive, with their
resources and labels, but not when they started or died. The GCS does record `start_time_ms`/`end_time_ms`
per node, reachable only through private modules (`ray._private.worker.global_worker.gcs_client`), and
`ray.util.state.list_nodes` needs the dashboard, which our local `ray.init` does not start. So a daemon thread
samples `ray.nodes()` every second from Ray's start to the end of the evaluation (`NodeLedger` turns the
samples into lifetimes): a node is held from the first sample that saw it alive (the clock's start, for a node
already up) to the first that saw it dead or gone (the clock's stop, for one still up). Each end is within
one interval of the truth; the autoscaler's idle time after the evaluation is not counted.

A node's type (what the price table is keyed by) is its Ray label `instance-type`, else `ray.io/node-group`
(KubeRay's worker group name, which Ray sets from the pod's RAY_NODE_TYPE_NAME), else `local`. KubeRay 1.7
sets labels with a group's top-level `labels:` field (it refuses `rayStartParams.labels`); a plain `ray start`
takes `--labels instance-type=g5.4xlarge`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

INSTANCE_TYPE_LABEL = "instance-type"
NODE_GROUP_LABEL = "ray.io/node-group"
LOCAL = "local"
SAMPLE_S = 1.0
"""How often the clock asks Ray for its nodes: one GCS call, ~1 ms; the error of each lifetime's ends."""


def node_type(labels: Mapping[str, str]) -> str:
    """The price table's key for a node with these Ray labels."""
    return labels.get(INSTANCE_TYPE_LABEL) or labels.get(NODE_GROUP_LABEL) or LOCAL


@dataclass(frozen=True)
class NodeLifetime:
    """A node's time up within the evaluation (Unix seconds)."""

    node_id: str
    node_type: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


class NodeLedger:
    """Samples of the node list in, lifetimes out. Pure: the clock's thread feeds it, tests call it directly."""

    def __init__(self) -> None:
        self._up: dict[str, tuple[str, float]] = {}
        """node id -> (type, first seen alive) of the nodes up at the last sample."""
        self._ended: list[NodeLifetime] = []

    def observe(self, now: float, nodes: Iterable[Mapping[str, Any]]) -> None:
        """One answer of `ray.nodes()` at time `now`: a node seen alive for the first time starts, a node up
        before and now dead or missing ends."""
        alive = {node["NodeID"]: node_type(node.get("Labels") or {}) for node in nodes if node.get("Alive")}
        for node_id in [n for n in self._up if n not in alive]:
            kind, start = self._up.pop(node_id)
            self._ended.append(NodeLifetime(node_id, kind, start, now))
        for node_id, kind in alive.items():
            self._up.setdefault(node_id, (kind, now))

    def close(self, now: float) -> list[NodeLifetime]:
        """Every lifetime, the nodes still up ending `now`."""
        return [*self._ended, *(NodeLifetime(n, kind, start, now) for n, (kind, start) in self._up.items())]


class NodeClock:
    """Samples `list_nodes` (default `ray.nodes`) every `interval_s` on a daemon thread between `start` and
    `stop`. A failed sample (the GCS busy or going away) is skipped: the next one catches up."""

    def __init__(
        self,
        list_nodes: Callable[[], list[dict[str, Any]]] | None = None,
        interval_s: float = SAMPLE_S,
        now: Callable[[], float] = time.time,
    ) -> None:
        if list_nodes is None:
            import ray

            list_nodes = ray.nodes
        self._list_nodes = list_nodes
        self._interval_s = interval_s
        self._now = now
        self._ledger = NodeLedger()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-clock", daemon=True)

    def start(self) -> NodeClock:
        """Take the first sample now (the nodes up count from here), then keep sampling in the background."""
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> list[NodeLifetime]:
        """Stop sampling, take a last sample, and return every node's lifetime up to now."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sample()
        return self._ledger.close(self._now())

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self._sample()

    def _sample(self) -> None:
        try:
            nodes = self._list_nodes()
        except Exception as exc:  # any failure of the node list only costs this sample
            logger.debug("node clock: ray.nodes() failed (%s); next sample in %g s", exc, self._interval_s)
            return
        self._ledger.observe(self._now(), nodes)
