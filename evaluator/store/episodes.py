"""Episodes in the results database: what a run can reuse, and what it played.

Key: (checkpoint digest, environment name and spec hash, episode seed, evaluator version). An episode's
outcome is a function of exactly these, so a stored row is the result, whichever run played it. Reads are in
bulk, one query per checkpoint (every environment of the suite at once); writes are one transaction per
finished work unit, so a driver killed mid-run loses only the units in flight.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import Engine, and_, insert, select, tuple_
from sqlalchemy.exc import IntegrityError

from actors.protocol import WorkUnit
from evaluator import __version__
from evaluator.sources import path_of
from evaluator.store.database import errors_of, open_database
from evaluator.store.schema import episodes
from sim.envs import EnvSpec, episode_seed
from sim.metrics import EpisodeResult
from sim.suites import Suite


@dataclass
class StoredEpisodes:
    """What the store holds of one checkpoint's episodes on a suite."""

    found: list[EpisodeResult] = field(default_factory=list)
    """Without replay bytes: a replay is referenced by `replay_uris`."""
    replay_uris: dict[tuple[str, int], str] = field(default_factory=dict)
    """(env name, episode) -> the replay's URI, for the found episodes that have one."""
    missing: list[tuple[str, int]] = field(default_factory=list)
    """(env name, episode) of the episodes still to play."""


@dataclass(frozen=True)
class PlayedEpisode:
    env: EnvSpec
    result: EpisodeResult
    replay_uri: str | None = None


class EpisodeStore:
    def __init__(self, url: str, version: str = __version__) -> None:
        self.url = url
        self._engine: Engine = open_database(url)
        self._version = version

    def lookup(self, digest: str, suite: Suite, replays: bool) -> StoredEpisodes:
        """The one rule for "which episodes of this checkpoint are missing" (the driver and the sweep both use
        it): an episode is stored when its row is, and episode 0 only with a replay that still exists when
        replays are on (the report links every environment's first replay)."""
        wanted = {(env.name, env.spec_hash()): env for env in suite.envs}
        query = select(episodes).where(
            episodes.c.checkpoint_digest == digest,
            episodes.c.evaluator_version == self._version,
            tuple_(episodes.c.env_name, episodes.c.env_spec_hash).in_(list(wanted)),
        )
        with errors_of(self.url, "reading episodes"), self._engine.connect() as connection:
            rows = {(row.env_name, row.seed): row for row in connection.execute(query)}
        stored = StoredEpisodes()
        for env in suite.envs:
            for episode in range(env.episodes):
                row = rows.get((env.name, episode_seed(suite.seed, env.seed_name, episode)))
                needs_replay = replays and episode == 0
                if row is None or (needs_replay and not _replay_exists(row.replay_uri)):
                    stored.missing.append((env.name, episode))
                    continue
                stored.found.append(
                    EpisodeResult(
                        env=env.name,
                        episode=episode,  # the index names the episode in this run; the outcome is the seed's
                        seed=row.seed,
                        rewards=tuple(row.rewards),
                        steps=row.steps,
                        stats=row.stats,
                        wall_s=row.wall_s,
                        seats=tuple(row.seats or ()),
                    )
                )
                if row.replay_uri:
                    stored.replay_uris[(env.name, episode)] = row.replay_uri
        return stored

    def score_samples(self, suite: Suite) -> dict[str, list[float]]:
        """Every stored episode score of each environment of `suite` (its spec, this evaluator version), whatever
        checkpoint played it: what `--plan-only` estimates an environment's spread from (the candidate's agents'
        mean reward, as the report scores an episode)."""
        wanted = {(env.name, env.spec_hash()) for env in suite.envs}
        query = select(episodes.c.env_name, episodes.c.rewards, episodes.c.seats).where(
            episodes.c.evaluator_version == self._version,
            tuple_(episodes.c.env_name, episodes.c.env_spec_hash).in_(list(wanted)),
        )
        found: dict[str, list[float]] = {env.name: [] for env in suite.envs}
        with errors_of(self.url, "reading episodes"), self._engine.connect() as connection:
            for row in connection.execute(query):
                result = EpisodeResult(row.env_name, 0, 0, tuple(row.rewards), 0, seats=tuple(row.seats or ()))
                found[row.env_name].append(result.score)
        return found

    def put_unit(
        self,
        unit: WorkUnit,
        results: Sequence[EpisodeResult],
        replay_uris: Sequence[str | None],
        run_id: int | None = None,
    ) -> None:
        """Store a unit's played episodes (`put`), each under its environment's spec and with its replay by
        URI, never its bytes."""
        envs = {job.env.name: job.env for job in unit.jobs}
        played = [
            PlayedEpisode(envs[result.env], replace(result, replay=None), uri)
            for result, uri in zip(results, replay_uris, strict=True)
        ]
        self.put(unit.checkpoint_digest, played, run_id)

    def put(self, digest: str, played: Sequence[PlayedEpisode], run_id: int | None = None) -> None:
        """Store a unit's episodes in one transaction; an episode stored meanwhile (by another run or sweep:
        the same key is the same result) is kept as it is."""
        if not played:
            return
        rows = [self._row(digest, episode, run_id) for episode in played]
        with errors_of(self.url, "storing episodes"):
            for attempt in range(2):
                try:
                    with self._engine.begin() as connection:
                        keys = [(r["env_name"], r["env_spec_hash"], r["seed"]) for r in rows]
                        existing = set(
                            connection.execute(
                                select(episodes.c.env_name, episodes.c.env_spec_hash, episodes.c.seed).where(
                                    and_(
                                        episodes.c.checkpoint_digest == digest,
                                        episodes.c.evaluator_version == self._version,
                                        tuple_(episodes.c.env_name, episodes.c.env_spec_hash, episodes.c.seed).in_(
                                            keys
                                        ),
                                    )
                                )
                            ).all()
                        )
                        new = [r for r, key in zip(rows, keys, strict=True) if key not in existing]
                        if new:
                            connection.execute(insert(episodes), new)
                    return
                except IntegrityError:  # another writer stored one of them between our read and write
                    if attempt:
                        raise

    def _row(self, digest: str, played: PlayedEpisode, run_id: int | None) -> dict:
        result = played.result
        return {
            "checkpoint_digest": digest,
            "env_name": played.env.name,
            "env_spec_hash": played.env.spec_hash(),
            "seed": result.seed,
            "evaluator_version": self._version,
            "rewards": list(result.rewards),
            "reward_mean": result.reward_mean,
            "steps": result.steps,
            "success": result.success,
            "stats": dict(result.stats),
            "wall_s": result.wall_s,
            "replay_uri": played.replay_uri,
            "run_id": run_id,
            "created_at": time.time(),
            "seats": list(result.seats) or None,
        }


def _replay_exists(uri: str | None) -> bool:
    """A local replay must still be on disk; a remote one (s3://, W&B) is trusted (checking would cost a
    request per checkpoint and environment)."""
    if not uri:
        return False
    if uri.startswith("file://") or "://" not in uri:
        return path_of(uri).is_file()
    return True
