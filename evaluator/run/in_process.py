"""Small evaluations without Ray: the plan runs in this process through the same `EvalWorker` class the
actors use, so a quick check skips Ray's start (~5 s) and the worker processes' boot (~2-3 s) and gives the
same report (episode results depend only on checkpoint, environment and episode seed). `InProcessExecutor` is
the executor (`evaluator.run.executor`) of one such worker: the scheduler drives it as it drives Ray's actors.

`--execution auto` (the default) chooses this only when it is both faster and as safe: no cluster asked for
(`--ray-address`), a plan small enough that one core finishes it before Ray would have started, CPU, one
worker, no `--unit-timeout` (a hang could not be cut short in process) and no `--trust-remote-code` (code
shipped in an archive could take the driver down with it). `--execution in-process` or `ray` forces a side.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from evaluator.config import Device, Execution, Workers
from evaluator.run.executor import Call, ExecutorStats, Outcome, Started
from evaluator.run.worker_layout import DEFAULT_CPUS_PER_WORKER

if TYPE_CHECKING:  # torch and mettagrid: imported only when episodes are played
    from actors.eval_worker import EvalWorker
    from actors.protocol import CoPlayerBytes

NODE_ID = "in-process"
"""The node id of the in-process worker (its results, its counters, the cost estimate's one node)."""

SMALL_PLAN_AGENT_STEPS = 100_000
"""Upper bound on a plan's agent-steps for `auto` to run it in process: ~5 s on one core with the example
MLP (BENCHMARKS.md (c)), against ~8 s for Ray and its workers to start before any episode."""


def runs_in_process(workers: Workers, agent_steps_upper_bound: int) -> bool:
    """`agent_steps_upper_bound`: of the whole plan, before the results store is asked (checkpoints are only
    listed when this is decided)."""
    if workers.execution is not Execution.AUTO:
        return workers.execution is Execution.IN_PROCESS
    return (
        workers.ray_address is None
        and workers.device is Device.CPU
        and workers.num_workers in (None, 1)
        and workers.unit_timeout is None
        and not workers.trust_remote_code
        and agent_steps_upper_bound <= SMALL_PLAN_AGENT_STEPS
    )


class InProcessExecutor:
    """One `EvalWorker` in this process, one call at a time: `poll` runs the call submitted first to its end
    (so `--unit-timeout` cannot cut it short, and an exception it raises ends the run, as a bug would), and
    nothing is ever lost or replaced. The worker is made in `start`, before the evaluation clock starts (its
    imports are the expensive part: torch, mettagrid), as the Ray executor starts its actors before it."""

    workers = 1
    max_in_flight = 1

    def __init__(self, workers: Workers, co_players: Mapping[str, CoPlayerBytes] | None = None) -> None:
        self._workers = workers
        self._co_players = dict(co_players or {})
        self._worker: EvalWorker | None = None
        self._submitted: deque[tuple[Call, bytes]] = deque()

    def start(self) -> Started:
        from actors.eval_worker import EvalWorker

        started = time.perf_counter()
        self._worker = EvalWorker(
            device=self._workers.device.value,
            num_threads=max(1, int(self._workers.cpus_per_worker or DEFAULT_CPUS_PER_WORKER)),
            policy_cache_size=self._workers.policy_cache_size,
            node_id=NODE_ID,
            trust_remote_code=self._workers.trust_remote_code,
            co_players=self._co_players,
        )
        return Started(workers_start_s=time.perf_counter() - started, nodes=frozenset([NODE_ID]))

    def submit(self, call: Call, checkpoint: bytes) -> None:
        self._submitted.append((call, checkpoint))

    def poll(self, timeout: float | None) -> list[Outcome]:
        """The first call submitted, run now to its end (`timeout` does not apply)."""
        if not self._submitted:
            return []
        assert self._worker is not None, "start() first"
        call, checkpoint = self._submitted.popleft()
        return [Outcome(call, self._worker.run(call.unit, checkpoint))]

    def replace(self, worker: int) -> None:
        raise AssertionError("an in-process call is never lost or expired")  # the scheduler never asks

    def release(self, digest: str) -> None:
        """Nothing to let go: the bytes are the scheduler's, and a call's while it runs."""

    def stats(self) -> ExecutorStats:
        assert self._worker is not None, "start() first"
        return ExecutorStats(workers=(self._worker.stats(),), replaced=0)

    def close(self) -> None:
        self._worker = None
        self._submitted.clear()
