"""The collector: takes episode results as units finish (and from the results store) and lets go of each as
soon as it can. A replay is written when it arrives and dropped; every episode goes to episodes.parquet as
it arrives (`EpisodeTable`); a checkpoint's episodes are reduced to its metrics the moment its last one is in
(sorted, so the figures never depend on arrival order) and dropped. The driver's memory is then the
episodes of checkpoints still in flight plus one metrics block per finished checkpoint.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from actors.protocol import UnitResult, WorkerStats, WorkUnit
from evaluator.outputs.local import EpisodeRow, EpisodeTable, atomic_write, replay_path
from evaluator.report import CheckpointMetrics, CheckpointReport, Timing
from evaluator.report_assembly import checkpoint_metrics
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
    table: EpisodeTable | None = None
    """Where episode rows go as they arrive (None: nowhere, for callers that only want the metrics)."""
    results: dict[int, list[EpisodeResult]] = field(default_factory=dict)
    """Episodes (without replay and stats) of checkpoints not complete yet."""
    metrics: dict[int, CheckpointMetrics] = field(default_factory=dict)
    """Complete checkpoints, reduced."""
    episodes: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    replay_urls: dict[tuple[int, str], str] = field(default_factory=dict)
    cached_episodes: int = 0
    played_agent_steps: int = 0
    workers_replaced: int = 0
    workers_start_s: float = 0.0

    def __post_init__(self) -> None:
        self._expected = sum(env.episodes for env in self.suite.envs)
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
            self.results.pop(index, None)
            return
        for episode in result.episodes:
            self._keep(index, episode)
            self.played_agent_steps += episode.agent_steps

    def _keep(self, index: int, episode: EpisodeResult) -> None:
        checkpoint = self.entries[index].checkpoint
        if episode.replay is not None:
            path = replay_path(self.run_dir, index, checkpoint.name, episode.env, episode.episode)
            atomic_write(path, episode.replay)
            self.replay_urls[(index, episode.env)] = path.resolve().as_uri()
        if self.table is not None:
            row = EpisodeRow(
                self.entries[index].policy_uri, checkpoint.name, checkpoint.version, checkpoint.digest, episode
            )
            self.table.add(row)
        self.episodes += 1
        if index in self.errors:
            return
        kept = self.results.setdefault(index, [])
        kept.append(replace(episode, replay=None, stats={}))
        if len(kept) == self._expected:
            self.metrics[index] = checkpoint_metrics(self.suite, kept)
            del self.results[index]

    def checkpoint_reports(self) -> list[tuple[str, CheckpointReport]]:
        """Each checkpoint, in the run's order, with its policy URI: its metrics, first replay, or error."""
        reports = []
        for index, entry in enumerate(self.entries):
            checkpoint, error = entry.checkpoint, self.errors.get(index)
            metrics = None if error else self.metrics.get(index)
            if metrics is None and not error:  # not every episode came in (cannot happen without an error)
                metrics = checkpoint_metrics(self.suite, self.results.get(index, []))
            report = CheckpointReport(
                name=checkpoint.name,
                uri=checkpoint.uri,
                version=checkpoint.version,
                digest=checkpoint.digest,
                metrics=metrics,
                replay_url=None if error else self.replay_urls.get((index, self.suite.envs[0].name)),
                error=error,
            )
            reports.append((entry.policy_uri, report))
        return reports

    def timing(self, wall_s: float, ray_init_s: float, evaluation_s: float, stats: list[WorkerStats]) -> Timing:
        agent_steps = self.played_agent_steps
        return Timing(
            wall_s=wall_s,
            ray_init_s=ray_init_s,
            evaluation_s=evaluation_s,
            agent_steps=agent_steps,
            agent_steps_per_s=agent_steps / evaluation_s if evaluation_s > 0 else 0.0,
            episodes=self.episodes,
            episodes_cached=self.cached_episodes,
            policy_loads=sum(s.loads for s in stats),
            workers=len(stats),
            workers_replaced=self.workers_replaced,
            workers_start_s=self.workers_start_s,
            driver_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
        )
