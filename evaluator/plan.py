"""checkpoints x suite environments x episode shards -> work units. Pure and deterministic: the same
inputs always give the same units, and a unit's episode seeds do not depend on the shard size."""

from __future__ import annotations

from collections.abc import Sequence, Set

from actors.protocol import WorkUnit
from evaluator.sources import Checkpoint
from sim.envs import episode_seed
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
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    units: list[WorkUnit] = []
    for index, checkpoint in enumerate(checkpoints):
        if checkpoint is None:
            continue
        for env in suite.envs:
            todo = [e for e in range(env.episodes) if (index, env.name, e) not in skip]
            # Even shards: 40 episodes at 32 become 20 + 20, not 32 + 8 (a unit's size caps its lockstep width).
            shards = -(-len(todo) // shard_size)
            size = -(-len(todo) // shards) if todo else shard_size
            for start in range(0, len(todo), size):
                episodes = tuple(todo[start : start + size])
                units.append(
                    WorkUnit(
                        unit_id=len(units),
                        checkpoint_index=index,
                        checkpoint_uri=checkpoint.uri,
                        checkpoint_digest=checkpoint.digest,
                        env=env,
                        episodes=episodes,
                        seeds=tuple(episode_seed(suite.seed, env.name, i) for i in episodes),
                        replay_episodes=frozenset({0} & set(episodes)) if replays else frozenset(),
                    )
                )
    return units
