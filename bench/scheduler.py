"""The scheduler's queue logic alone (issue 12): microseconds per unit at 100,000 units, for few checkpoints
with many units each and for many checkpoints with few, so a cost that grows with either shows.

    python -m bench.scheduler          # a few seconds

`evaluator.run.work_queue.WorkQueue` with 16 workers and 2 units in flight each, driven by a loop that plays the
workers (completions in a seeded random order, each worker reporting a policy cache of 4): every dispatch,
completion and cache report the scheduler makes, without Ray. The loop's own bookkeeping is included, so
the figures are an upper bound on the queue's cost. Target: < 20 us per unit, flat across the rows.
"""

from __future__ import annotations

import random
import sys
import time

from actors.protocol import WorkUnit
from evaluator.run.work_queue import WorkQueue
from sim.runner import EpisodeJob
from sim.suites import get_suite

WORKERS = 16
POLICY_CACHE = 4
SHAPES = ((100, 1_000), (1_000, 100), (10_000, 10), (100_000, 1))
"""(checkpoints, units per checkpoint): 100,000 units each."""


def plan(checkpoints: int, per_checkpoint: int) -> list[WorkUnit]:
    job = EpisodeJob(get_suite("smoke").envs[0], 0, 1)
    return [
        WorkUnit(i, i // per_checkpoint, "file:///x", f"sha256:{i // per_checkpoint:08d}", (job,))
        for i in range(checkpoints * per_checkpoint)
    ]


def drive(units: list[WorkUnit]) -> tuple[float, int]:
    """Seconds to schedule every unit once, and the policy loads the workers would have made."""
    queue: WorkQueue[int] = WorkQueue(units, WORKERS, max_attempts=3)
    rng = random.Random(0)
    caches: list[list[str]] = [[] for _ in range(WORKERS)]
    in_flight: list[tuple[int, int]] = []
    tickets = loads = 0
    started = time.perf_counter()
    while queue.busy():
        for worker in range(WORKERS):
            while (unit := queue.next_for(worker)) is not None:
                tickets += 1
                queue.dispatched(worker, tickets, unit)
                in_flight.append((tickets, worker))
        ticket, worker = in_flight.pop(rng.randrange(len(in_flight)))
        digest = queue.finished(worker, ticket).checkpoint_digest
        cache = caches[worker]
        if digest in cache:
            cache.remove(digest)
        else:
            loads += 1
        caches[worker] = (cache + [digest])[-POLICY_CACHE:]
        queue.holds(worker, caches[worker])
    return time.perf_counter() - started, loads


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
