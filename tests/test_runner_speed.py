"""The runner's fast paths change nothing but speed: block-drawn noise is the per-step stream, the direct C++
step plays what `Simulation.step()` plays, the staged (CUDA-style) TorchPolicy path samples what the
direct path samples. Throughput itself is measured by `make bench` (bench/throughput.py), not here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sim.runner as runner
from bench.naive import play_naive
from bench.throughput import measure_limit
from sim.batch_policy import BatchPolicy, Slot, StepBatch
from sim.envs import episode_seed
from sim.errors import PolicyError
from sim.policies import TorchPolicy
from sim.runner import EpisodeJob, run_episodes
from sim.suites import get_suite
from tests.conftest import tiny_model

SMOKE = get_suite("smoke")


def smoke_jobs(episodes: int = 3, replay: bool = False) -> list[EpisodeJob]:
    return [
        EpisodeJob(env, i, episode_seed(SMOKE.seed, env.name, i), record_replay=replay and i == 0)
        for env in SMOKE.envs
        for i in range(episodes)
    ]


def key(results):
    return [(r.env, r.episode, r.rewards, r.steps, dict(r.stats), r.replay) for r in results]


class NoiseRecorder(BatchPolicy):
    """Random actions from the runner's noise; records each episode's noise, step by step."""

    stochastic = True

    def __init__(self) -> None:
        self.seen: dict[int, list[np.ndarray]] = {}
        self._episode_of_slot: dict[int, int] = {}

    def start_episode(self, slot: Slot) -> None:
        self._episode_of_slot[slot.index] = slot.simulation.seed
        self.seen[slot.simulation.seed] = []

    def act(self, batch: StepBatch) -> np.ndarray:
        assert batch.noise is not None
        for slot in batch.slots:
            self.seen[self._episode_of_slot[slot.index]].append(batch.noise[slot.rows].copy())
        return batch.noise.argmax(axis=1)


@pytest.mark.parametrize("block", [1, 4, 32])
def test_block_noise_is_each_episodes_own_per_step_stream(monkeypatch, block):
    monkeypatch.setattr(runner, "NOISE_BLOCK_STEPS", block)
    policy = NoiseRecorder()
    jobs = smoke_jobs()
    results = run_episodes(policy, jobs, lockstep_envs=2)
    for job, result in zip(jobs, results, strict=True):
        rng = np.random.default_rng(job.seed)
        expected = [rng.gumbel(size=(job.env.num_agents, 5)).astype(np.float32) for _ in range(result.steps)]
        assert np.array_equal(np.stack(policy.seen[job.seed]), np.stack(expected))


def test_direct_cpp_step_plays_exactly_what_simulation_step_plays(monkeypatch):
    model, _ = tiny_model(3)
    fast = run_episodes(TorchPolicy(model, "m", "cpu"), smoke_jobs(replay=True), lockstep_envs=3)
    monkeypatch.setattr(runner, "_stepper", lambda simulation: simulation.step)
    wrapped = run_episodes(TorchPolicy(model, "m", "cpu"), smoke_jobs(replay=True), lockstep_envs=3)
    assert key(fast) == key(wrapped)


def test_direct_step_only_where_no_event_handler_listens(monkeypatch):
    chosen = []
    original = runner._stepper

    def spy(simulation):
        step = original(simulation)
        chosen.append(getattr(step, "__self__", None) is simulation)
        return step

    monkeypatch.setattr(runner, "_stepper", spy)
    run_episodes(TorchPolicy(tiny_model(0)[0], "m", "cpu"), smoke_jobs(replay=True))
    # Episode 0 of each env records a replay and keeps Simulation.step; the other four step in C++ directly.
    assert sorted(chosen) == [False] * 4 + [True] * 2


def test_staged_path_samples_what_the_direct_path_samples_and_reuses_its_buffers():
    model, _ = tiny_model(5)
    direct = run_episodes(TorchPolicy(model, "m", "cpu"), smoke_jobs())
    staged_policy = TorchPolicy(model, "m", "cpu", staged=True)
    pointers = set()
    act = staged_policy.act

    def tracking_act(batch):
        actions = act(batch)
        pointers.add(staged_policy._host.observations.data_ptr())
        return actions

    staged_policy.act = tracking_act
    staged = run_episodes(staged_policy, smoke_jobs())
    assert key(direct) == key(staged)
    assert len(pointers) == 2  # one allocation per group (one-agent envs, two-agent envs): none per step


def test_staged_path_refuses_non_finite_logits():
    class Broken(torch.nn.Module):
        def forward(self, tokens):
            return torch.full((tokens.shape[0], 5), float("nan"))

    policy = TorchPolicy(Broken(), "broken", "cpu", staged=True)
    with pytest.raises(PolicyError, match="NaN or infinite"):
        run_episodes(policy, smoke_jobs(1))


def test_naive_baseline_plays_the_same_episodes_as_the_runner():
    model, _ = tiny_model(7)
    jobs = smoke_jobs()
    naive = play_naive(model, jobs)
    batched = run_episodes(TorchPolicy(model, "m", "cpu"), jobs)
    assert [(r.rewards, r.steps) for r in naive] == [(r.rewards, r.steps) for r in batched]
    assert measure_limit(jobs).agent_steps == sum(r.agent_steps for r in batched)


def test_sparse_token_encoder_builds_the_dense_grid():
    """TokenGridMLP.encode widens only the valid tokens; it must build exactly the grid a dense scatter of
    all tokens builds (the encoder the example checkpoints were trained with)."""
    from sim.models import TokenGridMLP

    model = TokenGridMLP(num_tags=5, num_actions=5, tag_feature_id=6, hidden=8)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (16, 500, 3), generator=generator, dtype=torch.uint8)
    rows, cols = (torch.randint(0, 13, (16, 500), generator=generator) for _ in range(2))
    tokens[:, :, 0] = (rows * 16 + cols).to(torch.uint8)  # in-window locations, as mettagrid writes them
    tokens[:, 400:450, 0] = 0xFE  # global tokens
    tokens[:, 450:, 0] = 0xFF  # empty slots
    tokens[:, :200, 1] = 6  # many tag tokens, with valid and out-of-range tag values
    location, feature, value = tokens[:, :, 0].long(), tokens[:, :, 1].long(), tokens[:, :, 2].long()
    cells = 5 * 13 * 13
    valid = (feature == 6) & (location < 0xFE) & (value < 5)
    index = (value * 13 + location // 16) * 13 + location % 16
    dense = torch.zeros(16, cells + 1).scatter_(1, torch.where(valid, index, cells), 1.0)[:, :cells]
    assert torch.equal(model.encode(tokens), dense)
