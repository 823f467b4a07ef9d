"""Run episodes of one loaded policy: many environments in lockstep, one batched policy call per step.

Reads top to bottom like CleanRL's `evaluate`: allocate buffers once, fill slots with episodes, loop
(noise -> one policy call -> write actions -> step every live simulation -> check terminations), harvest
finished episodes, refill their slots. Every mettagrid `Simulation` writes straight into rows of the
shared buffers (`Buffers` views), so there is no per-step copy of observations, and the loop allocates no
arrays per step (torch does, inside the policy's forward): buffers and noise are allocated once per group,
the `StepBatch` and step calls are rebuilt only when an episode ends.

Costs, measured on navigation (bench/throughput.py, BENCHMARKS.md): mettagrid's C++ step is 2-25 us per
environment; its Python `Simulation.step()` wrapper adds ~13 us (Stopwatch timers, talk channel, event
handlers, its own `is_done()`), `is_done()` costs ~1.6 us per slot and a per-slot Gumbel draw plus copy
~1.5 us. The loop below pays none of these per slot per step: it calls the C++ step directly when the
wrapper would do nothing else, checks every slot's termination with two numpy reductions over the shared
flags, and draws noise in blocks.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from mettagrid.mettagrid_c import dtype_actions, dtype_observations, dtype_rewards, dtype_terminals
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator.replay_log_writer import InMemoryReplayWriter
from mettagrid.simulator.simulator import Buffers, Simulation

from sim.batch_policy import BatchPolicy, Slot, StepBatch, check_actions
from sim.envs import EnvSpec, build_config
from sim.errors import PolicyError
from sim.metrics import EpisodeResult, episode_stats
from sim.mixed_policy import MixedPolicy
from sim.replays import replay_bytes

logger = logging.getLogger(__name__)

DEFAULT_LOCKSTEP_ENVS = 64
"""Simulations stepped together per batched forward (bench/throughput.py --sweep, navigation, example MLP,
(c)/(a): 0.39 at 8, 0.43 at 16, 0.50 at 32, 0.51 at 64, 0.53 at 128). Wider amortises the forward's
per-call cost; the longest-first order and the trimmed tail keep idle rows under 0.5% even at 64. Work
units of fewer episodes (the CLI's --shard-size) cap it."""

NOISE_BLOCK_STEPS = 32
"""Steps of Gumbel noise drawn per rng call. Blocks start at each episode's own step 0, so the values an
episode sees depend only on its seed (numpy draws a block exactly as it draws the same steps one by one)."""


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
    step: Callable[[], None]
    """`Simulation.step` or, when that would only add overhead, the C++ step it wraps (see `_stepper`)."""
    noise_due: int = 0
    """Loop tick at which this slot's block of noise is used up."""
    replay: InMemoryReplayWriter | None = None


@dataclass
class _Buffers:
    """Everything the loop reads or writes, allocated once per group of jobs."""

    observations: np.ndarray
    flags: np.ndarray
    """(2, slots, agents) bool: terminals then truncations; mettagrid writes them through the views below."""
    rewards: np.ndarray
    actions: np.ndarray
    vibe_actions: np.ndarray
    done: np.ndarray
    """(2, slots) scratch for the per-step termination check."""
    noise: np.ndarray | None
    """(rows, actions) float32: the noise of the current step, gathered from `noise_blocks`."""
    noise_blocks: np.ndarray | None
    """(NOISE_BLOCK_STEPS * rows, actions) float32: block step k of row r lives at k * rows + r."""
    noise_index: np.ndarray
    """(rows,) int64: where each row's next noise sits in `noise_blocks`; advances by `rows` per step."""

    @classmethod
    def allocate(cls, slots: int, agents: int, obs_shape: tuple[int, ...], num_actions: int, stochastic: bool):
        rows = slots * agents
        return cls(
            observations=np.zeros((rows, *obs_shape), dtype=dtype_observations),
            flags=np.zeros((2, slots, agents), dtype=dtype_terminals),
            rewards=np.zeros(rows, dtype=dtype_rewards),
            actions=np.zeros(rows, dtype=dtype_actions),
            vibe_actions=np.zeros(rows, dtype=dtype_actions),
            done=np.zeros((2, slots), dtype=bool),
            noise=np.zeros((rows, num_actions), dtype=np.float32) if stochastic else None,
            noise_blocks=np.zeros((NOISE_BLOCK_STEPS * rows, num_actions), np.float32) if stochastic else None,
            noise_index=np.arange(rows, dtype=np.int64),
        )

    def view(self, index: int, rows: slice) -> Buffers:
        return Buffers(
            observations=self.observations[rows],
            terminals=self.flags[0, index],
            truncations=self.flags[1, index],
            rewards=self.rewards[rows],
            masks=np.ones(rows.stop - rows.start, dtype=bool),
            actions=self.actions[rows],
            teacher_actions=self.vibe_actions[rows],
        )

    def draw_noise(self, slot: Slot) -> None:
        """Refill `slot`'s block: NOISE_BLOCK_STEPS steps of (agents, actions) Gumbel noise in one call."""
        assert self.noise_blocks is not None
        rows = self.noise.shape[0]
        blocks = self.noise_blocks.reshape(NOISE_BLOCK_STEPS, rows, -1)
        agents = slot.rows.stop - slot.rows.start
        blocks[:, slot.rows] = slot.rng.gumbel(size=(NOISE_BLOCK_STEPS, agents, blocks.shape[2]))
        self.noise_index[slot.rows] = np.arange(slot.rows.start, slot.rows.stop)


@dataclass
class Played:
    """What `play` gives back: the episodes played, and the environments a policy of the line-up could not play
    (its observation or action space does not fit): {env: one-line reason}."""

    results: list[EpisodeResult]
    env_errors: dict[str, str]


def run_episodes(
    policy: BatchPolicy,
    jobs: Sequence[EpisodeJob],
    *,
    lockstep_envs: int = DEFAULT_LOCKSTEP_ENVS,
    co_players: Mapping[str, BatchPolicy] | None = None,
) -> list[EpisodeResult]:
    """Play every job with `policy`; results come back in the order of `jobs`. An environment the policy cannot
    play raises its PolicyError (`play` returns it instead)."""
    played = play(policy, jobs, lockstep_envs=lockstep_envs, co_players=co_players)
    if played.env_errors:
        raise PolicyError(next(iter(played.env_errors.values())))
    return played.results


def play(
    policy: BatchPolicy,
    jobs: Sequence[EpisodeJob],
    *,
    lockstep_envs: int = DEFAULT_LOCKSTEP_ENVS,
    co_players: Mapping[str, BatchPolicy] | None = None,
    candidate_name: str = "candidate",
) -> Played:
    """Play every job with `policy` as the candidate; a mixed env's co-players are `co_players[digest]`. A mixed
    episode's replay names each agent's policy (`candidate_name`, or the co-player's URI) as mettagrid's own
    rollout does (`policy_infos`), so MettaScope and our player show who played which agent.

    Jobs are grouped by what a lockstep batch must share: the agent count (a slot's rows are fixed), the
    environment interface (one `bind`) and the line-up (which policies play how many agents); within a group,
    episodes of any of the environments share the batch. A group whose interface a policy refuses at `bind`
    becomes one error per environment of it; the other groups play on.
    """
    groups: dict[tuple, list[EpisodeJob]] = {}
    interfaces: dict[str, tuple[str, PolicyEnvInterface]] = {}
    for job in jobs:
        if job.env.name not in interfaces:
            interface = PolicyEnvInterface.from_mg_cfg(build_config(job.env, job.seed))
            interfaces[job.env.name] = (interface.model_dump_json(), interface)
        lineup = (job.env.seat_counts, tuple(npc.digest for npc in job.env.npcs)) if job.env.mixed else None
        groups.setdefault((job.env.num_agents, interfaces[job.env.name][0], lineup), []).append(job)
    done: dict[tuple[str, int], EpisodeResult] = {}
    env_errors: dict[str, str] = {}
    for (num_agents, _, lineup), group in sorted(groups.items(), key=lambda item: item[0][0]):
        driver = policy if lineup is None else _lineup_policy(policy, group[0].env, co_players or {}, candidate_name)
        interface = interfaces[group[0].env.name][1]
        try:
            driver.bind(interface)
        except PolicyError as exc:
            for env in dict.fromkeys(job.env.name for job in group):
                env_errors[env] = f"environment {env}: {exc}"
            continue
        for result in _run_group(driver, group, num_agents, lockstep_envs, interface):
            done[(result.env, result.episode)] = result
    results = [done[(job.env.name, job.episode)] for job in jobs if job.env.name not in env_errors]
    return Played(results, env_errors)


def _lineup_policy(
    candidate: BatchPolicy, env: EnvSpec, co_players: Mapping[str, BatchPolicy], candidate_name: str
) -> MixedPolicy:
    missing = [npc.uri for npc in env.npcs if npc.digest not in co_players]
    if missing:
        raise PolicyError(f"co-players {missing} were not handed to this worker")
    policies = [candidate, *(co_players[npc.digest] for npc in env.npcs)]
    return MixedPolicy(policies, env.seat_counts, names=[candidate_name, *(npc.uri for npc in env.npcs)])


def _run_group(
    policy: BatchPolicy, jobs: list[EpisodeJob], num_agents: int, lockstep: int, interface: PolicyEnvInterface
) -> list[EpisodeResult]:
    """Play one group of jobs with `policy`, already bound to their `interface`."""
    # Longest episodes first, so the short ones fill the tail where slots run out of work.
    pending = deque(sorted(jobs, key=lambda job: -job.env.max_steps))
    num_actions = len(interface.action_names)
    num_slots = min(lockstep, len(jobs))
    buffers = _Buffers.allocate(num_slots, num_agents, interface.observation_shape, num_actions, policy.stochastic)
    live: list[_Live | None] = [_start(policy, pending.popleft(), i, num_agents, buffers, 0) for i in range(num_slots)]
    results: list[EpisodeResult] = []
    policy_name = type(policy).__name__

    tick = 0
    batch, steps, used, noise_due = _assemble(live, buffers, num_agents)
    while used:
        if buffers.noise is not None:  # stochastic policies: ~1.3 us per step for all rows together
            if tick == noise_due:  # once per NOISE_BLOCK_STEPS per slot: one rng call (~3 us) for the next block
                noise_due = _refill_noise(live, buffers, tick)
            # One gather for all rows (~0.8 us) instead of a Gumbel draw and copy per slot (~1.5 us each).
            # mode="clip": unbuffered, and rows of an emptied slot below the last live one stay in range.
            np.take(buffers.noise_blocks, buffers.noise_index[:used], axis=0, out=buffers.noise[:used], mode="clip")
            buffers.noise_index += buffers.noise.shape[0]
        # The one policy call (the forward: ~10-18 us per row for the example MLP). check_actions, ~1.4 us, keeps
        # an out-of-range action from ever reaching the C++ step, which would index with it.
        actions = check_actions(np.asarray(policy.act(batch)), used, num_actions, policy_name)
        buffers.actions[:used] = actions
        for step in steps:  # 2-25 us of C++ per env; +13 us of Python only for slots recording a replay
            step()
        tick += 1
        # Every slot's is_done() at once: all agents terminated or all truncated (two reductions, ~2 us).
        np.all(buffers.flags, axis=2, out=buffers.done)
        if not buffers.done.any():  # the common case: nothing finished this step
            continue
        for index in np.flatnonzero(buffers.done.any(axis=0)):
            entry = live[index]
            assert entry is not None
            results.append(_finish(entry, policy))
            buffers.flags[:, index] = False
            live[index] = _start(policy, pending.popleft(), index, num_agents, buffers, tick) if pending else None
        batch, steps, used, noise_due = _assemble(live, buffers, num_agents)
    return results


def _assemble(
    live: list[_Live | None], buffers: _Buffers, num_agents: int
) -> tuple[StepBatch, list[Callable[[], None]], int, int]:
    """Rebuild what the loop holds between episode ends: the batch (rows up to the last live slot, so an
    emptying tail costs fewer forward rows), the step calls, and the tick of the next noise refill."""
    entries = [entry for entry in live if entry is not None]
    used = (max((i for i, entry in enumerate(live) if entry is not None), default=-1) + 1) * num_agents
    noise = None if buffers.noise is None else buffers.noise[:used]
    batch = StepBatch(buffers.observations[:used], noise, [entry.slot for entry in entries])
    noise_due = min((entry.noise_due for entry in entries), default=-1)
    return batch, [entry.step for entry in entries], used, noise_due


def _refill_noise(live: list[_Live | None], buffers: _Buffers, tick: int) -> int:
    for entry in live:
        if entry is not None and entry.noise_due == tick:
            buffers.draw_noise(entry.slot)
            entry.noise_due = tick + NOISE_BLOCK_STEPS
    return min(entry.noise_due for entry in live if entry is not None)


def _start(policy: BatchPolicy, job: EpisodeJob, index: int, num_agents: int, buffers: _Buffers, tick: int) -> _Live:
    rows = slice(index * num_agents, (index + 1) * num_agents)
    replay = InMemoryReplayWriter() if job.record_replay else None
    simulation = Simulation(
        build_config(job.env, job.seed),
        seed=job.seed,
        buffers=buffers.view(index, rows),
        event_handlers=[replay] if replay else (),
    )
    slot = Slot(index=index, rows=rows, simulation=simulation, rng=np.random.default_rng(job.seed), seed=job.seed)
    policy.start_episode(slot)  # before the noise: a policy's own draws come first in the episode's rng
    if replay is not None and isinstance(policy, MixedPolicy):
        policy.name_agents(slot)
    if buffers.noise is not None:
        buffers.draw_noise(slot)
    entry = _Live(slot=slot, job=job, started=time.perf_counter(), step=_stepper(simulation), replay=replay)
    entry.noise_due = tick + NOISE_BLOCK_STEPS
    return entry


def _stepper(simulation: Simulation) -> Callable[[], None]:
    """The cheapest call that advances `simulation` exactly as `Simulation.step()` does.

    `Simulation.step()` (mettagrid 0.26) is the C++ step plus talk-channel upkeep, each event handler's
    `on_step`/`on_episode_end` and Stopwatch timers: ~13 us of Python on top of a 2-25 us C++ step. With
    no handler attached (no replay writer, no game-stat episode end) and talk disabled, all of that is a
    no-op, so the C++ step alone plays the same trajectory. Anything else, or a mettagrid whose internals
    moved, keeps the wrapper.
    """
    handlers = getattr(simulation, "_event_handlers", None)
    c_sim = getattr(simulation, "_c_sim", None)
    if handlers == [] and c_sim is not None and not simulation.config.game.talk.enabled:
        return c_sim.step
    return simulation.step


def _finish(entry: _Live, policy: BatchPolicy) -> EpisodeResult:
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
        seats=tuple(int(seat) for seat in policy.seats(entry.slot.index)) if isinstance(policy, MixedPolicy) else (),
    )
    simulation.close()
    forget_stopwatch_logger(simulation)
    return result


def forget_stopwatch_logger(simulation: Simulation) -> None:
    """Drop the logger mettagrid's `Simulation` makes for its Stopwatch (`Stopwatch.<id>`, one per episode):
    the logging module keeps every logger forever, and each new one (and each `setLevel`) clears a cache
    on all of them, so a worker's episodes got slower the more it had played (measured: a new logger costs
    4 ms at 100,000 of them; per-unit time x1.7 at 10,000 checkpoints, BENCHMARKS.md "Scale")."""
    logger = getattr(getattr(simulation, "_timer", None), "logger", None)
    if not isinstance(logger, logging.Logger):
        return
    manager = logging.Logger.manager
    if manager.loggerDict.get(logger.name) is logger:
        del manager.loggerDict[logger.name]
    parent = manager.loggerDict.get(logger.name.rpartition(".")[0])
    if isinstance(parent, logging.PlaceHolder):
        parent.loggerMap.pop(logger, None)
