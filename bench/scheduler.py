"""The scheduler's own cost (issue 12): microseconds per unit at 100,000 units, for few checkpoints with many
units each and for many checkpoints with few, so a cost that grows with either shows.

    python -m bench.scheduler          # a few seconds

The production loop, `evaluator.run.scheduler.schedule` (with its `WorkQueue`), drives 16 simulated workers
with 2 units in flight each: an executor (`evaluator.run.executor`) whose calls end at once, in a seeded random
order, each worker reporting a policy cache of 4. Every dispatch, completion, cache report and result the
scheduler handles is timed, without Ray; the simulated workers' own bookkeeping is included, so the figures
are an upper bound on the scheduler's cost. Target: < 20 us per unit, flat across the rows.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Mapping, Sequence

from actors.protocol import UnitResult, WorkUnit
from evaluator.run.executor import Call, ExecutorStats, Outcome, Started
from evaluator.run.scheduler import schedule
from evaluator.run.unit_stream import Batch
from sim.runner import EpisodeJob
from sim.suites import get_suite

WORKERS = 16
POLICY_CACHE = 4
SHAPES = ((100, 1_000), (1_000, 100), (10_000, 10), (100_000, 1))
"""(checkpoints, units per checkpoint): 100,000 units each."""


class SimulatedWorkers:
    """An executor whose workers only keep their policy caches (least recently used first, `cache` long): `poll`
    ends one call in flight, chosen at random, with the cache as the result's `held`; with `loss_rate`, a call
    is lost now and then instead (its worker died: its cache and its other calls go with it)."""

    max_in_flight = 2

    def __init__(self, workers: int, *, cache: int = POLICY_CACHE, loss_rate: float = 0.0, seed: int = 0) -> None:
        self.workers = workers
        self.loads = 0
        """Policy loads the workers made (a unit whose checkpoint was not in its worker's cache)."""
        self._cache = cache
        self._loss_rate = loss_rate
        self._rng = random.Random(seed)
        self._caches: list[list[str]] = [[] for _ in range(workers)]
        self._in_flight: list[Call] = []

    def start(self) -> Started:
        return Started(workers_start_s=0.0, nodes=frozenset())

    def submit(self, call: Call, checkpoint: bytes) -> None:
        self._in_flight.append(call)

    def poll(self, timeout: float | None) -> list[Outcome]:
        call = self._in_flight.pop(self._rng.randrange(len(self._in_flight)))
        if self._loss_rate and self._rng.random() < self._loss_rate:
            return [Outcome(call, lost="the simulated worker died")]
        cache, digest = self._caches[call.worker], call.unit.checkpoint_digest
        if digest in cache:
            cache.remove(digest)
        else:
            self.loads += 1
        cache.append(digest)
        del cache[: -self._cache]
        return [Outcome(call, UnitResult(call.unit.unit_id, f"w{call.worker}", held=tuple(cache)))]

    def replace(self, worker: int) -> None:
        self._in_flight = [call for call in self._in_flight if call.worker != worker]
        self._caches[worker] = []

    def release(self, digest: str) -> None:
        pass

    def stats(self) -> ExecutorStats:
        return ExecutorStats(workers=(), replaced=0)

    def close(self) -> None:
        pass


class Planned:
    """A `UnitSource` of units known up front, one batch per checkpoint, with each checkpoint's bytes (none by
    default: nothing is loaded). The bench's, and the tests' that drive the scheduler without a feed."""

    def __init__(self, units: Sequence[WorkUnit], checkpoint_bytes: Mapping[str, bytes] | None = None) -> None:
        by_digest: dict[str, list[WorkUnit]] = {}
        for unit in units:
            by_digest.setdefault(unit.checkpoint_digest, []).append(unit)
        data = checkpoint_bytes or {}
        self._batches = [Batch(digest, data.get(digest, b""), batch) for digest, batch in by_digest.items()]

    def take(self, timeout: float | None = 0.0) -> list[Batch]:
        batches, self._batches = self._batches, []
        return batches

    def exhausted(self) -> bool:
        return not self._batches

    def fetching(self) -> bool:
        return bool(self._batches)


def plan(checkpoints: int, per_checkpoint: int) -> list[WorkUnit]:
    job = EpisodeJob(get_suite("smoke").envs[0], 0, 1)
    return [
        WorkUnit(i, i // per_checkpoint, "file:///x", f"sha256:{i // per_checkpoint:08d}", (job,))
        for i in range(checkpoints * per_checkpoint)
    ]


def drive(units: list[WorkUnit]) -> tuple[float, int]:
    """Seconds to schedule every unit once, and the policy loads the workers made."""
    workers = SimulatedWorkers(WORKERS)
    source = Planned(units)
    reported = 0

    def count(unit: WorkUnit, result: UnitResult) -> None:
        nonlocal reported
        reported += 1

    started = time.perf_counter()
    schedule(workers, source, count, max_attempts=3)
    seconds = time.perf_counter() - started
    assert reported == len(units), (reported, len(units))
    return seconds, workers.loads


def main() -> int:
    print("| checkpoints x units each | us per unit | policy loads |\n|---|---|---|")
    worst = 0.0
    for checkpoints, per_checkpoint in SHAPES:
        units = plan(checkpoints, per_checkpoint)
        seconds, loads = drive(units)
        per_unit = seconds / len(units) * 1e6
        worst = max(worst, per_unit)
        print(f"| {checkpoints:,} x {per_checkpoint:,} | {per_unit:.1f} | {loads:,} |", flush=True)
    print(f"\nworst {worst:.1f} us per unit (target < 20)")
    return 0 if worst < 20 else 1


if __name__ == "__main__":
    sys.exit(main())
