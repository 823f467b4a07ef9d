"""Run episodes of one loaded policy: many environments in lockstep, one batched policy call per step.

Reads top to bottom like CleanRL's `evaluate`: allocate buffers once, fill slots with episodes, loop
(noise -> one policy call -> write actions -> step every live simulation), harvest finished episodes,
refill their slots. Every mettagrid `Simulation` writes straight into rows of the shared buffers
(`Buffers` views), so there is no per-step copy of observations.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby

import numpy as np
from mettagrid.mettagrid_c import dtype_actions, dtype_observations, dtype_rewards, dtype_terminals
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator.replay_log_writer import InMemoryReplayWriter
from mettagrid.simulator.simulator import Buffers, Simulation

from sim.batch_policy import BatchPolicy, Slot, StepBatch, check_actions
from sim.envs import EnvSpec, build_config
from sim.metrics import EpisodeResult, episode_stats
from sim.replays import replay_bytes

logger = logging.getLogger(__name__)

DEFAULT_LOCKSTEP_ENVS = 32
"""Simulations stepped together per batched forward; enough to amortise a forward, few enough to refill."""


@dataclass(frozen=True)
class EpisodeJob:
    """One episode to play: which environment, which episode index, its seed, whether to keep a replay."""

    env: EnvSpec
    episode: int
    seed: int
    record_replay: bool = False


@dataclass
class _Live:
    """Runner bookkeeping for an occupied slot."""

    slot: Slot
    job: EpisodeJob
    started: float
    replay: InMemoryReplayWriter | None = None


@dataclass
class _Buffers:
    observations: np.ndarray
    terminals: np.ndarray
    truncations: np.ndarray
    rewards: np.ndarray
    actions: np.ndarray
    vibe_actions: np.ndarray
    noise: np.ndarray | None = field(default=None)

    @classmethod
    def allocate(cls, rows: int, obs_shape: tuple[int, ...], num_actions: int, stochastic: bool) -> _Buffers:
        return cls(
            observations=np.zeros((rows, *obs_shape), dtype=dtype_observations),
            terminals=np.zeros(rows, dtype=dtype_terminals),
            truncations=np.zeros(rows, dtype=dtype_terminals),
            rewards=np.zeros(rows, dtype=dtype_rewards),
            actions=np.zeros(rows, dtype=dtype_actions),
            vibe_actions=np.zeros(rows, dtype=dtype_actions),
            noise=np.zeros((rows, num_actions), dtype=np.float32) if stochastic else None,
        )

    def view(self, rows: slice) -> Buffers:
        return Buffers(
            observations=self.observations[rows],
            terminals=self.terminals[rows],
            truncations=self.truncations[rows],
            rewards=self.rewards[rows],
            masks=np.ones(rows.stop - rows.start, dtype=bool),
            actions=self.actions[rows],
            teacher_actions=self.vibe_actions[rows],
        )


def run_episodes(
    policy: BatchPolicy,
    jobs: Sequence[EpisodeJob],
    *,
    lockstep_envs: int = DEFAULT_LOCKSTEP_ENVS,
) -> list[EpisodeResult]:
    """Play every job with `policy`; results come back in the order of `jobs`.

    Jobs are grouped by agent count (a slot's rows are fixed); within a group, episodes of any of the
    environments share the lockstep batch.
    """
    done: dict[tuple[str, int], EpisodeResult] = {}
    by_agents = sorted(jobs, key=lambda job: job.env.num_agents)
    for num_agents, group in groupby(by_agents, key=lambda job: job.env.num_agents):
        for result in _run_group(policy, list(group), num_agents, lockstep_envs):
            done[(result.env, result.episode)] = result
    return [done[(job.env.name, job.episode)] for job in jobs]


def _run_group(policy: BatchPolicy, jobs: list[EpisodeJob], num_agents: int, lockstep: int) -> list[EpisodeResult]:
    pending = deque(jobs)
    first_config = build_config(jobs[0].env, jobs[0].seed)
    interface = PolicyEnvInterface.from_mg_cfg(first_config)
    policy.bind(interface)
    num_actions = len(interface.action_names)
    num_slots = min(lockstep, len(jobs))
    rows = num_slots * num_agents
    buffers = _Buffers.allocate(rows, interface.observation_shape, num_actions, policy.stochastic)
    live: dict[int, _Live] = {}
    results: list[EpisodeResult] = []

    for index in range(num_slots):
        live[index] = _start(policy, pending.popleft(), index, num_agents, buffers)

    while live:
        if buffers.noise is not None:
            for entry in live.values():
                buffers.noise[entry.slot.rows] = entry.slot.rng.gumbel(size=(num_agents, num_actions))
        batch = StepBatch(buffers.observations, buffers.noise, [entry.slot for entry in live.values()])
        actions = check_actions(np.asarray(policy.act(batch)), rows, num_actions, type(policy).__name__)
        buffers.actions[:] = actions
        for index in list(live):
            entry = live[index]
            entry.slot.simulation.step()
            if entry.slot.simulation.is_done():
                results.append(_finish(entry))
                if pending:
                    live[index] = _start(policy, pending.popleft(), index, num_agents, buffers)
                else:
                    del live[index]
    return results


def _start(policy: BatchPolicy, job: EpisodeJob, index: int, num_agents: int, buffers: _Buffers) -> _Live:
    rows = slice(index * num_agents, (index + 1) * num_agents)
    replay = InMemoryReplayWriter() if job.record_replay else None
    simulation = Simulation(
        build_config(job.env, job.seed),
        seed=job.seed,
        buffers=buffers.view(rows),
        event_handlers=[replay] if replay else (),
    )
    slot = Slot(index=index, rows=rows, simulation=simulation, rng=np.random.default_rng(job.seed))
    policy.start_episode(slot)
    return _Live(slot=slot, job=job, started=time.perf_counter(), replay=replay)


def _finish(entry: _Live) -> EpisodeResult:
    simulation = entry.slot.simulation
    replay = None
    if entry.replay is not None:
        replay = replay_bytes(entry.replay.get_completed_replays()[-1])
    result = EpisodeResult(
        env=entry.job.env.name,
        episode=entry.job.episode,
        seed=entry.job.seed,
        rewards=tuple(float(r) for r in simulation.episode_rewards),
        steps=int(simulation.current_step),
        stats=episode_stats(simulation.episode_stats),
        wall_s=time.perf_counter() - entry.started,
        replay=replay,
    )
    simulation.close()
    return result
