"""A `UnitSource` of units known up front, for tests that drive the scheduler without a checkpoint feed."""

from __future__ import annotations

from collections.abc import Sequence

from actors.protocol import WorkUnit
from evaluator.run.unit_stream import Batch


class FixedUnits:
    """A `UnitSource` of units known up front."""

    def __init__(self, units: Sequence[WorkUnit], checkpoint_bytes: dict[str, bytes]) -> None:
        by_digest: dict[str, list[WorkUnit]] = {}
        for unit in units:
            by_digest.setdefault(unit.checkpoint_digest, []).append(unit)
        self._batches = [Batch(d, checkpoint_bytes[d], u) for d, u in by_digest.items()]

    def take(self, timeout: float | None = 0.0) -> list[Batch]:
        batches, self._batches = self._batches, []
        return batches

    def exhausted(self) -> bool:
        return not self._batches

    def fetching(self) -> bool:
        return bool(self._batches)
