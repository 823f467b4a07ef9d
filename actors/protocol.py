"""What travels between the driver and the workers: frozen models, never loose dicts."""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.metrics import EpisodeResult
from sim.runner import EpisodeJob


@dataclass(frozen=True)
class WorkUnit:
    """Episodes for one checkpoint, played together in one lockstep batch: of one environment, or of
    several with the same agent count (`evaluator.run.plan` packs them, so that suites with few episodes per
    environment still batch many rows per forward)."""

    unit_id: int
    checkpoint_index: int
    checkpoint_uri: str
    checkpoint_digest: str
    jobs: tuple[EpisodeJob, ...]

    @property
    def agent_steps_upper_bound(self) -> int:
        return sum(job.env.max_steps * job.env.num_agents for job in self.jobs)


CoPlayerBytes = tuple[str, bytes]
"""A co-player as the driver hands it to every worker: (its URI, its checkpoint bytes), keyed by digest."""


@dataclass(frozen=True)
class UnitResult:
    """A finished unit. `error` set means the checkpoint failed (it is not retried); `episodes` is then empty."""

    unit_id: int
    worker: str
    episodes: tuple[EpisodeResult, ...] = ()
    error: str | None = None
    env_errors: tuple[tuple[str, str], ...] = ()
    """(env, reason) of each environment of the unit a policy of its line-up could not play (its observation
    or action space does not fit): those environments fail for this checkpoint, the others stand."""
    loaded: bool = False
    """True when this unit had to load the checkpoint (a cache miss)."""
    load_s: float = 0.0
    run_s: float = 0.0
    held: tuple[str, ...] = ()
    """Checkpoint digests in the worker's policy cache after this unit, least recently used first: the
    scheduler sends units where their policy is really loaded."""
    node_id: str = ""
    """The Ray node the unit ran on (the cost estimate counts the nodes our workers ran on); empty when the
    driver made the result itself (a timeout, a unit that kept killing its workers)."""


@dataclass(frozen=True)
class WorkerStats:
    """A worker's counters: one record from the actor to the report (its fields are the report's `workers`
    entries, `evaluator.reduce.report.WorkerReport`, one for one)."""

    worker: str
    device: str
    node_id: str
    gpu_ids: tuple[str, ...]
    policy_loads: int
    cache_hits: int
    loaded_checkpoints: tuple[str, ...] = field(default=())
    cached_policies: int = 0
    peak_rss_mb: float = 0.0
    gpu_share: float = 0.0
    """The GPUs the worker's actor asked Ray for (a fraction when workers share a GPU); 0 on CPU."""
