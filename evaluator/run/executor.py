"""One interface for every backend that runs units (PufferLib's vector backends: one small interface for all),
and the values that cross it.

An executor holds `workers` worker slots; a worker runs the calls sent to it one after another (so the first
call queued on a worker is the one running). The scheduler (`evaluator.run.scheduler`) decides what goes where
and what a failure means (`evaluator.run.work_queue`) and drives every backend through these methods alone:

    start()                   start the workers; `Started` says how long that took and which nodes they are on
    submit(call, checkpoint)  send `call` to its worker with its checkpoint's bytes (returns at once)
    poll(timeout)             the calls that ended, waiting up to `timeout` s (None: until one ends)
    replace(worker)           kill `worker` (it died or hung), start a fresh one in its slot, forget its calls
    release(digest)           no unit of checkpoint `digest` is sent again: let go of its bytes
    stats()                   every live worker's counters, and how many workers were replaced
    close()                   stop every worker (on errors too)

Backends: `evaluator.run.in_process.InProcessExecutor` (one `EvalWorker` called directly, for small plans)
and `evaluator.run.ray_executor.RayExecutor` (a pool of actors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from actors.protocol import UnitResult, WorkerStats, WorkUnit


@dataclass(frozen=True, eq=False)
class Call:
    """One unit sent to one worker (compared by identity: a unit sent again after a failure is a new call)."""

    worker: int
    unit: WorkUnit


@dataclass(frozen=True)
class Outcome:
    """How a call ended: the worker's `result` (a checkpoint's own error included), or `lost`: why the call
    raised (its worker died: process killed, node removed)."""

    call: Call
    result: UnitResult | None = None
    lost: str | None = None


@dataclass(frozen=True)
class Started:
    workers_start_s: float
    """Until every worker process was up (imports, torch): before the evaluation clock starts."""
    nodes: frozenset[str]
    """The nodes of the workers that answered the start-up probe."""


@dataclass(frozen=True)
class ExecutorStats:
    workers: tuple[WorkerStats, ...]
    """Counters of the workers alive at the end (one that died after its last unit has none)."""
    replaced: int
    """Workers that died or hung and were replaced."""


@dataclass(frozen=True)
class RunTiming:
    """What running the units took, as the report's timing and the cost estimate read it."""

    workers_start_s: float
    evaluation_s: float
    """From the workers being up to the last unit reported."""
    workers: tuple[WorkerStats, ...]
    replaced: int
    nodes: frozenset[str]
    """Every node our workers ran on, as far as the probe and the final counters tell."""


NOTHING_RAN = RunTiming(workers_start_s=0.0, evaluation_s=0.0, workers=(), replaced=0, nodes=frozenset())
"""An evaluation the results store answered entirely: no worker was started."""


class Executor(Protocol):
    """Runs calls on `workers` worker slots, at most `max_in_flight` queued on each (the module says how)."""

    workers: int
    max_in_flight: int

    def start(self) -> Started: ...
    def submit(self, call: Call, checkpoint: bytes) -> None: ...
    def poll(self, timeout: float | None) -> list[Outcome]: ...
    def replace(self, worker: int) -> None: ...
    def release(self, digest: str) -> None: ...
    def stats(self) -> ExecutorStats: ...
    def close(self) -> None: ...
