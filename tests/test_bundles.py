"""Policy bundles and mettagrid's own trainable classes (`lstm`, `stateless`, `puffer`), saved by those
classes themselves, evaluated through the batched path: the same logits and recurrent state sequence as
mettagrid's per-agent path, the same report whatever the batching, no state leaking between episodes."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from mettagrid.mettagrid_c import dtype_actions
from mettagrid.policy.loader import initialize_or_load_policy
from mettagrid.policy.policy import MultiAgentPolicy, PolicySpec
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator.simulator import Simulation

from evaluator.config import EvalConfig
from evaluator.run.driver import evaluate
from evaluator.sources import resolve
from sim.bundles import write_bundle
from sim.envs import build_config
from sim.errors import PolicyError
from sim.mettagrid_policies import MettagridBundlePolicy, PerAgentPolicy, StepBatchPolicy
from sim.models import TokenGridLSTM
from sim.policies import load_policy
from sim.runner import EpisodeJob, run_episodes
from sim.suites import get_suite
from sim.torch_policy import TorchPolicy
from tests.conftest import SMOKE_INIT, tiny_model

SMOKE = get_suite("smoke")
NAVIGATION = get_suite("navigation")
CLASSES = {
    "lstm": "mettagrid.policy.lstm.LSTMPolicy",
    "stateless": "mettagrid.policy.stateless.StatelessPolicy",
    "puffer": "mettagrid.policy.puffer_default.PufferDefaultPolicy",
}
FOUR_AGENTS = next(env for env in NAVIGATION.envs if env.num_agents > 1)


def interface(env=FOUR_AGENTS) -> PolicyEnvInterface:
    return PolicyEnvInterface.from_mg_cfg(build_config(env, 1))


def saved_by_the_class(directory: Path, short_name: str) -> Path:
    """A bundle as cogames writes one: the class's own `save_policy_data`, and a policy_spec.json."""
    torch.manual_seed(7)
    policy = initialize_or_load_policy(interface(), PolicySpec(class_path=CLASSES[short_name]))
    directory.mkdir(parents=True)
    policy.save_policy_data(str(directory / "weights.pt"))
    spec = {"class_path": CLASSES[short_name], "data_path": "weights.pt", "init_kwargs": {}}
    (directory / "policy_spec.json").write_text(json.dumps(spec))
    return directory


def load(path: Path, **kwargs) -> MettagridBundlePolicy | TorchPolicy:
    [checkpoint] = resolve(str(path))
    return load_policy(checkpoint.uri, checkpoint.data, **kwargs)


def jobs(envs, episodes: int = 3) -> list[EpisodeJob]:
    return [EpisodeJob(env, i, 5000 + i) for env in envs for i in range(episodes)]


def outcomes(results) -> list:
    return [(r.env, r.episode, r.rewards, r.steps, r.stats) for r in results]


@pytest.mark.parametrize("short_name", sorted(CLASSES))
def test_mettagrid_classes_evaluate_batched_with_their_saved_weights(tmp_path: Path, short_name: str):
    policy = load(saved_by_the_class(tmp_path / short_name, short_name))
    assert isinstance(policy, MettagridBundlePolicy)
    played = run_episodes(policy, jobs(NAVIGATION.envs[:3] + (FOUR_AGENTS,), episodes=2))
    assert isinstance(policy.adapter, TorchPolicy)
    assert policy.adapter.recurrent == (short_name != "stateless")
    assert all(r.steps > 0 for r in played)
    # The weights are the saved ones: the class's own loader gives the same network.
    own = initialize_or_load_policy(
        interface(), PolicySpec(class_path=CLASSES[short_name], data_path=str(tmp_path / short_name / "weights.pt"))
    )
    for name, tensor in own.network().state_dict().items():
        assert torch.equal(policy.adapter._module.state_dict()[name], tensor), name


