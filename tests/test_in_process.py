"""Small evaluations run in process (no Ray) and give the report the Ray path gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluator.config import Device, EvalConfig, Execution
from evaluator.run.driver import evaluate
from evaluator.run.in_process import SMALL_PLAN_AGENT_STEPS, runs_in_process
from evaluator.run.plan import make_plan
from evaluator.sources import resolve
from sim.suites import get_suite

EXAMPLES = Path(__file__).parents[1] / "examples" / "policies"


def smoke_agent_steps(episodes: int = 2) -> int:
    [checkpoint] = resolve("builtin://navigator")
    units = make_plan([checkpoint], get_suite("smoke").with_episodes(episodes), shard_size=32, replays=False)
    return sum(u.agent_steps_upper_bound for u in units)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, True),
        ({"ray_address": "127.0.0.1:6379"}, False),
        ({"num_workers": 2}, False),
        ({"device": Device.CUDA}, False),
        ({"unit_timeout": 5.0}, False),
        ({"trust_remote_code": True}, False),
        ({"execution": Execution.RAY}, False),
        ({"execution": Execution.IN_PROCESS, "num_workers": 4}, True),
    ],
)
def test_auto_runs_small_plans_in_process_only_when_as_safe(overrides, expected):
    config = EvalConfig(policy_uris=("builtin://navigator",), **overrides)
    assert runs_in_process(config.workers, smoke_agent_steps()) is expected


def test_auto_sends_large_plans_to_ray():
    agent_steps = smoke_agent_steps(episodes=2_000)
    assert agent_steps > SMALL_PLAN_AGENT_STEPS
    assert not runs_in_process(EvalConfig(policy_uris=("builtin://navigator",)).workers, agent_steps)


@pytest.mark.usefixtures("ray_session")
def test_in_process_report_equals_the_ray_report(tmp_path: Path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    base = EvalConfig(
        policy_uris=(str(EXAMPLES / "navigator_bc"), str(EXAMPLES / "navigator_lstm"), str(broken)),
        checkpoints="latest",
        suite="smoke",
        episodes=3,
        reuse_results=False,
        data_dir=tmp_path,
    )
    reports = {
        mode: evaluate(base.model_copy(update={"execution": mode, "run_name": mode.value})).report
        for mode in (Execution.IN_PROCESS, Execution.RAY)
    }
    local, ray = reports[Execution.IN_PROCESS], reports[Execution.RAY]
    assert local.timing.ray_init_s == 0 and [w.node_id for w in local.workers] == ["in-process"]
    assert ray.workers and all(w.node_id != "in-process" for w in ray.workers)
    flat = {
        mode: [(c.name, c.version, c.metrics, c.error) for p in r.policies for c in p.checkpoints]
        for mode, r in reports.items()
    }
    assert flat[Execution.IN_PROCESS] == flat[Execution.RAY]
    assert flat[Execution.RAY][-1][3] and flat[Execution.RAY][0][2] is not None


def test_packed_units_give_the_report_of_unpacked_ones(tmp_path: Path):
    """Two episodes per environment: shard size 1 gives one-episode units; 64 packs every environment of an
    agent count into one unit (one lockstep batch). Same seeds, same episodes, same report."""
    base = EvalConfig(
        policy_uris=(str(EXAMPLES / "navigator_lstm"),),
        suite="navigation",
        env="[ewc]*",
        episodes=2,
        replays=False,
        reuse_results=False,
        execution=Execution.IN_PROCESS,
        data_dir=tmp_path,
    )
    packed_plan = make_plan(
        resolve(str(EXAMPLES / "navigator_lstm")),
        get_suite("navigation").select("[ewc]*").with_episodes(2),
        shard_size=64,
    )
    assert any(len({job.env.name for job in unit.jobs}) > 1 for unit in packed_plan), "nothing was packed"
    reports = [
        evaluate(base.model_copy(update={"shard_size": size, "run_name": f"s{size}"})).report for size in (1, 64)
    ]
    assert [c.metrics for c in reports[0].policies[0].checkpoints] == [
        c.metrics for c in reports[1].policies[0].checkpoints
    ]
