"""Scale from zero (`evaluator.run.autoscaling`).

The `cluster` tests run Ray's real autoscaler v2 over its fake multi-node provider (`tests.support.autoscaler`):
a head with no CPUs for work and one node type with a GPU, at zero nodes, idle timeout 6 s. `policy-evaluator
run --device cuda` asks the autoscaler for a GPU node, waits for it, evaluates there (the actor falls back to
CPU torch: no CUDA here), withdraws the request; the node is then removed. A watcher samples the cluster every
0.5 s; the measured scale-up (request to node alive) and scale-down (evaluation end to node gone) are printed.
They run in their own session (`pytest -m cluster`) and take about a minute.

The other tests drive `GpuNodes` without Ray: fake node lists and autoscaler replies.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply

from evaluator.config import EvalConfig, Workers
from evaluator.run import autoscaling
from evaluator.run.autoscaling import GpuNodes, fits_a_node, is_infeasible
from sim.errors import ServiceUnavailable, UsageError
from tests.support.autoscaler import FAKE_HEAD_NODE_ID, AutoscalingHead, running_autoscaling_head
from tests.support.ray_head import VENV_BIN

GPU_NODE_TYPE = "gpu"
GPU_INSTANCE_TYPE = "g5.xlarge"
"""The Ray label `instance-type` of the GPU nodes (as the KubeRay manifests set it): what the cost is priced by."""
WORKER_TYPES = {
    GPU_NODE_TYPE: {
        "resources": {"CPU": 2, "GPU": 1},
        "min_workers": 0,
        "max_workers": 1,
        "labels": {"instance-type": GPU_INSTANCE_TYPE},
    }
}
RUN = ["run", "-p", "builtin://navigator", "--suite", "smoke", "--no-progress", "--no-replays"]
"""The evaluation both sides run (smoke: 2 environments, 2 episodes each)."""
SCALE_DOWN_BOUND_S = 60.0
"""Idle timeout 6 s plus the autoscaler's 1 s rounds: far less; the bound only keeps a failure short."""


# -- with Ray's autoscaler ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory):
    with running_autoscaling_head(tmp_path_factory.mktemp("autoscale"), WORKER_TYPES) as head:
        yield head


def evaluator_cli(*args: str, env: dict[str, str], timeout_s: float = 150) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: its stdout must stay pure JSON although Ray prints the autoscaler's events
    ("Adding 1 node(s) of type gpu") on a driver's stdout (the CLI turns them off; its own log lines on stderr
    say the same)."""
    return subprocess.run(
        [str(VENV_BIN / "policy-evaluator"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def timeline(path: Path) -> list[dict]:
    """The watcher's samples so far (none before its first; a line being written is left for later)."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def gpu_nodes(sample: dict) -> int:
    return sum(node["type"] == GPU_NODE_TYPE for node in sample.get("nodes", []))


def wait_for(path: Path, condition, bound_s: float) -> dict:
    """The first sample (written from now on) that meets `condition`; fails after `bound_s`."""
    deadline, seen = time.monotonic() + bound_s, len(timeline(path))
    while time.monotonic() < deadline:
        samples = timeline(path)
        for sample in samples[seen:]:
            if "error" not in sample and condition(sample):
                return sample
        seen = len(samples)
        time.sleep(0.25)
    pytest.fail(f"not within {bound_s} s; last samples: {timeline(path)[-3:]}")


def scores(report: dict) -> dict[str, float]:
    ((checkpoint,),) = [policy["checkpoints"] for policy in report["policies"]]
    return checkpoint["metrics"]["simulation_scores"]


