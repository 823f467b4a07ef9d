"""checkpoints x suite environments x episode shards -> work units. Pure and deterministic: the same
inputs always give the same units, and an episode's seed never depends on how episodes were split or packed.

Episodes of environments with the same agent count are packed into units together (a unit's episodes are
one lockstep batch on a worker), so a suite run with 1-2 episodes per environment batches as many rows per
forward as one with dozens: measured in BENCHMARKS.md ("packed units").
"""

from __future__ import annotations

from collections.abc import Sequence, Set

from actors.protocol import WorkUnit
from evaluator.sources import Checkpoint
from sim.envs import episode_seed
from sim.runner import EpisodeJob
from sim.suites import Suite


def make_plan(
    checkpoints: Sequence[Checkpoint | None],
    suite: Suite,
    *,
    shard_size: int,
    replays: bool = True,
    skip: Set[tuple[int, str, int]] = frozenset(),
) -> list[WorkUnit]:
    """Units ordered checkpoint-major, so a worker that holds a checkpoint finds its next units together.
    `None` stands for a checkpoint that gets no units (it failed to fetch) but keeps its index.

    With `replays`, episode 0 of every (checkpoint, environment) is recorded. Episodes whose
    (checkpoint index, env name, episode) is in `skip` (already cached) get no unit.
    """
    units: list[WorkUnit] = []
    for index, checkpoint in enumerate(checkpoints):
        if checkpoint is not None:
            units += plan_checkpoint(
                index, checkpoint, suite, shard_size=shard_size, replays=replays, skip=skip, first_unit_id=len(units)
            )
    return units


def plan_checkpoint(
    index: int,
    checkpoint: Checkpoint,
    suite: Suite,
    *,
    shard_size: int,
    replays: bool = True,
    skip: Set[tuple[int, str, int]] = frozenset(),
    first_unit_id: int = 0,
) -> list[WorkUnit]:
    """The units of the checkpoint at position `index` of the run, numbered from `first_unit_id` (the driver
    plans each checkpoint as it arrives, so unit ids stay unique across the run)."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    units: list[WorkUnit] = []
    for jobs in _jobs_by_agent_count(index, suite, replays, skip):
        # Even shards: 40 episodes at 32 become 20 + 20, not 32 + 8 (a unit's size caps its lockstep width).
        size = -(-len(jobs) // -(-len(jobs) // shard_size))
        for start in range(0, len(jobs), size):
            chunk = tuple(jobs[start : start + size])
            units.append(WorkUnit(first_unit_id + len(units), index, checkpoint.uri, checkpoint.digest, chunk))
    return units


def _jobs_by_agent_count(
    index: int, suite: Suite, replays: bool, skip: Set[tuple[int, str, int]]
) -> list[list[EpisodeJob]]:
    """The checkpoint's episodes still to play, grouped by agent count (suite order within a group; groups in
    the order their first environment appears)."""
    groups: dict[int, list[EpisodeJob]] = {}
    for env in suite.envs:
        for episode in range(env.episodes):
            if (index, env.name, episode) in skip:
                continue
            seed = episode_seed(suite.seed, env.seed_name, episode)
            job = EpisodeJob(env, episode, seed, record_replay=replays and episode == 0)
            groups.setdefault(env.num_agents, []).append(job)
    return list(groups.values())
