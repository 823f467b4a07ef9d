"""Scripted baselines: `random`, `noop` and `navigator`, all numpy, all vectorised over the batch.

The navigator is the yardstick that shows the metrics measure navigation: it plans a shortest path to
the nearest visible heart source inside its 13x13 view and explores with a persistent random walk
otherwise. It must beat `random` by a wide margin on most navigation environments.
"""

from __future__ import annotations

import numpy as np
from mettagrid.policy.policy_env_interface import PolicyEnvInterface

from sim.batch_policy import BatchPolicy, Slot, StepBatch
from sim.envs import HEART_SOURCES
from sim.errors import PolicyError

MOVES = ("move_north", "move_south", "move_west", "move_east")
_DELTAS = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)])
_EMPTY_LOCATION = 0xFF
_TURN_PROBABILITY = 0.02
# Direction indices follow MOVES (north, south, west, east); turns relative to a heading.
_RIGHT = np.array([3, 2, 0, 1])
_LEFT = np.array([2, 3, 1, 0])
_BACK = np.array([1, 0, 3, 2])


def _action_ids(env: PolicyEnvInterface, names: tuple[str, ...]) -> np.ndarray:
    missing = [name for name in names if name not in env.action_names]
    if missing:
        raise PolicyError(f"environment lacks actions {missing}; this baseline needs {list(names)}")
    return np.array([env.action_names.index(name) for name in names])


class RandomPolicy(BatchPolicy):
    """Uniform over the environment's primary actions, from each episode's own rng."""

    stochastic = True

    def bind(self, env: PolicyEnvInterface) -> None:
        self._num_actions = len(env.action_names)

    def act(self, batch: StepBatch) -> np.ndarray:
        assert batch.noise is not None
        return batch.noise[:, : self._num_actions].argmax(axis=1)


class NoopPolicy(BatchPolicy):
    def bind(self, env: PolicyEnvInterface) -> None:
        self._noop = int(_action_ids(env, ("noop",))[0])

    def act(self, batch: StepBatch) -> np.ndarray:
        return np.full(batch.observations.shape[0], self._noop)


