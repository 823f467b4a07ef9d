"""The run's sink: where episodes go as they arrive, I/O only. Each replay is written to its file at once (and
its bytes dropped), each episode becomes a row of episodes.parquet (`EpisodeTable`), the episodes played are
recorded in the results store under the checkpoint's digest (so later runs reuse them). The reduction itself
(`evaluator.reduce.collector`) is pure: it gets the replays' URIs from here and never touches a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from actors.protocol import WorkUnit
from evaluator.reduce.collector import Entry
from evaluator.reduce.run_directory import EpisodeRow, EpisodeTable, atomic_write, replay_path
from sim.metrics import EpisodeResult
from sim.suites import Suite


def lineup_uris(suite: Suite) -> dict[str, tuple[str, ...]]:
    """{env: its co-players' URIs, by line-up place from 1} of the suite's mixed envs."""
    return {env.name: tuple(npc.uri for npc in env.npcs) for env in suite.envs if env.mixed}


class EpisodeRecorder(Protocol):
    """What the sink needs of the results store (`evaluator.store.episodes.EpisodeStore`): handed in, not
    imported, since the store reads the report's models and the reduction stands below it."""

    def put_unit(
        self, unit: WorkUnit, results: Sequence[EpisodeResult], replay_uris: Sequence[str | None], run_id: int | None
    ) -> None: ...


@dataclass(frozen=True)
class RunSink:
    """One run's sink: its run directory, its episodes.parquet, and the results store with the run's id."""

    run_dir: Path
    table: EpisodeTable | None = None
    """Where episode rows go (None: nowhere, for callers that only want the metrics)."""
    store: EpisodeRecorder | None = None
    """The results store played episodes are recorded in (None: not recorded)."""
    run_id: int | None = None
    """The run the recorded episodes belong to (`evaluator.store.runs`)."""
    lineups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """{env: co-players' URIs by line-up place} of the mixed envs (`lineup_uris`), to name each agent's policy."""

    def write(self, index: int, entry: Entry, episodes: Sequence[EpisodeResult]) -> list[str | None]:
        """Write each episode's replay (if it carries one) and its row; the replays' URIs, in order (None: no
        replay)."""
        return [self._write(index, entry, episode) for episode in episodes]

    def _write(self, index: int, entry: Entry, episode: EpisodeResult) -> str | None:
        checkpoint = entry.checkpoint
        replay_uri = None
        if episode.replay is not None:
            path = replay_path(self.run_dir, index, checkpoint.name, episode.env, episode.episode)
            atomic_write(path, episode.replay)
            replay_uri = path.resolve().as_uri()
        if self.table is not None:
            players = (entry.policy_uri, *self.lineups.get(episode.env, ()))
            agents = tuple(players[seat] for seat in episode.seats)
            row = EpisodeRow(entry.policy_uri, checkpoint.name, checkpoint.version, checkpoint.digest, episode, agents)
            self.table.add(row)
        return replay_uri

    def record(self, unit: WorkUnit, episodes: Sequence[EpisodeResult], replay_uris: Sequence[str | None]) -> None:
        """Record a unit's played episodes in the results store (their replays by URI, never their bytes)."""
        if self.store is not None and episodes:
            self.store.put_unit(unit, episodes, replay_uris, self.run_id)
