"""The scheduler: streams work units to a pool of `EvalWorker` actors and hands back each unit's result once.

Remote calls stay visible here: `.remote`, `ray.put`, `ray.wait`, `ray.get`, `ray.kill`. Results are
collected in completion order with `ray.wait` in our own loop, not `ray.util.ActorPool`, which hands work
to dead actors and stalls (ray#50313). Which unit goes where, and what a death or a hang does to the queue,
is `evaluator.run.work_queue` (pure, with the failure policy written next to it); this module only applies it
to actors. Units stream in from a `UnitSource` (`evaluator.run.unit_stream`) as their checkpoints are downloaded.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import ray
from ray.exceptions import RayError

from actors.protocol import UnitResult, WorkUnit
from evaluator.run.unit_stream import Batch, UnitSource
from evaluator.run.work_queue import WorkQueue
from sim.errors import first_line

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT_PER_WORKER = 2
"""Two units queued per actor hide the round trip between units without starving other actors."""

POLL_S = 0.02
"""How often the loop looks for newly downloaded checkpoints while downloads are in progress."""

OnResult = Callable[[WorkUnit, UnitResult], None]


class Scheduler:
    """Runs `units` on `count` workers, worker `i` made by `new_worker(i)`; replaces dead and hung workers itself
    (actors have no Ray restarts, so the in-flight accounting never races an actor coming back), a replacement
    made by `new_worker` with the dead worker's index, so it takes the same slot (node and resources)."""

    def __init__(
        self,
        new_worker: Callable[[int], ray.actor.ActorHandle],
        count: int,
        max_attempts: int,
        unit_timeout: float | None = None,
    ) -> None:
        self._new_worker = new_worker
        self._workers = [new_worker(index) for index in range(count)]
        self._bytes: dict[str, bytes] = {}
        self._refs: dict[str, ray.ObjectRef] = {}
        """Checkpoint bytes in the object store: put at a checkpoint's first dispatch, dropped (with the bytes
        themselves) when its last unit is reported, so memory holds the checkpoints in flight, not the run's."""
        self._unreported: Counter[str] = Counter()
        self._queue: WorkQueue[ray.ObjectRef] = WorkQueue(
            [], count, max_attempts=max_attempts, unit_timeout=unit_timeout, max_in_flight=MAX_IN_FLIGHT_PER_WORKER
        )
        self._unit_timeout = unit_timeout
        self.replaced = 0

    @property
    def workers(self) -> list[ray.actor.ActorHandle]:
        return list(self._workers)

    def add(self, batch: Batch) -> None:
        self._bytes[batch.digest] = batch.data
        self._unreported[batch.digest] += len(batch.units)
        self._queue.add_units(batch.units)

    def run(self, source: UnitSource, on_result: OnResult) -> None:
        """Call `on_result(unit, result)` once per unit `source` gives, in completion order."""
        while True:
            for batch in source.take(timeout=0.0 if self._queue.busy() else None):
                self.add(batch)
            if not self._queue.busy():
                if source.exhausted():
                    return
                if not source.fetching():
                    raise RuntimeError("the unit source holds checkpoints but gives no units")  # a bug, not input
                continue
            self._fill()
            owner = self._queue.owners()
            timeout = self._queue.wait_timeout()
            if source.fetching():
                timeout = POLL_S if timeout is None else min(timeout, POLL_S)
            ready, _ = ray.wait(list(owner), num_returns=1, timeout=timeout)
            for ref in ready:
                worker = owner[ref]
                unit = self._queue.finished(worker, ref)
                result = self._collect(ref, unit, worker)
                if result is not None:
                    if result.held:
                        self._queue.holds(worker, result.held)
                    self._report(unit, result, on_result)
            for worker, unit in self._queue.expired():
                error = f"timed out after {self._unit_timeout:g} s (--unit-timeout); its worker was replaced"
                logger.warning("unit %d %s", unit.unit_id, error)
                self._restart(worker)
                self._report(unit, UnitResult(unit_id=unit.unit_id, worker=str(worker), error=error), on_result)

    def _fill(self) -> None:
        for worker, actor in enumerate(self._workers):
            while (unit := self._queue.next_for(worker)) is not None:
                ref = actor.run.remote(unit, self._checkpoint_ref(unit.checkpoint_digest))
                self._queue.dispatched(worker, ref, unit)

    def _checkpoint_ref(self, digest: str) -> ray.ObjectRef:
        if digest not in self._refs:
            self._refs[digest] = ray.put(self._bytes[digest])
        return self._refs[digest]

    def _collect(self, ref: ray.ObjectRef, unit: WorkUnit, worker: int) -> UnitResult | None:
        """The unit's result, or None when it was re-queued after its worker died."""
        try:
            return ray.get(ref)
        except RayError as exc:
            attempts = self._queue.worker_lost(worker, unit)
            reason = first_line(exc)
            logger.warning("unit %d failed on worker %d (attempt %d: %s)", unit.unit_id, worker, attempts, reason)
            self._restart(worker)
            if not self._queue.exhausted(attempts):
                return None
            return UnitResult(unit_id=unit.unit_id, worker=str(worker), error=f"failed {attempts} times: {reason}")

    def _restart(self, worker: int) -> None:
        """Kill the actor (if still alive) and start a fresh one in its slot."""
        ray.kill(self._workers[worker], no_restart=True)
        self._workers[worker] = self._new_worker(worker)
        self.replaced += 1

    def _report(self, unit: WorkUnit, result: UnitResult, on_result: OnResult) -> None:
        on_result(unit, result)
        reported = [unit]
        if result.error:
            for other in self._queue.drop_checkpoint(unit.checkpoint_digest):
                on_result(other, UnitResult(unit_id=other.unit_id, worker=result.worker, error=result.error))
                reported.append(other)
        digest = unit.checkpoint_digest
        self._unreported[digest] -= len(reported)
        if self._unreported[digest] <= 0:  # calls still running hold their own reference to the bytes
            del self._unreported[digest]
            self._refs.pop(digest, None)
            self._bytes.pop(digest, None)
