"""The collector: takes episode results as units finish (and from the results store), writes each replay
when it arrives, and keeps what the report is reduced from once, at the end (`evaluator.report_assembly`).
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from actors.protocol import UnitResult, WorkerStats, WorkUnit
from evaluator.outputs.local import EpisodeRow, atomic_write, replay_path
from evaluator.report import Timing
from evaluator.results_cache import ResultsCache
from evaluator.sources import Checkpoint
from sim.metrics import EpisodeResult
from sim.suites import Suite


@dataclass(frozen=True)
class Entry:
    """A checkpoint with the policy URI it came from; its index in the run is its position in the plan."""

    policy_uri: str
    checkpoint: Checkpoint


@dataclass
class Collector:
    """Accumulates unit results as they stream in; writes replays at once."""

    run_dir: Path
    entries: Sequence[Entry]
    suite: Suite
    results: dict[int, list[EpisodeResult]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    replay_urls: dict[tuple[int, str], str] = field(default_factory=dict)
    cached_episodes: int = 0
    played_agent_steps: int = 0
    workers_replaced: int = 0
    workers_start_s: float = 0.0

    def __post_init__(self) -> None:
        for index, entry in enumerate(self.entries):
            if entry.checkpoint.error:
                self.errors[index] = entry.checkpoint.error

    def add_cached(self, cache: ResultsCache, replays: bool) -> set[tuple[int, str, int]]:
        """Take every episode the cache already holds (`ResultsCache.lookup`'s rule); return their
        (checkpoint index, env, episode) keys, which the plan then skips."""
        found: set[tuple[int, str, int]] = set()
        for index, entry in enumerate(self.entries):
            if entry.checkpoint.error:
                continue
            for result in cache.lookup(entry.checkpoint.digest, self.suite, replays).found:
                self._keep(index, result)
                found.add((index, result.env, result.episode))
        self.cached_episodes = len(found)
        return found

    def add(self, unit: WorkUnit, result: UnitResult) -> None:
        index = unit.checkpoint_index
        if result.error:
            self.errors.setdefault(index, result.error)
            return
        for episode in result.episodes:
            self._keep(index, episode)
            self.played_agent_steps += episode.agent_steps

    def _keep(self, index: int, episode: EpisodeResult) -> None:
        self.results.setdefault(index, []).append(episode)
        if episode.replay is not None:
            name = self.entries[index].checkpoint.name
            path = replay_path(self.run_dir, index, name, episode.env, episode.episode)
            atomic_write(path, episode.replay)
            self.replay_urls[(index, episode.env)] = path.resolve().as_uri()

    def rows(self) -> list[EpisodeRow]:
        """One row per episode: checkpoints in plan order, environments in suite order, then episode."""
        env_order = {env.name: i for i, env in enumerate(self.suite.envs)}
        rows = []
        for index, entry in enumerate(self.entries):
            for result in sorted(self.results.get(index, []), key=lambda r: (env_order[r.env], r.episode)):
                checkpoint = entry.checkpoint
                rows.append(
                    EpisodeRow(entry.policy_uri, checkpoint.name, checkpoint.version, checkpoint.digest, result)
                )
        return rows

    def timing(self, wall_s: float, ray_init_s: float, evaluation_s: float, stats: list[WorkerStats]) -> Timing:
        agent_steps = self.played_agent_steps
        return Timing(
            wall_s=wall_s,
            ray_init_s=ray_init_s,
            evaluation_s=evaluation_s,
            agent_steps=agent_steps,
            agent_steps_per_s=agent_steps / evaluation_s if evaluation_s > 0 else 0.0,
            episodes=sum(len(results) for results in self.results.values()),
            episodes_cached=self.cached_episodes,
            policy_loads=sum(s.loads for s in stats),
            workers=len(stats),
            workers_replaced=self.workers_replaced,
            workers_start_s=self.workers_start_s,
            driver_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
        )
