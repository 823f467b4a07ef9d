"""A Ray head running Ray's real autoscaler (v2) over its fake multi-node provider: worker "nodes" are raylets
the autoscaler starts on this machine when work (or `request_resources`) needs them, and stops when idle.

Ray's `ray.cluster_utils.AutoscalingCluster` does the same with `ray stop --force` (every Ray process of the
machine) and the provider's example config, which the wheel does not ship; here:
- the whole autoscaling config is written out, with provider type `external` naming `FakeMultiNodeProvider`
  (type `fake_multinode` would make Ray read its defaults from that missing example file);
- the head is `RayHead`'s (`tests/support/ray_head.py`): free ports, its own temp dir and token, `ray start
  --block` in its own process session; the provider starts the worker nodes from the autoscaler's process, so
  they are in that session too, and `stop()` ends them by session id (never `ray stop`);
- the provider's `gcs_address` is the head's own port, so the fake nodes need not find a GCS on 6379 and several
  such clusters may run at once.

`python -m tests.support.autoscaler watch GCS_ADDRESS OUT` polls the GCS's cluster status (with the token of
RAY_AUTH_TOKEN) and appends one JSON line per second to OUT: the alive nodes' types and resources and the
resource requests (`request_resources`) in force. The test reads the timeline from it instead of connecting to
Ray itself (its process may already hold another cluster's token).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ray_head import RayHead

FAKE_HEAD_NODE_ID = "f" * 51 + "00000"
"""The provider's id for the head (`fake_multi_node.node_provider.FAKE_HEAD_NODE_ID`); v2 matches it to the node."""
FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
HEAD_TYPE = "ray.head.default"


@dataclass
class AutoscalingHead(RayHead):
    """A `RayHead` (0 CPUs: it runs nothing) whose autoscaler may add nodes of `worker_types` (Ray's
    `available_node_types` entries: resources, min_workers, max_workers, labels)."""

    num_cpus: int = 0
    worker_types: dict[str, dict] = field(default_factory=dict)
    idle_timeout_minutes: float = 0.1
    """Ray's schema takes any number >= 0: 0.1 is 6 s (its own fake-cluster example's value)."""
    update_interval_s: int = 1
    """The autoscaler's round (AUTOSCALER_UPDATE_INTERVAL_S; Ray's default 5 s)."""

    def autoscaling_config(self) -> dict:
        return {
            "cluster_name": "fake-autoscaling",
            "max_workers": sum(t.get("max_workers", 0) for t in self.worker_types.values()),
            "provider": {
                "type": "external",
                "module": FAKE_PROVIDER,
                "gcs_address": f"127.0.0.1:{self.ports['gcs']}",
                "head_node_id": FAKE_HEAD_NODE_ID,
                "launch_multiple": True,
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "available_node_types": {
                HEAD_TYPE: {"resources": {"CPU": self.num_cpus}, "node_config": {}, "max_workers": 0},
                **{name: {"node_config": {}, **spec} for name, spec in self.worker_types.items()},
            },
            "head_node_type": HEAD_TYPE,
            "idle_timeout_minutes": self.idle_timeout_minutes,
            "upscaling_speed": 1.0,
            "auth": {},
            "docker": {},
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }

    @property
    def process_env(self) -> dict[str, str]:
        """The head's environment: `env` (the token) plus what the fake provider and autoscaler v2 need. Only
        the head's: a driver must learn from the cluster, not from its own environment, that v2 runs."""
        return {
            **self.env,
            "RAY_FAKE_CLUSTER": "1",
            "RAY_enable_autoscaler_v2": "1",
            "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
            "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
            "AUTOSCALER_UPDATE_INTERVAL_S": str(self.update_interval_s),
        }

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports['gcs']}"

    def extra_start_args(self) -> list[str]:
        """The autoscaling config, written now that the GCS port (which the fake provider's nodes join) is known."""
        config = self.temp_dir / "autoscaling.json"
        config.write_text(json.dumps(self.autoscaling_config(), indent=1))
        return [f"--autoscaling-config={config}"]

    @contextlib.contextmanager
    def watching(self, out: Path) -> Iterator[Path]:
        """The watcher (module docstring) writing to `out` for the body of the `with`."""
        command = [sys.executable, "-m", "tests.support.autoscaler", "watch", self.gcs_address, str(out)]
        watcher = subprocess.Popen(command, env=self.env, cwd=Path(__file__).resolve().parents[2])
        try:
            yield out
        finally:
            watcher.send_signal(signal.SIGTERM)
            try:
                watcher.wait(10)
            except subprocess.TimeoutExpired:
                watcher.kill()
                watcher.wait(5)


@contextlib.contextmanager
def running_autoscaling_head(temp_dir: Path, worker_types: dict[str, dict], **options) -> Iterator[AutoscalingHead]:
    """A started head for the body of the `with`; stopped after, with every node the autoscaler started."""
    head = AutoscalingHead(temp_dir=temp_dir, worker_types=worker_types, **options)
    try:
        head.start()
        yield head
    finally:
        head.stop()
    assert head.session_pids() == [], "a process of the head's session (head or fake node) survived stop()"


# -- the watcher ----------------------------------------------------------------------------------------------


def snapshot(gcs_address: str) -> dict:
    """One look at the cluster: alive nodes (type, resources) and the resource requests in force."""
    from ray._raylet import GcsClient
    from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply, NodeStatus

    reply = GetClusterStatusReply()
    reply.ParseFromString(GcsClient(gcs_address).get_cluster_status(timeout_s=5))
    state = reply.cluster_resource_state
    nodes = [
        {"type": node.ray_node_type_name, "resources": dict(node.total_resources), "labels": dict(node.labels)}
        for node in state.node_states
        if node.status != NodeStatus.DEAD
    ]
    requested = [
        dict(request.request.resources_bundle)
        for constraint in state.cluster_resource_constraints
        for request in constraint.resource_requests
    ]
    return {"t": time.time(), "nodes": nodes, "requested": requested}


def watch(gcs_address: str, out: Path, every_s: float = 0.5) -> None:
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    with out.open("a", encoding="utf-8") as sink:
        while not stop:
            try:
                line = snapshot(gcs_address)
            except Exception as exc:  # noqa: BLE001 - a missed sample is a gap in the timeline, not a failure
                line = {"t": time.time(), "error": str(exc)[:200]}
            sink.write(json.dumps(line) + "\n")
            sink.flush()
            time.sleep(every_s)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "watch":
        sys.exit("usage: python -m tests.support.autoscaler watch GCS_ADDRESS OUT")
    watch(sys.argv[2], Path(sys.argv[3]))