@pytest.mark.cluster
def test_an_empty_gpu_group_scales_up_for_the_evaluation_and_down_after(head: AutoscalingHead, tmp_path: Path):
    """One worker of 1 CPU and 1 GPU (`--num-workers 1 --gpus-per-worker 1`: the uniform pool, whatever the
    default layout): the driver asks, the GPU node joins, the worker runs on it, the scores are those of the
    same evaluation in process on CPU, and the node is removed after the idle timeout."""
    samples = tmp_path / "timeline.jsonl"
    with head.watching(samples):
        wait_for(samples, lambda s: gpu_nodes(s) == 0 and not s["requested"], bound_s=30)
        started = time.time()
        cuda = evaluator_cli(
            *RUN,
            "--device=cuda",
            "--num-workers=1",
            "--gpus-per-worker=1",
            f"--ray-address={head.gcs_address}",
            f"--data-dir={tmp_path / 'cuda'}",
            "--run-name=autoscale",
            env=head.env,
        )
        ended = time.time()
        assert cuda.returncode == 0, cuda.stderr[-3000:]
        gone = wait_for(samples, lambda s: gpu_nodes(s) == 0, bound_s=SCALE_DOWN_BOUND_S)
    history = timeline(samples)
    asked = next(s for s in history if s.get("requested"))
    up = next(s for s in history if gpu_nodes(s))
    withdrawn = next(s for s in history if s["t"] > up["t"] and "error" not in s and not s["requested"])
    assert started <= asked["t"] <= up["t"] <= withdrawn["t"] <= gone["t"]
    assert asked["requested"] == [{"CPU": 1.0, "GPU": 1.0}], "one worker's shape"
    assert max(gpu_nodes(s) for s in history) == 1

    report = json.loads(cuda.stdout)
    (worker,) = report["workers"]
    assert worker["node_id"] != FAKE_HEAD_NODE_ID, "the worker ran on the node the autoscaler added"
    assert worker["device"] == "cpu", "no CUDA here: the worker falls back to CPU torch"
    assert "waiting for a GPU node" in cuda.stderr or "a GPU node joined" in cuda.stderr
    # The cost: the GPU node from when it joined to the evaluation's end, priced as a g5.xlarge; the head ran
    # no worker and is not counted.
    cost = report["cost"]
    assert set(cost["node_types"]) == {GPU_INSTANCE_TYPE} and cost["unpriced"] == []
    held = cost["node_types"][GPU_INSTANCE_TYPE]
    assert held["nodes"] == 1
    assert up["t"] - 1.5 <= ended - held["node_seconds"] <= up["t"] + 4.0, "node-seconds = its lifetime in the run"
    assert held["usd"] == pytest.approx(held["node_seconds"] / 3600 * held["usd_per_hour"])
    assert cost["total_usd"] == pytest.approx(held["usd"]) and held["usd"] > 0
    local_env = {k: v for k, v in head.env.items() if k != "RAY_ADDRESS"}
    local = evaluator_cli(
        *RUN, "--device=cpu", "--execution=in-process", f"--data-dir={tmp_path / 'cpu'}", env=local_env
    )
    assert local.returncode == 0, local.stderr[-3000:]
    assert scores(report) == scores(json.loads(local.stdout))

    print(
        f"\nscale-up: request -> GPU node alive {up['t'] - asked['t']:.1f} s "
        f"(driver's own count: {joined_line(cuda.stderr)}); "
        f"scale-down: evaluation end -> node gone {gone['t'] - ended:.1f} s "
        f"(request withdrawn -> gone {gone['t'] - withdrawn['t']:.1f} s; idle timeout "
        f"{head.idle_timeout_minutes * 60:g} s, autoscaler round {head.update_interval_s} s); "
        f"evaluation {ended - started:.1f} s; cost: {held['node_seconds']:.1f} node-seconds of {GPU_INSTANCE_TYPE}, "
        f"{cost['total_usd']:.6f} USD"
    )


def joined_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "a GPU node joined" in line]
    return lines[-1].split("evaluator.run.autoscaling: ")[-1] if lines else "not logged"


@pytest.mark.cluster
def test_a_worker_no_node_type_holds_fails_fast_as_bad_usage(head: AutoscalingHead, tmp_path: Path):
    """Two GPUs per worker, node types of one: the autoscaler reports the request infeasible, the run exits 2
    within a few autoscaler rounds, no node is added and the request is withdrawn."""
    samples = tmp_path / "timeline.jsonl"
    with head.watching(samples):
        wait_for(samples, lambda s: gpu_nodes(s) == 0 and not s["requested"], bound_s=SCALE_DOWN_BOUND_S)
        started = time.monotonic()
        result = evaluator_cli(
            *RUN,
            "--device=cuda",
            "--num-workers=1",
            "--gpus-per-worker=2",
            f"--ray-address={head.gcs_address}",
            f"--data-dir={tmp_path}",
            env=head.env,
        )
        elapsed = time.monotonic() - started
        wait_for(samples, lambda s: not s["requested"], bound_s=10)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "no node type of its autoscaler has 2 GPU" in json.loads(result.stdout)["error"]
    assert elapsed < 60, elapsed
    assert not any(gpu_nodes(s) for s in timeline(samples))
    print(f"\ninfeasible request: exit 2 after {elapsed:.1f} s (CLI start included)")


# -- GpuNodes without Ray -------------------------------------------------------------------------------------

CPU_NODE = {"Alive": True, "Resources": {"CPU": 4.0}}
GPU_NODE = {"Alive": True, "Resources": {"CPU": 2.0, "GPU": 1.0}}


def reply(seen: int = 0, version: int = 1, infeasible: list[dict] | None = None) -> GetClusterStatusReply:
    status = GetClusterStatusReply()
    status.cluster_resource_state.cluster_resource_state_version = version
    status.autoscaling_state.last_seen_cluster_resource_state_version = seen
    if infeasible:
        constraint = status.autoscaling_state.infeasible_cluster_resource_constraints.add()
        for bundle in infeasible:
            constraint.resource_requests.add().request.resources_bundle.update(bundle)
    return status


