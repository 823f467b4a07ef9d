"""Per-episode results and the plain per-environment figures of a set of episodes.

`EpisodeResult` is what crosses from a worker to the driver; `summarize` gives an environment's mean, spread,
success rate and mean length. The report's intervals and comparisons are the driver's
(`evaluator.reduce.statistics`, bootstrap and Wilson), computed from the same raw per-episode values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class EpisodeResult:
    """One played episode. `rewards` are per agent; `success` means every agent of the candidate collected a heart."""

    env: str
    episode: int
    seed: int
    rewards: tuple[float, ...]
    steps: int
    stats: Mapping[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    replay: bytes | None = field(default=None, repr=False)
    """zlib-compressed mettagrid replay JSON (replay format of `mettagrid.simulator.replay_log_writer`)."""
    seats: tuple[int, ...] = ()
    """Line-up place of each agent (0: the candidate, i: co-player i) in a mixed episode; empty when the
    candidate played every agent."""

    @property
    def reward_mean(self) -> float:
        return float(np.mean(self.rewards))

    def rewards_of(self, place: int) -> list[float]:
        """Rewards of the agents line-up place `place` played (every agent's for the candidate when unmixed)."""
        if not self.seats:
            return list(self.rewards) if place == 0 else []
        return [reward for reward, seat in zip(self.rewards, self.seats, strict=True) if seat == place]

    @property
    def score(self) -> float:
        """The candidate's score of the episode: the mean reward of its agents (of every agent when unmixed, and
        in a co-players-only episode, whose score is the co-players' per-agent mean: the replacement level)."""
        return float(np.mean(self.rewards_of(0) or self.rewards))

    @property
    def npc_score(self) -> float | None:
        """The co-players' mean reward per agent; None when the candidate played alone."""
        rewards = [reward for reward, seat in zip(self.rewards, self.seats, strict=True) if seat != 0]
        return float(np.mean(rewards)) if rewards else None

    @property
    def success(self) -> bool:
        return min(self.rewards_of(0) or self.rewards) > 0

    @property
    def agent_steps(self) -> int:
        return self.steps * len(self.rewards)


@dataclass(frozen=True)
class EnvSummary:
    """Figures of one (checkpoint, env) over its episodes; `score` is the mean per-agent reward."""

    episodes: int
    score: float
    std: float
    success_rate: float
    mean_steps: float


def summarize(results: Sequence[EpisodeResult]) -> EnvSummary:
    """Mean per-agent episode reward, its sample standard deviation, success rate and mean steps."""
    if not results:
        raise ValueError("cannot summarize zero episodes")
    rewards = np.array([r.score for r in results], dtype=np.float64)
    mean = float(rewards.mean())
    std = float(rewards.std(ddof=1)) if len(rewards) > 1 else 0.0
    return EnvSummary(
        episodes=len(results),
        score=mean,
        std=std,
        success_rate=float(np.mean([r.success for r in results])),
        mean_steps=float(np.mean([r.steps for r in results])),
    )


def episode_stats(stats: Mapping[str, object]) -> dict[str, float]:
    """Flatten mettagrid's `{"game": {...}, "agent": [{...}, ...]}` into `game/<k>` and `agent/<k>` (mean
    over agents), the names Metta's dashboards use."""
    flat = {f"game/{key}": float(value) for key, value in dict(stats.get("game", {})).items()}
    agents = list(stats.get("agent", []))
    keys = sorted({key for agent in agents for key in agent})
    for key in keys:
        flat[f"agent/{key}"] = float(np.mean([agent.get(key, 0.0) for agent in agents]))
    return flat
