"""The scheduler's queue logic, pure: which unit goes to which worker next, what happens to a worker's units
when it dies or hangs, when a unit has been tried often enough. No Ray here (`evaluator.run.scheduler` drives
it with actors and `ray.wait`), so every rule is unit-tested with plain values and a fake clock.

Cost: amortised O(1) per unit dispatched, whatever the number of checkpoints and units (a scan of every
pending unit per dispatch made 1,000 checkpoints x 20 units take 43 s of scheduling alone). Pending units
sit in one queue per checkpoint, checkpoints in plan order; affinity looks only at the few checkpoints a
worker holds (its policy cache as the worker reports it after each unit, so an evicted checkpoint no longer
attracts its units), then at checkpoints no worker has been given yet, then at the oldest pending one.

Failure policy (the scheduler applies it; written here, next to the bookkeeping):
- a worker that died (process killed, node removed) is replaced; the unit at its head counts one attempt
  and goes back to the front of the queue, the units queued behind it go back without counting; after
  `max_attempts` the unit becomes its checkpoint's error (a poison unit cannot hang or sink the run);
- a head unit running longer than `unit_timeout` fails with that error at once (a hang is not retried),
  its worker is replaced and the units queued behind it go back;
- a unit that fails its checkpoint (cannot load, bad output, the two cases above) drops that checkpoint's
  other pending units: they would fail the same way.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

from actors.protocol import WorkUnit

Ticket = TypeVar("Ticket", bound=Hashable)
"""What identifies a dispatched call (a Ray ObjectRef in the scheduler; anything hashable in tests)."""


class WorkQueue(Generic[Ticket]):
    """Pending units (per checkpoint, in plan order), and per worker the calls queued on it in order (an
    actor runs its calls one after another, so the head is the one running), when the head started, and
    which checkpoints it holds."""

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
        self._queues: list[deque[tuple[Ticket, WorkUnit]]] = [deque() for _ in range(workers)]
        self._owner: dict[Ticket, int] = {}
        self._head_started = [0.0] * workers
        self._held: list[list[str]] = [[] for _ in range(workers)]
        self._holders: Counter[str] = Counter()
        """How many workers hold each checkpoint."""
        self._attempts: Counter[int] = Counter()
        self._max_attempts = max_attempts
        self._unit_timeout = unit_timeout
        self._max_in_flight = max_in_flight
        self._clock = clock
        self.add_units(units)

    def add_units(self, units: Iterable[WorkUnit]) -> None:
        """More units, after those already pending (the driver adds each checkpoint's as it arrives)."""
        for unit in units:
            digest = unit.checkpoint_digest
            if digest not in self._pending:
                self._pending[digest] = deque()
                self._never_given.append(digest)
            self._pending[digest].append(unit)
            self._pending_count += 1

    @property
    def pending(self) -> list[WorkUnit]:
        """Every pending unit, in the order checkpoints will be served (for tests and logs: O(units))."""
        return [unit for queue in self._pending.values() for unit in queue]

    def busy(self) -> bool:
        return self._pending_count > 0 or bool(self._owner)

    def next_for(self, worker: int) -> WorkUnit | None:
        """The unit to send `worker` now (taken off pending), or None when it has enough queued."""
        if not self._pending_count or len(self._queues[worker]) >= self._max_in_flight:
            return None
        return self._take(self._pick(worker))

    def _pick(self, worker: int) -> str:
        """Checkpoint affinity: one this worker holds (most recent first), else the first pending one if no
        worker holds it (units put back after a failure are first), else one no worker has been given yet,
        else the oldest pending one. O(policy cache size) plus amortised O(1)."""
        for digest in reversed(self._held[worker]):
            if digest in self._pending:
                return digest
        first = next(iter(self._pending))
        if not self._holders[first]:
            return first
        while self._never_given:
            digest = self._never_given.popleft()
            if digest in self._pending and not self._holders[digest]:
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

    def dispatched(self, worker: int, ticket: Ticket, unit: WorkUnit) -> None:
        queue = self._queues[worker]
        if not queue:
            self._head_started[worker] = self._clock()
        queue.append((ticket, unit))
        self._owner[ticket] = worker
        held = self._held[worker]
        if unit.checkpoint_digest not in held:  # until the worker reports its cache, assume it loads this one
            self._set_held(worker, [*held, unit.checkpoint_digest])

    def holds(self, worker: int, digests: Sequence[str]) -> None:
        """What `worker`'s policy cache holds now (least recently used first), as it reported with a result;
        checkpoints still queued on it stay (it will load them)."""
        queued = [unit.checkpoint_digest for _, unit in self._queues[worker]]
        self._set_held(worker, list(digests) + [d for d in dict.fromkeys(queued) if d not in digests])

    def _set_held(self, worker: int, digests: list[str]) -> None:
        self._holders.subtract(self._held[worker])
        self._holders.update(digests)
        for digest in self._held[worker]:
            if not self._holders[digest]:  # keep the counter the size of what is held, not of the run
                del self._holders[digest]
        self._held[worker] = digests

    def owners(self) -> dict[Ticket, int]:
        """Every call in flight, and the worker it was sent to."""
        return dict(self._owner)

    def finished(self, worker: int, ticket: Ticket) -> WorkUnit:
        """The call `ticket` returned (or raised): take it off `worker`'s queue; the next one starts."""
        queue = self._queues[worker]
        index = next(i for i, (queued, _) in enumerate(queue) if queued == ticket)
        _, unit = queue[index]
        del queue[index]
        del self._owner[ticket]
        if index == 0:
            self._head_started[worker] = self._clock()
        return unit

    def worker_lost(self, worker: int, unit: WorkUnit) -> int:
        """`unit`'s call raised because `worker` died: the worker's other units go back, and `unit` too (in
        front) until it has been tried `max_attempts` times. Returns the attempts so far; the unit is given
        up (not re-queued) when that reaches `max_attempts`."""
        self._attempts[unit.unit_id] += 1
        self.replaced(worker)
        attempts = self._attempts[unit.unit_id]
        if attempts < self._max_attempts:
            self._put_back([unit])
        return attempts

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self._max_attempts

    def expired(self) -> list[tuple[int, WorkUnit]]:
        """Head units running longer than `unit_timeout`: each is taken off and its worker's other units go
        back (the caller replaces the worker and fails the unit)."""
        if self._unit_timeout is None:
            return []
        now, expired = self._clock(), []
        for worker, queue in enumerate(self._queues):
            if queue and now - self._head_started[worker] > self._unit_timeout:
                ticket, unit = queue.popleft()
                del self._owner[ticket]
                self.replaced(worker)
                expired.append((worker, unit))
        return expired

    def replaced(self, worker: int) -> None:
        """`worker` is gone (a fresh one takes its place): its queued units go back to the front, in order,
        and it holds no checkpoint any more."""
        queue = self._queues[worker]
        for ticket, _ in queue:
            del self._owner[ticket]
        self._put_back(unit for _, unit in reversed(queue))
        queue.clear()
        self._set_held(worker, [])

    def drop_checkpoint(self, digest: str) -> list[WorkUnit]:
        """Take every pending unit of checkpoint `digest` off the queue (it failed): they are returned so
        each can be reported with the checkpoint's error."""
        dropped = list(self._pending.pop(digest, ()))
        self._pending_count -= len(dropped)
        return dropped

    def wait_timeout(self) -> float | None:
        """How long the scheduler may block in `ray.wait` before a head could expire (None: no limit)."""
        if self._unit_timeout is None:
            return None
        heads = [self._head_started[w] for w, queue in enumerate(self._queues) if queue]
        return max(0.0, min(heads) + self._unit_timeout - self._clock()) + 0.01 if heads else None
