"""The scheduler's queue logic, pure: which unit goes to which worker next, what happens to a worker's units
when it dies or hangs, when a unit has been tried often enough. No Ray here (`evaluator.scheduler` drives
it with actors and `ray.wait`), so every rule is unit-tested with plain values and a fake clock.

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
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from actors.protocol import WorkUnit

Ticket = TypeVar("Ticket", bound=Hashable)
"""What identifies a dispatched call (a Ray ObjectRef in the scheduler; anything hashable in tests)."""


class WorkQueue(Generic[Ticket]):
    """Pending units, and per worker the calls queued on it in order (an actor runs its calls one after
    another, so the head is the one running), when the head started, and which checkpoints it was given."""

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
        self.pending: deque[WorkUnit] = deque(units)
        self._queues: list[deque[tuple[Ticket, WorkUnit]]] = [deque() for _ in range(workers)]
        self._head_started = [0.0] * workers
        self._held: list[list[str]] = [[] for _ in range(workers)]
        self._attempts: Counter[int] = Counter()
        self._max_attempts = max_attempts
        self._unit_timeout = unit_timeout
        self._max_in_flight = max_in_flight
        self._clock = clock

    def busy(self) -> bool:
        return bool(self.pending) or any(self._queues)

    def next_for(self, worker: int) -> WorkUnit | None:
        """The unit to send `worker` now (taken off pending), or None when it has enough queued."""
        if not self.pending or len(self._queues[worker]) >= self._max_in_flight:
            return None
        return self._pick(worker)

    def _pick(self, worker: int) -> WorkUnit:
        """Checkpoint affinity: a unit of a checkpoint this worker holds (most recent first), else one of a
        checkpoint no worker holds yet, else the oldest pending unit."""
        for digest in reversed(self._held[worker]):
            for unit in self.pending:
                if unit.checkpoint_digest == digest:
                    self.pending.remove(unit)
                    return unit
        held_anywhere = {digest for held in self._held for digest in held}
        for unit in self.pending:
            if unit.checkpoint_digest not in held_anywhere:
                self.pending.remove(unit)
                return unit
        return self.pending.popleft()

    def dispatched(self, worker: int, ticket: Ticket, unit: WorkUnit) -> None:
        queue = self._queues[worker]
        if not queue:
            self._head_started[worker] = self._clock()
        queue.append((ticket, unit))
        if unit.checkpoint_digest not in self._held[worker]:
            self._held[worker].append(unit.checkpoint_digest)

    def owners(self) -> dict[Ticket, int]:
        """Every call in flight, and the worker it was sent to."""
        return {ticket: worker for worker, queue in enumerate(self._queues) for ticket, _ in queue}

    def finished(self, worker: int, ticket: Ticket) -> WorkUnit:
        """The call `ticket` returned (or raised): take it off `worker`'s queue; the next one starts."""
        queue = self._queues[worker]
        index = next(i for i, (queued, _) in enumerate(queue) if queued == ticket)
        _, unit = queue[index]
        del queue[index]
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
            self.pending.appendleft(unit)
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
                _, unit = queue.popleft()
                self.replaced(worker)
                expired.append((worker, unit))
        return expired

    def replaced(self, worker: int) -> None:
        """`worker` is gone (a fresh one takes its place): its queued units go back to the front, in order,
        and it holds no checkpoint any more."""
        for _, unit in reversed(self._queues[worker]):
            self.pending.appendleft(unit)
        self._queues[worker].clear()
        self._held[worker] = []

    def drop_checkpoint(self, digest: str) -> list[WorkUnit]:
        """Take every pending unit of checkpoint `digest` off the queue (it failed): they are returned so
        each can be reported with the checkpoint's error."""
        dropped = [unit for unit in self.pending if unit.checkpoint_digest == digest]
        for unit in dropped:
            self.pending.remove(unit)
        return dropped

    def wait_timeout(self) -> float | None:
        """How long the scheduler may block in `ray.wait` before a head could expire (None: no limit)."""
        if self._unit_timeout is None:
            return None
        heads = [self._head_started[w] for w, queue in enumerate(self._queues) if queue]
        return max(0.0, min(heads) + self._unit_timeout - self._clock()) + 0.01 if heads else None