class FakeCluster:
    """What `GpuNodes` asks of Ray: nodes, the autoscaler's status, requests; and a clock that jumps."""

    def __init__(self, monkeypatch, nodes: list[list[dict]], statuses: list[GetClusterStatusReply], v2: bool = True):
        self.nodes, self.statuses, self.requests, self.now = nodes, statuses, [], 0.0
        monkeypatch.setattr(
            autoscaling.ray, "nodes", lambda: self.nodes.pop(0) if len(self.nodes) > 1 else self.nodes[0]
        )
        monkeypatch.setattr(
            autoscaling, "cluster_status", lambda: self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        )
        monkeypatch.setattr(autoscaling, "autoscaler_v2_enabled", lambda: v2)
        monkeypatch.setattr(autoscaling, "request_resources", lambda bundles: self.requests.append(bundles))
        monkeypatch.setattr(autoscaling.ray_client, "is_connected", lambda: False)
        monkeypatch.setattr(autoscaling, "monotonic", lambda: self.now)
        monkeypatch.setattr(autoscaling, "sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def cuda(**options) -> Workers:
    return EvalConfig(policy_uris=("builtin://navigator",), device="cuda", **options).workers


def test_fits_a_node_needs_an_alive_node_holding_the_whole_bundle():
    bundle = {"CPU": 1.0, "GPU": 1.0}
    assert fits_a_node([CPU_NODE, GPU_NODE], bundle)
    assert not fits_a_node([CPU_NODE, {**GPU_NODE, "Alive": False}], bundle)
    assert not fits_a_node([GPU_NODE], {"CPU": 1.0, "GPU": 2.0})


def test_infeasible_only_once_the_autoscaler_has_seen_the_request():
    bundle = {"CPU": 1.0, "GPU": 2.0}
    assert is_infeasible(reply(seen=5, infeasible=[bundle]), bundle, asked_at_version=5)
    assert not is_infeasible(reply(seen=4, infeasible=[bundle]), bundle, asked_at_version=5), "a stale report"
    assert not is_infeasible(reply(seen=5, infeasible=[{"GPU": 4.0}]), bundle, asked_at_version=5)


def test_nothing_asked_when_a_gpu_node_is_up_or_the_device_is_cpu(monkeypatch):
    cluster = FakeCluster(monkeypatch, [[CPU_NODE, GPU_NODE]], [reply()])
    nodes = GpuNodes(cuda())
    nodes.ensure()
    nodes.release()
    GpuNodes(EvalConfig(policy_uris=("builtin://navigator",)).workers).ensure()
    assert cluster.requests == [] and nodes.scale_up_s is None


def test_without_autoscaler_v2_no_gpu_is_bad_usage_at_once(monkeypatch):
    cluster = FakeCluster(monkeypatch, [[CPU_NODE]], [reply()], v2=False)
    with pytest.raises(UsageError, match="no GPU and no autoscaler"):
        GpuNodes(cuda()).ensure()
    assert cluster.requests == []


def test_asks_waits_and_withdraws(monkeypatch):
    cluster = FakeCluster(monkeypatch, [[CPU_NODE]] * 3 + [[CPU_NODE, GPU_NODE]], [reply()])
    nodes = GpuNodes(cuda(cpus_per_worker=2))
    nodes.ensure()
    assert nodes.scale_up_s == 2.0
    nodes.release()
    nodes.release()
    assert cluster.requests == [[{"CPU": 2.0, "GPU": 1.0}], []]


def test_an_infeasible_request_is_bad_usage_and_withdrawn(monkeypatch):
    bundle = {"CPU": 1.0, "GPU": 2.0}
    cluster = FakeCluster(monkeypatch, [[CPU_NODE]], [reply(seen=0, version=7), reply(seen=7, infeasible=[bundle])])
    nodes = GpuNodes(cuda(gpus_per_worker=2))
    with pytest.raises(UsageError, match="no node type of its autoscaler has 2 GPU and 1 CPU"):
        nodes.ensure()
    nodes.release()
    assert cluster.requests == [[bundle], []]


def test_no_node_within_the_timeout_is_an_outage_and_the_request_is_renewed(monkeypatch, caplog):
    cluster = FakeCluster(monkeypatch, [[CPU_NODE]], [reply()])
    timeout = {"scale_up_timeout": 30.0}  # --scale-up-timeout 30
    caplog.set_level("INFO", logger="evaluator.run.autoscaling")
    with pytest.raises(ServiceUnavailable, match="within 30 s"):
        GpuNodes(cuda(**timeout)).ensure()
    waited = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for a GPU node")]
    assert waited == [f"waiting for a GPU node from the autoscaler: {s} s" for s in (10, 20)]
    assert len(cluster.requests) == 3, "asked, then asked again at each progress line"


def test_the_cli_environment_does_not_enable_autoscaler_v2_for_the_driver():
    """The cluster tests' driver must learn from the cluster that v2 runs: its environment does not say so."""
    head = AutoscalingHead(temp_dir=Path("/nonexistent"))
    assert "RAY_enable_autoscaler_v2" not in head.env and head.process_env["RAY_enable_autoscaler_v2"] == "1"
    assert "RAY_enable_autoscaler_v2" not in os.environ
