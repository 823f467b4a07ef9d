"""The scheduler's queue logic, pure: which unit goes to which worker next (`dispatch`), and what a call's end
means (`settle`, `expire`): what to report, what goes back to the queue, what is dropped, which worker is
replaced. No Ray and no I/O here (`evaluator.run.scheduler` applies the answers through an executor), so every
rule is unit-tested with plain values and a fake clock.

Cost: amortised O(1) per unit dispatched, whatever the number of checkpoints and units (a scan of every
pending unit per dispatch made 1,000 checkpoints x 20 units take 43 s of scheduling alone). Pending units
sit in one queue per checkpoint, checkpoints in plan order; affinity looks only at the few checkpoints a
worker holds (its policy cache as the worker reports it after each unit, so an evicted checkpoint no longer
attracts its units), then at checkpoints no worker has been given yet, then at the oldest pending one.

Failure policy (`settle` and `expire` apply it; the scheduler only carries out their answers):
- a worker that died (process killed, node removed) is replaced; the unit at its head counts one attempt
  and goes back to the front of the queue, the units queued behind it go back without counting; after
  `max_attempts` the unit becomes its checkpoint's error (a poison unit cannot hang or sink the run);
- a head unit running longer than `unit_timeout` fails with that error at once (a hang is not retried),
  its worker is replaced and the units queued behind it go back;
- a unit that fails its checkpoint (cannot load, bad output, the two cases above) drops that checkpoint's
  other pending units, each reported with the same error: they would fail the same way. Units of it already
  running report their own results.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from actors.protocol import UnitResult, WorkUnit
from evaluator.run.executor import Call, Outcome

Report = tuple[WorkUnit, UnitResult]


@dataclass(frozen=True)
class Settlement:
    """What the end of a call (or its expiry) means for the run."""

    reports: tuple[Report, ...] = ()
    """Units settled for good, each with its result: the call's own unit (unless it went back to be tried
    again), then, when that failed its checkpoint, the checkpoint's pending units with the same error."""
    replace: int | None = None
    """The worker to replace (it died or hung); its other queued units are back in the queue already."""
    warning: str | None = None
    """Why that worker goes, for the log."""


