"""The scheduler: streams work units from a `UnitSource` to an executor (`evaluator.run.executor`: in this
process or on Ray actors, one interface) and hands back each unit's result once, in completion order.

One loop for every backend, for the tests and for `bench.scheduler`: take the checkpoints that arrived, send
what `WorkQueue.dispatch` says, wait for calls to end, and carry out what `WorkQueue.settle` and `expire` say
(report, replace a worker). The failure policy is written in `evaluator.run.work_queue`, next to the
bookkeeping; this module applies it, whatever the backend. Units stream in as their checkpoints are
downloaded (`evaluator.run.unit_stream`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from actors.protocol import UnitResult, WorkUnit
from evaluator.run.executor import Executor, RunTiming
from evaluator.run.unit_stream import UnitSource
from evaluator.run.work_queue import Settlement, WorkQueue

logger = logging.getLogger(__name__)

POLL_S = 0.02
"""How often the loop looks for newly downloaded checkpoints while downloads are in progress."""

OnResult = Callable[[WorkUnit, UnitResult], None]


def execute(
    executor: Executor, source: UnitSource, on_result: OnResult, *, max_attempts: int, unit_timeout: float | None
) -> RunTiming:
    """Start the executor's workers, run every unit `source` gives (`schedule`), read the workers' counters and
    stop them, also when something raises. The evaluation clock starts once the workers are up."""
    try:
        started = executor.start()
        evaluation_started = time.perf_counter()
        schedule(executor, source, on_result, max_attempts=max_attempts, unit_timeout=unit_timeout)
        evaluation_s = time.perf_counter() - evaluation_started
        stats = executor.stats()
    finally:
        executor.close()
    return RunTiming(
        workers_start_s=started.workers_start_s,
        evaluation_s=evaluation_s,
        workers=stats.workers,
        replaced=stats.replaced,
        nodes=started.nodes | {s.node_id for s in stats.workers},
    )


def schedule(
    executor: Executor,
    source: UnitSource,
    on_result: OnResult,
    *,
    max_attempts: int,
    unit_timeout: float | None = None,
) -> None:
    """Call `on_result(unit, result)` once per unit `source` gives, in completion order, running them on
    `executor`'s started workers."""
    queue = WorkQueue(
        [], executor.workers, max_attempts=max_attempts, unit_timeout=unit_timeout, max_in_flight=executor.max_in_flight
    )
    resident = ResidentCheckpoints(executor)
    while True:
        for batch in source.take(timeout=0.0 if queue.busy() else None):
            resident.add(batch.digest, batch.data, len(batch.units))
            queue.add_units(batch.units)
        if not queue.busy():
            if source.exhausted():
                return
            if not source.fetching():
                raise RuntimeError("the unit source holds checkpoints but gives no units")  # a bug, not input
            continue
        for call in queue.dispatch():
            executor.submit(call, resident.data[call.unit.checkpoint_digest])
        timeout = queue.wait_timeout()
        if source.fetching():
            timeout = POLL_S if timeout is None else min(timeout, POLL_S)
        for outcome in executor.poll(timeout):
            _carry_out(queue.settle(outcome), executor, resident, on_result)
        for settlement in queue.expire():
            _carry_out(settlement, executor, resident, on_result)


def _carry_out(settlement: Settlement, executor: Executor, resident: ResidentCheckpoints, on_result: OnResult) -> None:
    """Replace the worker the settlement gives up on (before anything is reported, as a fresh one may take
    the units that went back), then report each settled unit once."""
    if settlement.replace is not None:
        logger.warning("%s", settlement.warning)
        executor.replace(settlement.replace)
    for unit, result in settlement.reports:
        on_result(unit, result)
        resident.reported(unit.checkpoint_digest)


class ResidentCheckpoints:
    """Checkpoint bytes held while some of their units are unreported: kept from a checkpoint's arrival, let go
    (here and in the executor: Ray's object store) when its last unit is reported, so memory holds the
    checkpoints in flight, not the run's. Calls still running hold their own reference to the bytes."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self.data: dict[str, bytes] = {}
        self._unreported: Counter[str] = Counter()

    def add(self, digest: str, data: bytes, units: int) -> None:
        self.data[digest] = data
        self._unreported[digest] += units

    def reported(self, digest: str) -> None:
        self._unreported[digest] -= 1
        if self._unreported[digest] <= 0:
            del self._unreported[digest]
            self.data.pop(digest, None)
            self._executor.release(digest)
