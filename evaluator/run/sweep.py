"""`policy-evaluator sweep`: evaluate only the checkpoints the results store does not hold yet, and each of
them once, even when sweeps overlap (the nightly RayCronJob, the webhook service's jobs, a person).

The results database (`evaluator.store`) is the memory of what was evaluated: a checkpoint is done when
every episode of the suite is stored under its content digest (and episode 0 with its replay when replays
are on). A sweep lists every checkpoint of each configured policy URI, skips the done ones, takes a lease on
each of the others (in the same database: `evaluator.store.leases`, so sweeps on different nodes exclude
each other), looks at the store again under the lease (a sweep that finished it meanwhile has released its
lease), and evaluates the ones it holds in one `evaluate()` run: one report, delivered to OUTPUT_URI like any
run's. What a sweep reports is `evaluator.run.sweep_results`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evaluator.config import MAX_SECONDS, EvalConfig, results_db_url
from evaluator.outputs import preflight_run
from evaluator.outputs.local import atomic_write
from evaluator.run.driver import ProgressCallback, RunOutcome, evaluate, load_suite, source_settings
from evaluator.run.sweep_results import CheckpointState, SweepResult, SweptCheckpoint
from evaluator.sources import Checkpoint, resolve
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


@dataclass
class _Claims:
    """The sweep's bookkeeping while it claims checkpoints."""

    rows: list[SweptCheckpoint]
    chosen: dict[str, list[Checkpoint]]
    held: list[Lease]


def sweep(config: SweepConfig, *, on_progress: ProgressCallback | None = None) -> SweepResult:
    """List, claim, evaluate, release. Raises UsageError (before any lease is taken) on bad input."""
    evaluation = config.evaluation
    suite = load_suite(evaluation)
    settings = source_settings(evaluation)
    preflight_run(evaluation, settings)
    found = [(uri, c) for uri in evaluation.policy_uris for c in resolve(uri, evaluation.checkpoints, settings)]
    url = results_db_url(evaluation)
    table = LeaseTable(url, owner=evaluation.run_name, ttl_s=config.lease_ttl_s)
    claims = _Claims(rows=[], chosen={}, held=[])
    outcome = None
    try:
        _claim_all(found, config, suite, EpisodeStore(url), table, claims)
        if claims.chosen:
            run = evaluation.model_copy(update={"policy_uris": tuple(claims.chosen)})
            with Heartbeat(claims.held, interval_s=config.lease_ttl_s / 3):
                outcome = evaluate(run, on_progress=on_progress, resolved=claims.chosen)
    finally:
        for lease in claims.held:
            try:
                lease.release()
            except ServiceUnavailable as exc:  # the database is away: the lease lapses after its ttl
                logger.warning("could not release the lease on %s: %s", lease.key, exc)
    result = SweepResult(
        run_name=evaluation.run_name,
        simulation_suite=suite.name,
        checkpoints=_with_errors(claims.rows, outcome),
        report=outcome.report if outcome else None,
    )
    atomic_write(evaluation.data_dir / evaluation.run_name / "sweep.json", result.model_dump_json(indent=2).encode())
    logger.info(
        "sweep %s: %d evaluated, %d cached, %d leased elsewhere, %d failed",
        result.run_name, result.evaluated, result.count(CheckpointState.CACHED),
        result.count(CheckpointState.LEASED_ELSEWHERE), result.count(CheckpointState.FAILED),
    )  # fmt: skip
    return result


def _claim_all(
    found: Sequence[tuple[str, Checkpoint]],
    config: SweepConfig,
    suite: Suite,
    store: EpisodeStore,
    table: LeaseTable,
    claims: _Claims,
) -> None:
    """Decide each checkpoint's state; take and keep the leases of those to evaluate (in `claims.held`)."""
    replays = config.evaluation.replays
    seen: set[str] = set()
    for uri, checkpoint in found:
        row = {"policy_uri": uri, "name": checkpoint.name, "version": checkpoint.version, "digest": checkpoint.digest}
        if checkpoint.error:
            claims.rows.append(
                SweptCheckpoint(**row, state=CheckpointState.FAILED, missing_episodes=0, error=checkpoint.error)
            )
            continue
        if checkpoint.digest in seen:
            claims.rows.append(SweptCheckpoint(**row, state=CheckpointState.DUPLICATE, missing_episodes=0))
            continue
        seen.add(checkpoint.digest)
        missing = missing_episodes(store, checkpoint.digest, suite, replays)
        lease = None
        if missing:
            lease = table.acquire(checkpoint.digest, wait_s=config.wait_for_leases_s)
            if lease is None:
                holder = table.holder(checkpoint.digest)
                state = CheckpointState.LEASED_ELSEWHERE
                claims.rows.append(
                    SweptCheckpoint(**row, state=state, missing_episodes=missing, holder=holder and holder.owner)
                )
                continue
            # Under the lease: a sweep that finished this checkpoint meanwhile has released its lease.
            missing = missing_episodes(store, checkpoint.digest, suite, replays)
            if not missing:
                lease.release()
                lease = None
        state = CheckpointState.EVALUATED if lease else CheckpointState.CACHED
        claims.rows.append(SweptCheckpoint(**row, state=state, missing_episodes=missing))
        if lease:
            claims.held.append(lease)
        if lease or config.include_cached:
            claims.chosen.setdefault(uri, []).append(checkpoint)


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