class WorkQueue:
    """Pending units (per checkpoint, in plan order), and per worker the calls queued on it in order (a worker
    runs its calls one after another, so the head is the one running), when the head started, and which
    checkpoints it holds."""

    def __init__(
        self,
        units: Sequence[WorkUnit],
        workers: int,
        *,
        max_attempts: int,
        unit_timeout: float | None = None,
        max_in_flight: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pending: OrderedDict[str, deque[WorkUnit]] = OrderedDict()
        self._pending_count = 0
        self._never_given: deque[str] = deque()
        """Checkpoints in plan order, each looked at once as "not given to any worker yet" (skipped when a
        worker holds it by then): what keeps the search for an unheld checkpoint amortised O(1)."""
        self._queues: list[deque[Call]] = [deque() for _ in range(workers)]
        self._in_flight = 0
        self._room = set(range(workers))
        """Workers with fewer than `max_in_flight` calls queued: the only ones `dispatch` looks at."""
        self._head_started = [0.0] * workers
        self._held: list[list[str]] = [[] for _ in range(workers)]
        self._holders: dict[str, int] = {}
        """How many workers hold each checkpoint (those some worker holds)."""
        self._attempts: Counter[int] = Counter()
        self._max_attempts = max_attempts
        self._unit_timeout = unit_timeout
        self._max_in_flight = max_in_flight
        self._clock = clock
        self.add_units(units)

    def add_units(self, units: Iterable[WorkUnit]) -> None:
        """More units, after those already pending (the scheduler adds each checkpoint's as it arrives)."""
        for unit in units:
            digest = unit.checkpoint_digest
            if digest not in self._pending:
                self._pending[digest] = deque()
                self._never_given.append(digest)
            self._pending[digest].append(unit)
            self._pending_count += 1

    def busy(self) -> bool:
        """Whether some unit is pending or running."""
        return self._pending_count > 0 or self._in_flight > 0

    def dispatch(self) -> list[Call]:
        """The calls to send now: every worker topped up to `max_in_flight` from the pending units (taken off
        pending, counted as running from now). O(workers with room) plus amortised O(1) per call."""
        calls: list[Call] = []
        if not self._pending_count:
            return calls
        for worker in sorted(self._room):  # in worker order; usually the one worker whose call just ended
            queue = self._queues[worker]
            while self._pending_count and len(queue) < self._max_in_flight:
                call = Call(worker, self._take(self._pick(worker)))
                if not queue:
                    self._head_started[worker] = self._clock()
                queue.append(call)
                self._in_flight += 1
                held = self._held[worker]
                if call.unit.checkpoint_digest not in held:  # until the worker reports its cache, assume it loads it
                    self._set_held(worker, [*held, call.unit.checkpoint_digest])
                calls.append(call)
            if len(queue) >= self._max_in_flight:
                self._room.discard(worker)
        return calls

    def settle(self, outcome: Outcome) -> Settlement:
        """A call ended: with the worker's result (whose `held` updates what the worker holds), or lost with its
        worker (the failure policy above says what follows). A call whose worker was replaced since it was sent
        settles nothing: its unit went back with the worker."""
        call = outcome.call
        if not self._finished(call):
            return Settlement()
        if outcome.result is not None:
            if outcome.result.held:
                self._holds(call.worker, outcome.result.held)
            return Settlement(self._final(call.unit, outcome.result))
        unit, worker = call.unit, call.worker
        self._attempts[unit.unit_id] += 1
        attempts = self._attempts[unit.unit_id]
        self._replaced(worker)
        warning = f"unit {unit.unit_id} failed on worker {worker} (attempt {attempts}: {outcome.lost})"
        if attempts < self._max_attempts:
            self._put_back([unit])
            return Settlement(replace=worker, warning=warning)
        error = f"failed {attempts} times: {outcome.lost}"
        return Settlement(self._final(unit, UnitResult(unit.unit_id, str(worker), error=error)), worker, warning)

    def expire(self) -> list[Settlement]:
        """Head calls running longer than `unit_timeout`: each unit fails with that error, its worker is to be
        replaced and the units queued behind it go back."""
        if self._unit_timeout is None:
            return []
        now, expired = self._clock(), []
        for worker, queue in enumerate(self._queues):
            if queue and now - self._head_started[worker] > self._unit_timeout:
                unit = queue.popleft().unit
                self._in_flight -= 1
                self._replaced(worker)
                error = f"timed out after {self._unit_timeout:g} s (--unit-timeout); its worker was replaced"
                result = UnitResult(unit.unit_id, str(worker), error=error)
                expired.append(Settlement(self._final(unit, result), worker, f"unit {unit.unit_id} {error}"))
        return expired

    def wait_timeout(self) -> float | None:
        """How long the scheduler may wait for calls to end before a head could expire (None: no limit)."""
        if self._unit_timeout is None:
            return None
        heads = [self._head_started[w] for w, queue in enumerate(self._queues) if queue]
        return max(0.0, min(heads) + self._unit_timeout - self._clock()) + 0.01 if heads else None

    def _pick(self, worker: int) -> str:
        """Checkpoint affinity: one this worker holds (most recent first), else the first pending one if no
        worker holds it (units put back after a failure are first), else one no worker has been given yet,
        else the oldest pending one. O(policy cache size) plus amortised O(1)."""
        for digest in reversed(self._held[worker]):
            if digest in self._pending:
                return digest
        first = next(iter(self._pending))
        if first not in self._holders:
            return first
        while self._never_given:
            digest = self._never_given.popleft()
            if digest in self._pending and digest not in self._holders:
                return digest
        return next(iter(self._pending))

    def _take(self, digest: str) -> WorkUnit:
        queue = self._pending[digest]
        unit = queue.popleft()
        if not queue:
            del self._pending[digest]
        self._pending_count -= 1
        return unit

    def _put_back(self, units: Iterable[WorkUnit]) -> None:
        """Units go back to the front: of their checkpoint's queue, and their checkpoint to the front of
        the order (the last one put back ends up first)."""
        for unit in units:
            digest = unit.checkpoint_digest
            if digest not in self._pending:
                self._pending[digest] = deque()
            self._pending[digest].appendleft(unit)
            self._pending.move_to_end(digest, last=False)
            self._pending_count += 1

    def _finished(self, call: Call) -> bool:
        """Take `call` off its worker's queue (it returned or raised; the next one starts); False when it is not
        there any more (its worker was replaced)."""
        queue = self._queues[call.worker]
        if queue and queue[0] is call:  # the usual case: a worker's calls end in order
            queue.popleft()
            self._head_started[call.worker] = self._clock()
        elif call in queue:  # calls compare by identity
            queue.remove(call)
        else:
            return False
        self._in_flight -= 1
        self._room.add(call.worker)
        return True

    def _holds(self, worker: int, digests: Sequence[str]) -> None:
        """What `worker`'s policy cache holds now (least recently used first), as it reported with a result;
        checkpoints still queued on it stay (it will load them)."""
        held = list(digests)
        for call in self._queues[worker]:
            if call.unit.checkpoint_digest not in held:
                held.append(call.unit.checkpoint_digest)
        if held != self._held[worker]:  # usually unchanged: the unit's checkpoint was the most recent already
            self._set_held(worker, held)

    def _set_held(self, worker: int, digests: list[str]) -> None:
        holders = self._holders  # a plain dict and loops over a few digests: a Counter's checks cost more here
        for digest in digests:
            holders[digest] = holders.get(digest, 0) + 1
        for digest in self._held[worker]:
            holders[digest] -= 1
            if not holders[digest]:  # only what is held: the size of the policy caches, not of the run
                del holders[digest]
        self._held[worker] = digests

    def _replaced(self, worker: int) -> None:
        """`worker` is gone (a fresh one takes its place): its queued units go back to the front, in order,
        and it holds no checkpoint any more."""
        queue = self._queues[worker]
        self._in_flight -= len(queue)
        self._put_back(call.unit for call in reversed(queue))
        queue.clear()
        self._room.add(worker)
        self._set_held(worker, [])

    def _final(self, unit: WorkUnit, result: UnitResult) -> tuple[Report, ...]:
        """`unit`'s result, and when it failed its checkpoint, the checkpoint's pending units with its error."""
        if not result.error:
            return ((unit, result),)
        dropped = self._pending.pop(unit.checkpoint_digest, ())
        self._pending_count -= len(dropped)
        failed = (UnitResult(other.unit_id, result.worker, error=result.error) for other in dropped)
        return ((unit, result), *zip(dropped, failed, strict=True))
