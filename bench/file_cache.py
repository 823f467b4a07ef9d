"""The per-episode file cache of evaluator 0.1, kept here only as the baseline of `bench.results_store`
(the evaluator itself now keeps episodes in its results database, `evaluator.store`).

Episode results stored in DATA_DIR, so an interrupted or repeated evaluation only plays what is missing.

Key: (checkpoint digest, environment spec hash, episode seed, evaluator version). An episode's outcome is
a function of exactly these (DESIGN.md: seeds depend only on suite seed, env and index), so a cached
result is the result. Entries are written atomically (temp name + rename) and carry a checksum of their
body: a torn or corrupted entry is detected, ignored and recomputed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evaluator import __version__
from evaluator.reduce.run_directory import atomic_write
from sim.envs import EnvSpec, episode_seed
from sim.metrics import EpisodeResult
from sim.suites import Suite

logger = logging.getLogger(__name__)


@dataclass
class CachedEpisodes:
    """What the cache holds of one checkpoint's episodes on a suite."""

    found: list[EpisodeResult] = field(default_factory=list)
    missing: list[tuple[str, int]] = field(default_factory=list)
    """(env name, episode) of the episodes still to play."""


class ResultsCache:
    def __init__(self, data_dir: Path, version: str = __version__) -> None:
        self._root = data_dir / "cache" / "results" / f"evaluator-{version}"

    def path(self, digest: str, env: EnvSpec, seed: int) -> Path:
        checkpoint = digest.removeprefix("sha256:")
        return self._root / checkpoint[:2] / checkpoint / f"{env.name}-{env.spec_hash()}" / f"{seed}.json"

    def get(self, digest: str, env: EnvSpec, seed: int, episode: int) -> EpisodeResult | None:
        path = self.path(digest, env, seed)
        try:
            entry = json.loads(path.read_bytes())
            body = entry["body"]
            if entry["sha256"] != _checksum(body):
                raise ValueError("checksum mismatch")
            fields = json.loads(body)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring damaged cache entry %s (%s); the episode is replayed", path, exc)
            return None
        replay = base64.b64decode(fields.pop("replay")) if fields.get("replay") else None
        fields["rewards"] = tuple(fields["rewards"])
        # The episode index names the episode in this run; the outcome depends on the seed alone.
        return EpisodeResult(**{**fields, "episode": episode, "replay": replay})

    def lookup(self, digest: str, suite: Suite, replays: bool) -> CachedEpisodes:
        """The one rule for "which episodes of this checkpoint are missing" (the driver and the sweep both use
        it): an episode is cached when its entry is, and episode 0 only with its replay when replays are on
        (the report links every environment's first replay)."""
        lookup = CachedEpisodes()
        for env in suite.envs:
            for episode in range(env.episodes):
                result = self.get(digest, env, episode_seed(suite.seed, env.name, episode), episode)
                if result is None or (replays and episode == 0 and result.replay is None):
                    lookup.missing.append((env.name, episode))
                else:
                    lookup.found.append(result)
        return lookup

    def put(self, digest: str, env: EnvSpec, result: EpisodeResult) -> None:
        fields = asdict(result)
        fields["replay"] = base64.b64encode(result.replay).decode() if result.replay else None
        body = json.dumps(fields, sort_keys=True)
        entry = json.dumps({"sha256": _checksum(body), "body": body})
        atomic_write(self.path(digest, env, result.seed), entry.encode())


def _checksum(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()
