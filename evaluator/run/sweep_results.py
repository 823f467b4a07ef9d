"""What a sweep reports: every checkpoint's state and the report of what it evaluated. Plain pydantic models,
below both the sweep and the webhook service (which reads them from a job's output without loading the
evaluator's heavy parts)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, computed_field

from evaluator.reduce.report import Report


class CheckpointState(StrEnum):
    EVALUATED = "evaluated"
    """This sweep held its lease and played its missing episodes."""
    CACHED = "cached"
    """Every episode already in the results store (reported from it with --include-cached)."""
    LEASED_ELSEWHERE = "leased_elsewhere"
    """Another sweep holds its lease: it is being evaluated there."""
    DUPLICATE = "duplicate"
    """The same bytes as a checkpoint listed earlier in this sweep."""
    FAILED = "failed"
    """It could not be fetched, or its evaluation failed (see `error`)."""


class SweptCheckpoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    policy_uri: str
    name: str
    version: str
    digest: str
    state: CheckpointState
    missing_episodes: int = Field(description="episodes not in the results store when the sweep looked")
    holder: str | None = Field(default=None, description="the lease holder, for leased_elsewhere")
    error: str | None = None


class SweepResult(BaseModel):
    """What `policy-evaluator sweep` prints: every checkpoint's state and the report of what was evaluated."""

    model_config = ConfigDict(frozen=True)

    run_name: str
    simulation_suite: str
    checkpoints: list[SweptCheckpoint]
    report: Report | None = Field(description="the evaluation run's report; null when nothing was evaluated")

    def count(self, state: CheckpointState) -> int:
        return sum(1 for c in self.checkpoints if c.state is state)

    @computed_field
    @property
    def evaluated(self) -> int:
        return self.count(CheckpointState.EVALUATED)

    @computed_field
    @property
    def failed(self) -> bool:
        delivery_failed = self.report is not None and self.report.output is not None and bool(self.report.output.error)
        return delivery_failed or self.count(CheckpointState.FAILED) > 0
