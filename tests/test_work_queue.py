"""The scheduler's queue logic without Ray: affinity, attempts, expiry, replacement, the failure policy; and the
scheduler's one loop over 100,000 units with simulated workers."""

from __future__ import annotations

from actors.protocol import UnitResult, WorkUnit
from bench.scheduler import Planned, SimulatedWorkers
from evaluator.run.executor import Call, Outcome
from evaluator.run.scheduler import schedule
from evaluator.run.work_queue import Settlement, WorkQueue
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


def sent(calls: list[Call]) -> list[tuple[int, int]]:
    """(worker, unit id) of each call."""
    return [(call.worker, call.unit.unit_id) for call in calls]


def done(call: Call, error: str | None = None) -> Outcome:
    return Outcome(call, result=UnitResult(call.unit.unit_id, f"w{call.worker}", error=error))


def reported(reports) -> list[tuple[int, str | None]]:
    return [(u.unit_id, result.error) for u, result in reports]


def test_affinity_prefers_held_then_unheld_then_oldest():
    units = [unit(0, "a"), unit(1, "b"), unit(2, "a"), unit(3, "b"), unit(4, "c"), unit(5, "a")]
    queue = WorkQueue(units, workers=2, max_attempts=3, max_in_flight=2)
    # Worker 0 starts on checkpoint a and sticks to it; worker 1 takes b, which nobody holds yet.
    calls = queue.dispatch()
    assert sent(calls) == [(0, 0), (0, 2), (1, 1), (1, 3)]
    assert reported(queue.settle(done(calls[0])).reports) == [(0, None)]
    more = queue.dispatch()
    assert sent(more) == [(0, 5)]  # a again, before c
    queue.settle(done(calls[1]))
    last = queue.dispatch()
    assert sent(last) == [(0, 4)]  # no a left: c, which no worker holds
    for call in (calls[2], calls[3], more[0], last[0]):
        queue.settle(done(call))
    assert queue.dispatch() == [] and not queue.busy(), "nothing else was pending"


def test_a_lost_worker_requeues_its_units_and_counts_attempts_of_the_head_only():
    units = [unit(0, "a"), unit(1, "a"), unit(2, "b")]
    queue = WorkQueue(units, workers=1, max_attempts=2, max_in_flight=2)
    head, behind = queue.dispatch()
    lost = queue.settle(Outcome(head, lost="worker died"))
    assert lost.replace == 0 and lost.reports == () and "attempt 1" in lost.warning
    assert queue.settle(Outcome(behind, lost="worker died")) == Settlement(), "it went back with its worker"
    again = queue.dispatch()
    assert sent(again) == [(0, 0), (0, 1)], "the failed unit first, then the one queued behind it, in order"
    given_up = queue.settle(Outcome(again[0], lost="worker died"))
    # Given up after max_attempts: the unit is its checkpoint's error, and the checkpoint's pending unit
    # (1, back in the queue with the worker) is dropped with the same error.
    assert given_up.replace == 0
    assert reported(given_up.reports) == [(0, "failed 2 times: worker died"), (1, "failed 2 times: worker died")]
    assert sent(queue.dispatch()) == [(0, 2)]


def test_a_hung_head_expires_and_its_worker_queue_goes_back():
    clock = Clock()
    queue = WorkQueue(
        [unit(0, "a"), unit(1, "b"), unit(2, "b")], workers=2, max_attempts=3, unit_timeout=10, clock=clock
    )
    calls = queue.dispatch()
    assert sent(calls) == [(0, 0), (0, 1), (1, 2)]
    clock.now = 5.0
    queue.settle(done(calls[2]))  # worker 1 is fine
    assert queue.wait_timeout() == 5.01
    clock.now = 10.5
    [expired] = queue.expire()
    error = "timed out after 10 s (--unit-timeout); its worker was replaced"
    assert expired.replace == 0 and reported(expired.reports) == [(0, error)]
    assert queue.expire() == []
    assert sent(queue.dispatch()) == [(0, 1)], "the unit behind the hung one goes back"


def test_a_replaced_worker_holds_nothing_and_a_failed_checkpoint_drops_its_pending_units():
    queue = WorkQueue(
        [unit(0, "a"), unit(1, "b"), unit(2, "a"), unit(3, "b")], workers=1, max_attempts=3, max_in_flight=1
    )
    [first] = queue.dispatch()
    assert queue.settle(Outcome(first, lost="node removed")).replace == 0
    [again] = queue.dispatch()
    assert again.unit.unit_id == 0, "its queued unit goes back first"
    failed = queue.settle(done(again, error="cannot load"))
    assert reported(failed.reports) == [(0, "cannot load"), (2, "cannot load")]
    assert failed.replace is None
    # Nothing of a left: the oldest unit of an unheld checkpoint is picked next.
    assert sent(queue.dispatch()) == [(0, 1)]


def test_100000_units_each_reported_once_with_affinity_and_faults():
    """1,000 checkpoints x 100 units on 16 workers with a policy cache of 4, through the scheduler's own loop
    (`schedule`), completions in random order, a worker lost now and then: every unit is reported once, and a
    unit almost always goes to a worker that holds its checkpoint (loads stay near one per checkpoint and worker
    that serves it)."""
    checkpoints = [f"c{i:04d}" for i in range(1_000)]
    units = [unit(i, checkpoints[i // 100], i // 100) for i in range(100_000)]
    workers = SimulatedWorkers(16, cache=4, loss_rate=0.0005)
    counts: dict[int, int] = {}

    def count(finished: WorkUnit, result: UnitResult) -> None:
        counts[finished.unit_id] = counts.get(finished.unit_id, 0) + 1

    schedule(workers, Planned(units), count, max_attempts=3)
    assert sorted(counts) == list(range(100_000)) and set(counts.values()) == {1}
    assert workers.loads < 2 * len(checkpoints), f"{workers.loads} loads for {len(checkpoints)} checkpoints"
