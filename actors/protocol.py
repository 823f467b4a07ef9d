"""What travels between the driver and the workers: frozen models, never loose dicts."""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.envs import EnvSpec
from sim.metrics import EpisodeResult


@dataclass(frozen=True)
class WorkUnit:
    """Episodes `episodes` (with their seeds) of one environment for one checkpoint."""

    unit_id: int
    checkpoint_index: int
    checkpoint_uri: str
    checkpoint_digest: str
    env: EnvSpec
    episodes: tuple[int, ...]
    seeds: tuple[int, ...]
    replay_episodes: frozenset[int] = frozenset()

    @property
    def agent_steps_upper_bound(self) -> int:
        return len(self.episodes) * self.env.max_steps * self.env.num_agents


@dataclass(frozen=True)
class UnitResult:
    """A finished unit. `error` set means the checkpoint failed (it is not retried); `episodes` is then empty."""

    unit_id: int
    worker: str
    episodes: tuple[EpisodeResult, ...] = ()
    error: str | None = None
    loaded: bool = False
    """True when this unit had to load the checkpoint (a cache miss)."""
    load_s: float = 0.0
    run_s: float = 0.0
    held: tuple[str, ...] = ()
    """Checkpoint digests in the worker's policy cache after this unit, least recently used first: the
    scheduler sends units where their policy is really loaded."""


@dataclass(frozen=True)
class WorkerStats:
    worker: str
    device: str
    node_id: str
    gpu_ids: tuple[str, ...]
    loads: int
    hits: int
    loaded_checkpoints: tuple[str, ...] = field(default=())
    cached_policies: int = 0
    peak_rss_mb: float = 0.0