class NavigatorPolicy(BatchPolicy):
    """Breadth-first planning to the nearest visible heart source; persistent random walk otherwise."""

    stochastic = True

    def __init__(self) -> None:
        self._heading = np.zeros(0, dtype=np.int64)

    def bind(self, env: PolicyEnvInterface) -> None:
        feature_ids = {feature.name: feature.id for feature in env.obs_features}
        if "tag" not in feature_ids:
            raise PolicyError("navigator needs the 'tag' observation feature")
        self._tag_feature = feature_ids["tag"]
        self._goal_tags = np.array([i for i, tag in enumerate(env.tags) if tag.split(":")[-1] in HEART_SOURCES])
        self._height, self._width = env.egocentric_shape
        self._center = (self._height // 2, self._width // 2)
        # mettagrid observes a disc, not the whole window (measured on 0.26.22: dr^2 + dc^2 <= r^2 + 1).
        # Cells outside it are unknown, and the planner must not route through them.
        dr, dc = np.ogrid[: self._height, : self._width]
        radius = min(self._center)
        self._visible = (dr - self._center[0]) ** 2 + (dc - self._center[1]) ** 2 <= radius * radius + 1
        self._moves = _action_ids(env, MOVES)

    def start_episode(self, slot: Slot) -> None:
        needed = slot.rows.stop
        if self._heading.shape[0] < needed:
            self._heading = np.concatenate([self._heading, np.zeros(needed - self._heading.shape[0], np.int64)])
        self._heading[slot.rows] = slot.rng.integers(0, 4, slot.rows.stop - slot.rows.start)

    def act(self, batch: StepBatch) -> np.ndarray:
        assert batch.noise is not None
        blocked, goals = self._local_maps(batch.observations)
        distance = self._distance_to_goals(blocked, goals)
        n = batch.observations.shape[0]
        heading = self._heading[:n]
        r, c = self._center
        neighbour = np.stack([distance[:, r + dr, c + dc] for dr, dc in _DELTAS], axis=1)
        open_dirs = np.stack([~blocked[:, r + dr, c + dc] | goals[:, r + dr, c + dc] for dr, dc in _DELTAS], axis=1)
        planned = neighbour.min(axis=1) < np.iinfo(np.int32).max

        # Explore by following a right-hand wall: turn right only where the wall on the right just ended
        # (the cell behind-right is blocked), otherwise keep going. That solves simply connected mazes and,
        # unlike "always try right first", crosses open floor instead of circling a 2x2 square.
        right, back = _RIGHT[heading], _BACK[heading]
        behind_right = blocked[
            np.arange(n), r + _DELTAS[right, 0] + _DELTAS[back, 0], c + _DELTAS[right, 1] + _DELTAS[back, 1]
        ]
        follow_wall = open_dirs[np.arange(n), right] & behind_right
        candidates = np.where(
            follow_wall[:, None],
            np.stack([right, heading, _LEFT[heading], back], axis=1),
            np.stack([heading, _LEFT[heading], right, back], axis=1),
        )
        candidate_open = np.take_along_axis(open_dirs, candidates, axis=1)
        wall_follow = candidates[np.arange(n), candidate_open.argmax(axis=1)]
        # A rare random turn keeps agents from circling a free-standing obstacle forever.
        turn = batch.noise[:, 0] > -np.log(-np.log(1 - _TURN_PROBABILITY))
        random_open = np.where(open_dirs, batch.noise[:, :4], -np.inf).argmax(axis=1)
        direction = np.where(planned, neighbour.argmin(axis=1), np.where(turn, random_open, wall_follow))
        heading[:] = direction  # a planned detour also turns the explorer, so it never undoes the detour
        return self._moves[direction]

    def follow(self, actions: np.ndarray) -> None:
        """Continue exploring from moves another policy made (DAgger labelling: the navigator answers "what
        would you do, having walked this way" instead of continuing the walk it imagined)."""
        heading = self._heading[: len(actions)]
        for direction, action in enumerate(self._moves):
            heading[actions == action] = direction

    def _local_maps(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(agents, H, W) masks of cells holding any object, and of cells holding a heart source."""
        n = observations.shape[0]
        location = observations[:, :, 0]
        is_tag = (observations[:, :, 1] == self._tag_feature) & (location != _EMPTY_LOCATION)
        agent_idx, token_idx = np.nonzero(is_tag)
        loc = location[agent_idx, token_idx].astype(np.int64)
        rows, cols = loc >> 4, loc & 0x0F
        values = observations[agent_idx, token_idx, 2]
        blocked = np.zeros((n, self._height, self._width), dtype=bool)
        goals = np.zeros_like(blocked)
        blocked[agent_idx, rows, cols] = True
        is_goal = np.isin(values, self._goal_tags)
        goals[agent_idx[is_goal], rows[is_goal], cols[is_goal]] = True
        blocked[:, self._center[0], self._center[1]] = False
        return blocked, goals

    def _distance_to_goals(self, blocked: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """Steps from every cell to the nearest goal through free cells (wavefront relaxation)."""
        far = np.iinfo(np.int32).max
        distance = np.where(goals, 0, far).astype(np.int64)
        passable = ~blocked & self._visible
        for _ in range(self._height * self._width):
            padded = np.pad(distance, ((0, 0), (1, 1), (1, 1)), constant_values=far)
            best = np.minimum.reduce(
                [padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]]
            )
            relaxed = np.where(passable & (best < far), np.minimum(distance, best + 1), distance)
            if np.array_equal(relaxed, distance):
                break
            distance = relaxed
        return distance


BASELINES: dict[str, type[BatchPolicy]] = {
    "random": RandomPolicy,
    "noop": NoopPolicy,
    "navigator": NavigatorPolicy,
}
