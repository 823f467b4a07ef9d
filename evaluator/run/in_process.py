"""Small evaluations without Ray: the plan runs in this process through the same `EvalWorker` class the
actors use, so a quick check skips Ray's start (~5 s) and the worker processes' boot (~2-3 s) and gives the
same report (episode results depend only on checkpoint, environment and episode seed).

`--execution auto` (the default) chooses this only when it is both faster and as safe: no cluster asked for
(`--ray-address`), a plan small enough that one core finishes it before Ray would have started, CPU, one
worker, no `--unit-timeout` (a hang could not be cut short in process) and no `--trust-remote-code` (code
shipped in an archive could take the driver down with it). `--execution in-process` or `ray` forces a side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from actors.protocol import UnitResult, WorkerStats, WorkUnit
from evaluator.config import Device, EvalConfig, Execution
from evaluator.run.unit_stream import UnitSource
from evaluator.run.worker_layout import DEFAULT_CPUS_PER_WORKER

if TYPE_CHECKING:  # torch and mettagrid: imported only when episodes are played
    from actors.eval_worker import EvalWorker

SMALL_PLAN_AGENT_STEPS = 100_000
"""Upper bound on a plan's agent-steps for `auto` to run it in process: ~5 s on one core with the example
MLP (BENCHMARKS.md (c)), against ~8 s for Ray and its workers to start before any episode."""


def runs_in_process(config: EvalConfig, agent_steps_upper_bound: int) -> bool:
    """`agent_steps_upper_bound`: of the whole plan, before the results store is asked (checkpoints are only
    listed when this is decided)."""
    if config.execution is not Execution.AUTO:
        return config.execution is Execution.IN_PROCESS
    return (
        config.ray_address is None
        and config.device is Device.CPU
        and config.num_workers in (None, 1)
        and config.unit_timeout is None
        and not config.trust_remote_code
        and agent_steps_upper_bound <= SMALL_PLAN_AGENT_STEPS
    )


def in_process_worker(config: EvalConfig) -> EvalWorker:
    """The worker, made before the evaluation clock starts (its imports are the expensive part: torch,
    mettagrid), as the Ray path starts its actors before it."""
    from actors.eval_worker import EvalWorker

    return EvalWorker(
        device=config.device.value,
        num_threads=max(1, int(config.cpus_per_worker or DEFAULT_CPUS_PER_WORKER)),
        policy_cache_size=config.policy_cache_size,
        node_id="in-process",
        trust_remote_code=config.trust_remote_code,
    )


def run_in_process(
    worker: EvalWorker, source: UnitSource, on_result: Callable[[WorkUnit, UnitResult], None]
) -> WorkerStats:
    """Every unit, checkpoint by checkpoint as they arrive; a checkpoint error drops that checkpoint's other
    units with the same error, as the scheduler does. Returns the worker's counters."""
    while batches := source.take(timeout=None):
        for batch in batches:
            error = None
            for unit in batch.units:
                result = (
                    UnitResult(unit_id=unit.unit_id, worker="in-process", error=error)
                    if error
                    else worker.run(unit, batch.data)
                )
                error = error or result.error
                on_result(unit, result)
    return worker.stats()
