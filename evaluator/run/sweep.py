"""`policy-evaluator sweep`: evaluate only the checkpoints the results store does not hold yet, and each of
them once, even when sweeps overlap (the nightly RayCronJob, the webhook service's jobs, a person).

The results database (`evaluator.store`) is the memory of what was evaluated: a checkpoint is done when
every episode of the suite is stored under its content digest (and episode 0 with its replay when replays
are on). A sweep is `evaluate()` with a lease admission (`LeaseAdmission`): every checkpoint of each
configured policy URI is listed and downloaded a bounded number ahead, as any run's, and as each arrives the
admission skips it if done, else takes a lease on it (in the same database: `evaluator.store.leases`, so
sweeps on different nodes exclude each other), looks at the store again under the lease (a sweep that
finished it meanwhile has released its lease), and lets the run take the ones it holds: one report,
delivered to OUTPUT_URI like any run's, and the driver's memory bounded by the work in flight. What a sweep
reports is `evaluator.run.sweep_results`.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evaluator.config import MAX_SECONDS, EvalConfig, results_db_url
from evaluator.reduce.collector import Entry
from evaluator.reduce.run_directory import atomic_write
from evaluator.run.driver import ProgressCallback, RunOutcome, evaluate
from evaluator.run.sweep_results import CheckpointState, SweepResult, SweptCheckpoint
from evaluator.store.episodes import EpisodeStore
from evaluator.store.leases import Heartbeat, Lease, LeaseTable
from sim.errors import ServiceUnavailable
from sim.suites import Suite

logger = logging.getLogger(__name__)

__all__ = ["CheckpointState", "SweepConfig", "SweepResult", "SweptCheckpoint", "sweep"]
"""The result models live in `evaluator.run.sweep_results` and the leases in `evaluator.store.leases`."""


class SweepConfig(BaseModel):
    """One sweep: an evaluation (its `checkpoints` selector picks among each policy's versions) plus the lease
    rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    evaluation: EvalConfig
    lease_ttl_s: float = Field(default=900.0, gt=0, le=MAX_SECONDS)
    """A lease not renewed for this long is stale; holders renew every third of it."""
    wait_for_leases_s: float = Field(default=0.0, ge=0, le=MAX_SECONDS)
    """Wait this long for a lease another sweep holds (then its results are usually cached)."""
    include_cached: bool = False
    """Also put already-cached checkpoints in the report (no episodes are played for them)."""

    @model_validator(mode="after")
    def _needs_the_cache(self) -> SweepConfig:
        if not self.evaluation.reuse_results:
            raise ValueError("a sweep needs the results store (it is how it knows what was evaluated)")
        if self.evaluation.target_ci is not None:
            raise ValueError("a sweep decides what is evaluated by fixed episode counts: --target-ci is for run")
        return self


class LeaseAdmission:
    """The sweep's admission (`evaluator.run.unit_stream.Admission`): as each checkpoint arrives, it is failed (its
    download), a duplicate (a digest seen under another URI or version), cached (the store holds every episode),
    leased elsewhere (another sweep holds its lease), or claimed (its lease is now ours, kept until the sweep
    ends, renewed by `heartbeat`). Claimed ones are taken; cached ones only with `include_cached`."""

    def __init__(self, config: SweepConfig, url: str) -> None:
        self._config = config
        self._url = url
        self._seen: set[str] = set()
        self.rows: dict[int, SweptCheckpoint] = {}
        """Each listed checkpoint's state, by its index in the run."""
        self.held: list[Lease] = []
        self.heartbeat = Heartbeat([], interval_s=config.lease_ttl_s / 3)

    @functools.cached_property
    def _store(self) -> EpisodeStore:
        """Opened at the first checkpoint: bad input is refused before the database is touched."""
        return EpisodeStore(self._url)

    @functools.cached_property
    def _table(self) -> LeaseTable:
        return LeaseTable(self._url, owner=self._config.evaluation.run_name, ttl_s=self._config.lease_ttl_s)

    def admit(self, index: int, entry: Entry, suite: Suite) -> bool:
        checkpoint = entry.checkpoint
        row = {
            "policy_uri": entry.policy_uri,
            "name": checkpoint.name,
            "version": checkpoint.version,
            "digest": checkpoint.digest,
        }
        if checkpoint.error:
            self.rows[index] = SweptCheckpoint(
                **row, state=CheckpointState.FAILED, missing_episodes=0, error=checkpoint.error
            )
            return False
        if checkpoint.digest in self._seen:
            self.rows[index] = SweptCheckpoint(**row, state=CheckpointState.DUPLICATE, missing_episodes=0)
            return False
        self._seen.add(checkpoint.digest)
        replays = self._config.evaluation.replays
        missing = missing_episodes(self._store, checkpoint.digest, suite, replays)
        if not missing:
            self.rows[index] = SweptCheckpoint(**row, state=CheckpointState.CACHED, missing_episodes=0)
            return self._config.include_cached
        lease = self._table.acquire(checkpoint.digest, wait_s=self._config.wait_for_leases_s)
        if lease is None:
            holder = self._table.holder(checkpoint.digest)
            self.rows[index] = SweptCheckpoint(
                **row, state=CheckpointState.LEASED_ELSEWHERE, missing_episodes=missing, holder=holder and holder.owner
            )
            return False
        # Under the lease: a sweep that finished this checkpoint meanwhile has released its lease.
        missing = missing_episodes(self._store, checkpoint.digest, suite, replays)
        if not missing:
            lease.release()
            self.rows[index] = SweptCheckpoint(**row, state=CheckpointState.CACHED, missing_episodes=0)
            return self._config.include_cached
        self.held.append(lease)
        self.heartbeat.hold(lease)
        self.rows[index] = SweptCheckpoint(**row, state=CheckpointState.EVALUATED, missing_episodes=missing)
        return True

    def release(self) -> None:
        """Release every lease held; one the database cannot release lapses after its ttl."""
        for lease in self.held:
            try:
                lease.release()
            except ServiceUnavailable as exc:
                logger.warning("could not release the lease on %s: %s", lease.key, exc)
        self.held.clear()


def sweep(config: SweepConfig, *, on_progress: ProgressCallback | None = None) -> SweepResult:
    """Evaluate, through `evaluate`, the checkpoints a lease admission takes; release the leases. Raises
    UsageError (before any lease is taken) on bad input."""
    evaluation = config.evaluation
    admission = LeaseAdmission(config, results_db_url(evaluation.storage))
    try:
        with admission.heartbeat:
            outcome = evaluate(evaluation, on_progress=on_progress, admission=admission)
    finally:
        admission.release()
    rows = [admission.rows[index] for index in sorted(admission.rows)]
    taken = None if outcome.empty else outcome
    result = SweepResult(
        run_name=evaluation.run_name,
        simulation_suite=outcome.suite,
        checkpoints=_with_errors(rows, taken),
        report=taken.report if taken else None,
    )
    atomic_write(evaluation.data_dir / evaluation.run_name / "sweep.json", result.model_dump_json(indent=2).encode())
    logger.info(
        "sweep %s: %d evaluated, %d cached, %d leased elsewhere, %d failed",
        result.run_name, result.evaluated, result.count(CheckpointState.CACHED),
        result.count(CheckpointState.LEASED_ELSEWHERE), result.count(CheckpointState.FAILED),
    )  # fmt: skip
    return result


def missing_episodes(store: EpisodeStore, digest: str, suite: Suite, replays: bool) -> int:
    """Episodes of `suite` the store lacks for this checkpoint (`EpisodeStore.lookup`'s rule)."""
    return len(store.lookup(digest, suite, replays).missing)


def _with_errors(rows: list[SweptCheckpoint], outcome: RunOutcome | None) -> list[SweptCheckpoint]:
    """Checkpoints whose evaluation failed become FAILED with the report's error."""
    if outcome is None:
        return rows
    errors = {
        (policy.policy_uri, checkpoint.digest): checkpoint.error
        for policy in outcome.report.policies
        for checkpoint in policy.checkpoints
        if checkpoint.error
    }
    return [
        row.model_copy(update={"state": CheckpointState.FAILED, "error": errors[(row.policy_uri, row.digest)]})
        if (row.policy_uri, row.digest) in errors
        else row
        for row in rows
    ]


def read_policy_list(path: Path) -> list[str]:
    """A policies file: one policy URI per line; blank lines and `#` comments are ignored."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]