class _Spy:
    """Wraps `network.forward_eval` and records what each call saw and returned."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]] = []
        self._forward = network.forward_eval
        network.forward_eval = self

    def __call__(self, observations, state):
        logits, values = self._forward(observations, state)
        saved = {k: v.detach().clone() for k, v in (state or {}).items() if isinstance(v, torch.Tensor)}
        self.calls.append((observations.detach().clone(), logits.detach().clone(), saved))
        return logits, values


@pytest.mark.parametrize("short_name", ["lstm", "puffer"])
def test_batched_and_per_agent_paths_give_the_same_logits_and_state_sequence(tmp_path: Path, short_name: str):
    """mettagrid's per-agent path plays an episode of 4 agents (one forward per agent per step); the batched
    adapter then takes the same observations, all agents in one call, and must produce the same logits and
    the same recurrent state after every step."""
    env, steps = FOUR_AGENTS, 12
    per_agent = initialize_or_load_policy(interface(env), PolicySpec(class_path=CLASSES[short_name]))
    spy = _Spy(per_agent.network())
    simulation = Simulation(build_config(env, 3), seed=3)
    agents = [per_agent.agent_policy(i) for i in range(env.num_agents)]
    for agent in agents:
        agent.reset()
    for _ in range(steps):
        for i, agent in enumerate(agents):
            simulation.agent(i).set_action(agent.step(simulation.agent(i).observation))
        simulation.step()
    assert len(spy.calls) == steps * env.num_agents
    network = per_agent.network()
    network.forward_eval = spy._forward  # the batched run calls the network itself
    batched = TorchPolicy(network, short_name, "cpu")
    batched.bind(interface(env))
    rows = slice(0, env.num_agents)
    batched.start_episode(type("Slot", (), {"rows": rows})())
    with torch.inference_mode():
        for t in range(steps):
            calls = spy.calls[t * env.num_agents : (t + 1) * env.num_agents]
            observations = torch.cat(
                [obs.to(torch.uint8) if obs.max() > 1 else (obs * 255).round().to(torch.uint8) for obs, _, _ in calls]
            )
            logits = batched._logits(observations)
            torch.testing.assert_close(logits, torch.cat([lg for _, lg, _ in calls]), rtol=1e-5, atol=1e-5)
            for key, buffer in batched._state.items():
                if key in calls[0][2]:
                    per_row = torch.stack([state[key].reshape(-1) for _, _, state in calls])
                    torch.testing.assert_close(buffer[rows].reshape(env.num_agents, -1), per_row, rtol=1e-5, atol=1e-5)


def test_recurrent_report_is_identical_for_lockstep_widths_1_and_64(tmp_path: Path):
    policy = load(saved_by_the_class(tmp_path / "lstm", "lstm"))
    shortest = tuple(sorted(NAVIGATION.envs, key=lambda env: env.max_steps)[:2])
    work = jobs(shortest + (FOUR_AGENTS,), episodes=2)
    assert outcomes(run_episodes(policy, work, lockstep_envs=1)) == outcomes(
        run_episodes(policy, work, lockstep_envs=64)
    )


def test_state_never_leaks_into_an_episode_started_in_a_reused_slot():
    """Two slots, many episodes of different lengths: most episodes start in a slot that just held another
    one. Each must equal the same episode played alone by a fresh policy."""
    torch.manual_seed(3)
    module = TokenGridLSTM(**SMOKE_INIT)
    with torch.no_grad():  # an untrained net forgets fast and barely beats the noise: sharpen both
        module.action_head.weight.mul_(100.0)
        module.cell.weight_hh.mul_(4.0)
    work = jobs(SMOKE.envs, episodes=3)
    shared = run_episodes(TorchPolicy(module, "lstm", "cpu"), work, lockstep_envs=2)
    alone = [run_episodes(TorchPolicy(module, "lstm", "cpu"), [job], lockstep_envs=1)[0] for job in work]
    assert outcomes(shared) == outcomes(alone)
    # ...and the check has teeth: without the reset, a reused slot starts from the last episode's memory.
    leaky = TorchPolicy(module, "lstm", "cpu")
    reset = leaky.start_episode
    started: set[int] = set()

    def reset_first_time_only(slot):
        if slot.index not in started:
            started.add(slot.index)
            reset(slot)

    leaky.start_episode = reset_first_time_only
    assert outcomes(run_episodes(leaky, work, lockstep_envs=2)) != outcomes(alone)


@pytest.mark.usefixtures("ray_session")
def test_recurrent_report_is_identical_for_one_and_two_workers(tmp_path: Path):
    saved_by_the_class(tmp_path / "lstm", "lstm")
    reports = []
    for workers in (1, 2):
        config = EvalConfig(
            policy_uris=(str(tmp_path / "lstm"),),
            suite="smoke",
            episodes=4,
            shard_size=1 if workers == 2 else 4,
            num_workers=workers,
            reuse_results=False,
            replays=False,
            data_dir=tmp_path / f"w{workers}",
        )
        outcome = evaluate(config)
        assert not outcome.failed
        reports.append([(c.name, c.metrics) for p in outcome.report.policies for c in p.checkpoints])
    assert reports[0] == reports[1]


def test_our_recurrent_module_ships_as_a_safetensors_bundle(tmp_path: Path):
    torch.manual_seed(0)
    module = TokenGridLSTM(**SMOKE_INIT)
    write_bundle(tmp_path / "run:v30", module, SMOKE_INIT)
    assert sorted(p.name for p in (tmp_path / "run:v30").iterdir()) == ["policy_spec.json", "weights.safetensors"]
    policy = load(tmp_path / "run:v30")
    assert isinstance(policy, TorchPolicy)
    assert outcomes(run_episodes(policy, jobs(SMOKE.envs))) == outcomes(
        run_episodes(TorchPolicy(module, "m", "cpu"), jobs(SMOKE.envs))
    )
    assert policy.recurrent


class _Evil:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("weights_name", ["weights.safetensors", "weights.pt"])
def test_a_pickle_disguised_as_weights_is_refused(tmp_path: Path, weights_name: str):
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    buffer = io.BytesIO()
    torch.save({"net.0.weight": evil}, buffer)
    (bundle / weights_name).write_bytes(buffer.getvalue() if weights_name.endswith(".pt") else pickle.dumps(evil))
    spec = {"class_path": "sim.models.TokenGridMLP", "data_path": weights_name, "init_kwargs": SMOKE_INIT}
    (bundle / "policy_spec.json").write_text(json.dumps(spec))
    with pytest.raises(PolicyError, match="not a valid safetensors file|pickled Python object, refused"):
        load(bundle)
    assert not evil.marker.exists()


def test_weights_that_do_not_fit_and_missing_packages_are_that_checkpoints_error(tmp_path: Path):
    model, kwargs = tiny_model(0)
    write_bundle(tmp_path / "wrong", model, {**kwargs, "hidden": 8})
    with pytest.raises(PolicyError, match="weights do not fit sim.models.TokenGridMLP"):
        load(tmp_path / "wrong")
    metta = tmp_path / "metta"
    metta.mkdir()
    (metta / "policy_spec.json").write_text(json.dumps({"class_path": "metta.agent.policy.CheckpointPolicy"}))
    with pytest.raises(
        PolicyError, match=r"cannot import metta.agent.policy.CheckpointPolicy \(package 'metta' missing\): Metta"
    ):
        load(metta)


class StepBatchNoop(MultiAgentPolicy):
    """A class with mettagrid's raw-buffer fast path and no network (what Nim policies look like)."""

    resets = 0

    def agent_policy(self, agent_id: int):
        raise AssertionError("the step_batch adapter never asks for per-agent policies")

    def reset(self) -> None:
        StepBatchNoop.resets += 1

    def step_batch(self, raw_observations: np.ndarray, raw_actions: np.ndarray) -> None:
        assert raw_actions.dtype == dtype_actions and raw_observations.shape[0] == raw_actions.shape[0]
        raw_actions[:] = self.policy_env_info.action_names.index("move_east")


def test_step_batch_classes_use_their_fast_path_and_others_the_per_agent_path(tmp_path: Path):
    for name, class_path in (
        ("fast", f"{__name__}.StepBatchNoop"),
        ("slow", "mettagrid.policy.random_agent.RandomMultiAgentPolicy"),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "policy_spec.json").write_text(json.dumps({"class_path": class_path}))
    fast = load(tmp_path / "fast")
    played = run_episodes(fast, jobs(SMOKE.envs, episodes=2))
    assert isinstance(fast.adapter, StepBatchPolicy) and StepBatchNoop.resets == len(played)
    slow = load(tmp_path / "slow")
    work = jobs(SMOKE.envs, episodes=3)
    once = run_episodes(slow, work, lockstep_envs=1)
    assert isinstance(slow.adapter, PerAgentPolicy)
    # mettagrid's random policy draws from Python's global RNG; each slot keeps its own, seeded per episode.
    assert outcomes(once) == outcomes(run_episodes(load(tmp_path / "slow"), work, lockstep_envs=4))
