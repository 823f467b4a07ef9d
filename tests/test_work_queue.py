"""The scheduler's queue logic without Ray: affinity, attempts, expiry, replacement."""

from __future__ import annotations

from actors.protocol import WorkUnit
from evaluator.run.work_queue import WorkQueue
from sim.runner import EpisodeJob
from sim.suites import get_suite

ENV = get_suite("smoke").envs[0]


def unit(unit_id: int, checkpoint: str, index: int | None = None) -> WorkUnit:
    return WorkUnit(
        unit_id=unit_id,
        checkpoint_index=ord(checkpoint) if index is None else index,
        checkpoint_digest=checkpoint,
        checkpoint_uri=f"file:///{checkpoint}",
        jobs=(EpisodeJob(ENV, 0, 1),),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ids(units) -> list[int]:
    return [u.unit_id for u in units]


def dispatch_all(queue: WorkQueue, worker: int) -> list[WorkUnit]:
    sent = []
    while (next_unit := queue.next_for(worker)) is not None:
        queue.dispatched(worker, ("ticket", next_unit.unit_id), next_unit)
        sent.append(next_unit)
    return sent


def test_affinity_prefers_held_then_unheld_then_oldest():
    units = [unit(0, "a"), unit(1, "b"), unit(2, "a"), unit(3, "b"), unit(4, "c"), unit(5, "a")]
    queue = WorkQueue(units, workers=2, max_attempts=3, max_in_flight=2)
    # Worker 0 starts on checkpoint a and sticks to it; worker 1 takes b, which nobody holds yet.
    assert ids(dispatch_all(queue, 0)) == [0, 2]
    assert ids(dispatch_all(queue, 1)) == [1, 3]
    queue.finished(0, ("ticket", 0))
    assert ids(dispatch_all(queue, 0)) == [5]  # a again, before c
    queue.finished(0, ("ticket", 2))
    assert ids(dispatch_all(queue, 0)) == [4]  # no a left: c, which no worker holds
    assert not queue.pending and queue.busy()


def test_a_lost_worker_requeues_its_units_and_counts_attempts_of_the_head_only():
    units = [unit(0, "a"), unit(1, "a"), unit(2, "b")]
    queue = WorkQueue(units, workers=1, max_attempts=2, max_in_flight=2)
    dispatch_all(queue, 0)
    head = queue.finished(0, ("ticket", 0))  # its call raised: the worker died
    attempts = queue.worker_lost(0, head)
    assert attempts == 1 and not queue.exhausted(attempts)
    assert ids(queue.pending) == [0, 1, 2], "the failed unit first, then the one queued behind it, in order"
    assert queue.owners() == {}
    dispatch_all(queue, 0)
    head = queue.finished(0, ("ticket", 0))
    attempts = queue.worker_lost(0, head)
    assert queue.exhausted(attempts) and ids(queue.pending) == [1, 2], "given up after max_attempts"


def test_a_hung_head_expires_and_its_worker_queue_goes_back():
    clock = Clock()
    queue = WorkQueue(
        [unit(0, "a"), unit(1, "a"), unit(2, "b")], workers=2, max_attempts=3, unit_timeout=10, clock=clock
    )
    dispatch_all(queue, 0)
    dispatch_all(queue, 1)
    clock.now = 5.0
    queue.finished(1, ("ticket", 2))  # worker 1 is fine
    assert queue.wait_timeout() == 5.01
    clock.now = 10.5
    assert queue.expired() == [(0, unit(0, "a"))]
    assert ids(queue.pending) == [1], "the unit behind the hung one goes back, without an attempt counted"
    assert queue.expired() == []


def test_a_replaced_worker_holds_nothing_and_a_failed_checkpoint_drops_its_pending_units():
    queue = WorkQueue([unit(0, "a"), unit(1, "b"), unit(2, "a"), unit(3, "b")], workers=1, max_attempts=3)
    assert ids(dispatch_all(queue, 0)) == [0, 2]
    queue.replaced(0)
    assert ids(queue.pending) == [0, 2, 1, 3], "its queued units first, in their order"
    assert ids(queue.drop_checkpoint("a")) == [0, 2] and ids(queue.pending) == [1, 3]
    # Nothing held any more: the oldest unit of an unheld checkpoint is picked first.
    assert ids(dispatch_all(queue, 0)) == [1, 3]


def test_100000_units_each_dispatched_once_with_affinity_and_faults():
    """1,000 checkpoints x 100 units on 16 workers with a policy cache of 4, completions in random order,
    a worker lost now and then: every unit is reported once, and a unit almost always goes to a worker that
    holds its checkpoint (loads stay near one per checkpoint and worker that serves it)."""
    import random

    rng = random.Random(0)
    checkpoints = [f"c{i:04d}" for i in range(1_000)]
    units = [unit(i, checkpoints[i // 100], i // 100) for i in range(100_000)]
    workers, cache = 16, 4
    queue: WorkQueue[int] = WorkQueue(units, workers, max_attempts=3)
    lru: list[list[str]] = [[] for _ in range(workers)]
    done: dict[int, int] = {}
    loads = tickets = 0
    in_flight: list[tuple[int, int]] = []
    while queue.busy():
        for worker in range(workers):
            while (next_unit := queue.next_for(worker)) is not None:
                tickets += 1
                queue.dispatched(worker, tickets, next_unit)
                in_flight.append((tickets, worker))
        ticket, worker = in_flight.pop(rng.randrange(len(in_flight)))
        finished = queue.finished(worker, ticket)
        if rng.random() < 0.0005:  # the worker died running it
            in_flight = [(t, w) for t, w in in_flight if w != worker]
            lru[worker] = []
            if queue.exhausted(queue.worker_lost(worker, finished)):
                done[finished.unit_id] = done.get(finished.unit_id, 0) + 1
            continue
        digest = finished.checkpoint_digest
        if digest in lru[worker]:
            lru[worker].remove(digest)
        else:
            loads += 1
        lru[worker] = (lru[worker] + [digest])[-cache:]
        queue.holds(worker, lru[worker])
        done[finished.unit_id] = done.get(finished.unit_id, 0) + 1
    assert sorted(done) == list(range(100_000)) and set(done.values()) == {1}
    assert loads < 2 * len(checkpoints), f"{loads} loads for {len(checkpoints)} checkpoints"
