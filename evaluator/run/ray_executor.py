"""The Ray executor (`evaluator.run.executor`): a pool of `EvalWorker` actors, each started by the worker factory
of `evaluator.run.ray_cluster`. Remote calls stay visible here: every `.remote` call on a worker, `ray.put`,
`ray.wait`, `ray.get` and `ray.kill` of a run is in this module, and actors are killed in one place (`_kill`).

Calls end in completion order, through `ray.wait` in our own loop, not `ray.util.ActorPool`, which hands work
to dead actors and stalls (ray#50313). Actors have no Ray restarts: the scheduler replaces a dead or hung worker
through `replace` (`evaluator.run.work_queue` says when), so its in-flight accounting never races an actor
coming back; the replacement is started with the dead worker's index, so it takes the same slot (node and
resources).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import ray
from ray.exceptions import RayError

from actors.protocol import WorkerStats
from evaluator.run.executor import Call, ExecutorStats, Outcome, Started
from sim.errors import first_line

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT_PER_WORKER = 2
"""Two units queued per actor hide the round trip between units without starving other actors."""

START_TIMEOUT_S = 300.0
"""How long `start` waits for the workers' start-up probes; one that has not answered by then surfaces in
the scheduler's loop, through the first calls sent to it."""


class RayExecutor:
    """`workers` actors, actor `i` started by `new_worker(i)` (and again by it when replaced)."""

    max_in_flight = MAX_IN_FLIGHT_PER_WORKER

    def __init__(self, new_worker: Callable[[int], ray.actor.ActorHandle], workers: int) -> None:
        self.workers = workers
        self._new_worker = new_worker
        self._actors: list[ray.actor.ActorHandle] = []
        self._calls: dict[ray.ObjectRef, Call] = {}
        """Every call in flight on a live worker, by the reference its result comes back on."""
        self._refs: dict[str, ray.ObjectRef] = {}
        """Checkpoint bytes in the object store: put at a checkpoint's first call, dropped at its `release`."""
        self._replaced = 0

    def start(self) -> Started:
        """Start the actors, then wait until each answers a `stats` probe: their processes boot (imports,
        torch) before the evaluation clock starts. This wait never raises: a worker that failed to start
        surfaces in the scheduler's loop."""
        for index in range(self.workers):
            self._actors.append(self._new_worker(index))
        started = time.perf_counter()
        probes = [actor.stats.remote() for actor in self._actors]
        answered, _ = ray.wait(probes, num_returns=len(probes), timeout=START_TIMEOUT_S)
        return Started(workers_start_s=time.perf_counter() - started, nodes=frozenset(_probed_nodes(answered)))

    def submit(self, call: Call, checkpoint: bytes) -> None:
        digest = call.unit.checkpoint_digest
        if digest not in self._refs:
            self._refs[digest] = ray.put(checkpoint)
        self._calls[self._actors[call.worker].run.remote(call.unit, self._refs[digest])] = call

    def poll(self, timeout: float | None) -> list[Outcome]:
        """The next call to end, in completion order (or none when `timeout` passes first)."""
        ready, _ = ray.wait(list(self._calls), num_returns=1, timeout=timeout)
        outcomes = []
        for ref in ready:
            call = self._calls.pop(ref)
            try:
                outcomes.append(Outcome(call, result=ray.get(ref)))
            except RayError as exc:  # the actor died (process killed, node removed): the scheduler decides
                outcomes.append(Outcome(call, lost=first_line(exc)))
        return outcomes

    def replace(self, worker: int) -> None:
        """Kill `worker` (if still alive; its calls are forgotten) and start a fresh one in its slot."""
        self._calls = {ref: call for ref, call in self._calls.items() if call.worker != worker}
        self._kill(worker)
        self._actors[worker] = self._new_worker(worker)
        self._replaced += 1

    def release(self, digest: str) -> None:
        """Drop our reference to the checkpoint's bytes: the object store frees them once calls still running
        on them (each holds its own reference) end."""
        self._refs.pop(digest, None)

    def stats(self) -> ExecutorStats:
        """Counters of the workers still alive (one may die after its last unit: its results are already in,
        only its counters are lost)."""
        stats: list[WorkerStats] = []
        for actor in self._actors:
            try:
                stats.append(ray.get(actor.stats.remote()))
            except RayError as exc:
                logger.warning("worker died after its last unit; its counters are lost (%s)", type(exc).__name__)
        return ExecutorStats(workers=tuple(stats), replaced=self._replaced)

    def close(self) -> None:
        """Kill every worker: on an attached cluster too, an error must not leave actors holding its resources."""
        for worker in range(len(self._actors)):
            self._kill(worker)
        self._actors.clear()
        self._calls.clear()
        self._refs.clear()

    def _kill(self, worker: int) -> None:
        ray.kill(self._actors[worker], no_restart=True)


def _probed_nodes(probes: Sequence[ray.ObjectRef]) -> set[str]:
    """The nodes of the workers whose `stats` probes have answered (the others' nodes show up in their results)."""
    nodes = set()
    for probe in probes:
        try:
            nodes.add(ray.get(probe, timeout=0).node_id)
        except RayError:
            continue
    return nodes
