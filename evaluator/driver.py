"""The Ray driver: the only module that calls `.remote`, `ray.wait`, sets resource options or retries.

Flow: resolve policies -> plan units -> start (or attach to) Ray -> put each checkpoint's bytes in the
object store once -> start a pool of `EvalWorker` actors -> stream units to them with checkpoint
affinity, collecting results with `ray.wait` in our own loop (not `ray.util.ActorPool`, which hands work
to dead actors and stalls, ray#50313) -> reduce into a `Report`.

Failure policy (written here, next to the code that applies it): a unit whose call raises (worker died,
crash) is re-queued, up to `max_attempts` tries, and Ray restarts dead actors (`max_restarts`); a unit that
returns a checkpoint error (cannot load, bad output) fails that checkpoint at once, and its remaining
units are dropped. Either way the other checkpoints complete.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.exceptions import RayError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from actors.eval_worker import EvalWorker
from actors.protocol import UnitResult, WorkerStats, WorkUnit
from evaluator import __version__
from evaluator.config import Device, EvalConfig
from evaluator.outputs import OutputError, deliver, preflight, with_delivered_replay_urls
from evaluator.outputs.local import (
    EpisodeRow,
    atomic_write,
    check_writable,
    replay_path,
    write_episodes,
    write_report,
)
from evaluator.plan import make_plan
from evaluator.report import (
    CheckpointReport,
    OutputStatus,
    PolicyReport,
    Report,
    Timing,
    WorkerReport,
    checkpoint_metrics,
)
from evaluator.results_cache import ResultsCache
from evaluator.sources import Checkpoint, SourceSettings, resolve
from sim.envs import episode_seed
from sim.errors import UsageError
from sim.metrics import EpisodeResult
from sim.suites import Suite, get_suite

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT_PER_WORKER = 2
"""Two units queued per actor hide the round trip between units without starving other actors."""


@dataclass
class RunOutcome:
    report: Report
    run_dir: Path
    failed: bool


@dataclass(frozen=True)
class _Entry:
    """A checkpoint with the policy URI it came from."""

    policy_uri: str
    checkpoint: Checkpoint


class _RayEvalWorker(EvalWorker):
    """EvalWorker told its GPU ids and node by Ray (only known inside the actor process)."""

    def __init__(self, **kwargs: object) -> None:
        context = ray.get_runtime_context()
        super().__init__(gpu_ids=[str(i) for i in ray.get_gpu_ids()], node_id=context.get_node_id(), **kwargs)


def evaluate(
    config: EvalConfig, *, show_progress: bool = False, resolved: Mapping[str, Sequence[Checkpoint]] | None = None
) -> RunOutcome:
    """Run one evaluation end to end and write its outputs; raises UsageError before any work on bad input.

    `resolved` gives the checkpoints of each policy URI already resolved (`evaluator.sweep` passes the ones it
    holds leases for); by default each URI is resolved here with `config.checkpoints`."""
    started = time.perf_counter()
    suite = load_suite(config)
    check_writable(config.data_dir)
    settings = source_settings(config)
    if config.output_uri:
        preflight(config.output_uri, settings)
    entries = [
        _Entry(uri, checkpoint)
        for uri in config.policy_uris
        for checkpoint in (resolved[uri] if resolved is not None else resolve(uri, config.checkpoints, settings))
    ]
    run_dir = config.data_dir / config.run_name
    cache = ResultsCache(config.data_dir) if config.use_cache else None
    collector = _Collector(run_dir, entries, suite)
    cached = collector.add_cached(cache, replays=config.replays) if cache else set()
    fetched = [e.checkpoint if e.checkpoint.error is None else None for e in entries]
    units = make_plan(fetched, suite, shard_size=config.shard_size, replays=config.replays, skip=cached)

    ray_init_s, evaluation_s, stats = 0.0, 0.0, []
    if units:  # everything cached: no Ray at all
        ray_init_s, evaluation_s, stats = _run_units(config, entries, units, collector, cache, show_progress)

    timing = collector.timing(time.perf_counter() - started, ray_init_s, evaluation_s, stats)
    report = collector.report(config, timing, stats)
    write_episodes(run_dir / "episodes.parquet", collector.rows())
    if config.output_uri:
        report = with_delivered_replay_urls(report, run_dir, config.output_uri)
        report = report.model_copy(update={"output": OutputStatus(uri=config.output_uri)})
    write_report(run_dir, report)
    if config.output_uri:
        report = _deliver(run_dir, report, config, settings)
    failed = report.output is not None and report.output.error is not None
    failed = failed or any(c.error for p in report.policies for c in p.checkpoints)
    return RunOutcome(report=report, run_dir=run_dir, failed=failed)


def _run_units(
    config: EvalConfig,
    entries: Sequence[_Entry],
    units: Sequence[WorkUnit],
    collector: _Collector,
    cache: ResultsCache | None,
    show_progress: bool,
) -> tuple[float, float, list[WorkerStats]]:
    """Start or attach to Ray, run the units on a pool of workers; (ray start s, evaluation s, worker stats)."""

    def on_result(unit: WorkUnit, result: UnitResult) -> None:
        collector.add(unit, result)
        if cache is not None:
            for episode in result.episodes:
                cache.put(unit.checkpoint_digest, unit.env, episode)
        advance(len(unit.episodes))

    ray_init_s, started_ray = connect(config)
    try:
        count = worker_count(config, ray.cluster_resources(), len(units))
        scheduler = Scheduler(worker_factory(config), count, entries, units, config.max_attempts, config.unit_timeout)
        workers_started = time.perf_counter()
        # Actor processes boot (imports, torch) before the evaluation clock starts; a worker that fails to
        # start surfaces in the scheduler's own loop (this wait never raises).
        probes = [worker.stats.remote() for worker in scheduler.workers]
        ray.wait(probes, num_returns=len(probes), timeout=300)
        collector.workers_start_s = time.perf_counter() - workers_started
        eval_started = time.perf_counter()
        with _progress(show_progress, sum(len(u.episodes) for u in units)) as advance:
            scheduler.run(on_result)
        evaluation_s = time.perf_counter() - eval_started
        stats = _worker_stats(scheduler.workers)
        collector.workers_replaced = scheduler.replaced
        for worker in scheduler.workers:
            ray.kill(worker)
    finally:
        if started_ray:
            ray.shutdown()
    return ray_init_s, evaluation_s, stats


def _worker_stats(workers: Sequence[ray.actor.ActorHandle]) -> list[WorkerStats]:
    """Counters of the workers still alive at the end (one may die after its last unit: its results are
    already in, only its counters are lost)."""
    stats = []
    for worker in workers:
        try:
            stats.append(ray.get(worker.stats.remote()))
        except RayError as exc:
            logger.warning("worker died after its last unit; its counters are lost (%s)", type(exc).__name__)
    return stats


def _deliver(run_dir: Path, report: Report, config: EvalConfig, settings: SourceSettings) -> Report:
    """Deliver to OUTPUT_URI; a failure is recorded in the report (and the local report.json), never lost."""
    try:
        deliver(run_dir, report, config.output_uri, settings)
    except (OutputError, UsageError) as exc:
        logger.error("%s", exc)
        report = report.model_copy(update={"output": OutputStatus(uri=config.output_uri, error=str(exc))})
        write_report(run_dir, report)
    return report


def source_settings(config: EvalConfig) -> SourceSettings:
    key = config.wandb_api_key.get_secret_value() if config.wandb_api_key else None
    return SourceSettings(
        data_dir=config.data_dir,
        wandb_entity=config.wandb_entity,
        wandb_project=config.wandb_project,
        wandb_api_key=key,
    )


def load_suite(config: EvalConfig) -> Suite:
    suite = get_suite(config.suite).select(config.env).with_episodes(config.episodes)
    return suite if config.seed is None else suite.model_copy(update={"seed": config.seed})


def connect(config: EvalConfig) -> tuple[float, bool]:
    """Attach to the running Ray (tests, `ray job submit` sets RAY_ADDRESS) or start a local one.
    Returns (seconds spent, whether we initialised this process's connection and so must shut it down)."""
    if config.ray_address:
        check_reachable(config.ray_address)
    if ray.is_initialized():
        return 0.0, False
    started = time.perf_counter()
    try:
        if config.ray_address:
            ray.init(address=config.ray_address, logging_level=logging.WARNING)
        else:
            # address="local": always a fresh instance, never a cluster someone `ray start`ed on this machine.
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, RayError, RuntimeError, ValueError) as exc:
        where = config.ray_address or "a local Ray instance"
        raise UsageError(f"cannot connect to {where}: {str(exc).splitlines()[0]}; check --ray-address") from None
    return time.perf_counter() - started, True


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connect to the GCS (or Ray client) port first: ray.init on a dead address blocks for minutes."""
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if address in ("auto", "local") or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UsageError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check --ray-address / RAY_ADDRESS"
        ) from None


def worker_count(config: EvalConfig, resources: dict[str, float], num_units: int) -> int:
    """Explicit --num-workers, else as many as the cluster's CPUs (or GPUs for cuda) hold; never more
    workers than units."""
    if config.device is Device.CUDA and resources.get("GPU", 0) <= 0:
        raise UsageError("--device cuda but the Ray cluster has no GPU; use --device cpu or a GPU cluster")
    if config.num_workers:
        count = config.num_workers
    else:
        count = int(resources.get("CPU", 1) // config.cpus_per_worker)
        if config.device is Device.CUDA:
            count = min(count, int(resources.get("GPU", 0) // config.gpus_per_worker))
    return max(1, min(count, num_units))


def worker_factory(config: EvalConfig) -> Callable[[], ray.actor.ActorHandle]:
    """Resources are explicit: without num_cpus an actor asking for GPUs would also take a whole CPU.
    No Ray restarts: the scheduler replaces a dead worker itself, so its accounting of in-flight units
    never races an actor coming back."""
    gpus = config.gpus_per_worker if config.device is Device.CUDA else 0
    actor = ray.remote(_RayEvalWorker).options(num_cpus=config.cpus_per_worker, num_gpus=gpus, max_restarts=0)
    threads = max(1, int(config.cpus_per_worker))

    def start() -> ray.actor.ActorHandle:
        return actor.remote(
            device=config.device.value,
            num_threads=threads,
            cache_size=config.cache_size,
            trust_remote_code=config.trust_remote_code,
        )

    return start


class Scheduler:
    """Explicit in-flight bookkeeping: which units are queued on which worker (in order: an actor runs its
    calls one after another), when the one at the head started, and how often each unit was tried.

    Failure policy:
    - a call that raises because its worker died (process killed, node removed): that worker is replaced
      by a fresh actor; the unit at its head counts one attempt and is re-queued (after `max_attempts`
      it becomes its checkpoint's error: a poison unit cannot hang or sink the run); units queued behind
      it are re-queued without counting;
    - a head unit running longer than `unit_timeout` fails with that error at once (a hang is not
      retried), and its worker is killed and replaced, so the other units go on;
    - a checkpoint error returned by a worker (cannot load, bad output) drops that checkpoint's other units.
    Each unit's result is reported once: results of replaced workers' calls are never read.
    """

    def __init__(
        self,
        new_worker: Callable[[], ray.actor.ActorHandle],
        count: int,
        entries: Sequence[_Entry],
        units: Sequence[WorkUnit],
        max_attempts: int,
        unit_timeout: float | None = None,
    ) -> None:
        self._new_worker = new_worker
        self._workers = [new_worker() for _ in range(count)]
        self._refs = {e.checkpoint.digest: ray.put(e.checkpoint.data) for e in entries if not e.checkpoint.error}
        self._pending: deque[WorkUnit] = deque(units)
        self._queues: list[deque[tuple[ray.ObjectRef, WorkUnit]]] = [deque() for _ in range(count)]
        self._head_started: list[float] = [0.0] * count
        self._held: list[list[str]] = [[] for _ in range(count)]
        self._attempts: Counter[int] = Counter()
        self._max_attempts = max_attempts
        self._unit_timeout = unit_timeout
        self.replaced = 0

    @property
    def workers(self) -> list[ray.actor.ActorHandle]:
        return list(self._workers)

    def run(self, on_result: Callable[[WorkUnit, UnitResult], None]) -> None:
        """Call `on_result(unit, result)` once per unit, in completion order."""
        while self._pending or any(self._queues):
            self._fill()
            owner = {ref: w for w, queue in enumerate(self._queues) for ref, _ in queue}
            ready, _ = ray.wait(list(owner), num_returns=1, timeout=self._wait_timeout())
            for ref in ready:
                worker = owner[ref]
                unit = self._finish(worker, ref)
                result = self._collect(ref, unit, worker)
                if result is not None:
                    self._report(unit, result, on_result)
            self._expire(on_result)

    def _fill(self) -> None:
        for worker, queue in enumerate(self._queues):
            while self._pending and len(queue) < MAX_IN_FLIGHT_PER_WORKER:
                unit = self._pick(worker)
                if not queue:
                    self._head_started[worker] = time.monotonic()
                queue.append((self._workers[worker].run.remote(unit, self._refs[unit.checkpoint_digest]), unit))
                if unit.checkpoint_digest not in self._held[worker]:
                    self._held[worker].append(unit.checkpoint_digest)

    def _pick(self, worker: int) -> WorkUnit:
        """Checkpoint affinity: a unit of a checkpoint this worker holds (most recent first), else one of a
        checkpoint no worker holds yet, else the oldest pending unit."""
        for digest in reversed(self._held[worker]):
            for unit in self._pending:
                if unit.checkpoint_digest == digest:
                    self._pending.remove(unit)
                    return unit
        held_anywhere = {digest for held in self._held for digest in held}
        for unit in self._pending:
            if unit.checkpoint_digest not in held_anywhere:
                self._pending.remove(unit)
                return unit
        return self._pending.popleft()

    def _finish(self, worker: int, ref: ray.ObjectRef) -> WorkUnit:
        queue = self._queues[worker]
        index = next(i for i, (queued, _) in enumerate(queue) if queued == ref)
        _, unit = queue[index]
        del queue[index]
        if index == 0:
            self._head_started[worker] = time.monotonic()
        return unit

    def _collect(self, ref: ray.ObjectRef, unit: WorkUnit, worker: int) -> UnitResult | None:
        """The unit's result, or None when it was re-queued after its worker died."""
        try:
            return ray.get(ref)
        except RayError as exc:
            self._attempts[unit.unit_id] += 1
            attempts = self._attempts[unit.unit_id]
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            logger.warning("unit %d failed on worker %d (attempt %d: %s)", unit.unit_id, worker, attempts, reason)
            self._replace(worker)
            if attempts < self._max_attempts:
                self._pending.appendleft(unit)
                return None
            return UnitResult(unit_id=unit.unit_id, worker=str(worker), error=f"failed {attempts} times: {reason}")

    def _expire(self, on_result: Callable[[WorkUnit, UnitResult], None]) -> None:
        if self._unit_timeout is None:
            return
        now = time.monotonic()
        for worker, queue in enumerate(self._queues):
            if queue and now - self._head_started[worker] > self._unit_timeout:
                _, unit = queue[0]
                error = f"timed out after {self._unit_timeout:g} s (--unit-timeout); its worker was replaced"
                logger.warning("unit %d %s", unit.unit_id, error)
                queue.popleft()
                self._replace(worker)
                self._report(unit, UnitResult(unit_id=unit.unit_id, worker=str(worker), error=error), on_result)

    def _replace(self, worker: int) -> None:
        """Kill the worker (if still alive) and start a fresh one; its queued units go back to pending."""
        ray.kill(self._workers[worker], no_restart=True)
        for _, unit in reversed(self._queues[worker]):
            self._pending.appendleft(unit)
        self._queues[worker].clear()
        self._held[worker] = []
        self._workers[worker] = self._new_worker()
        self.replaced += 1

    def _wait_timeout(self) -> float | None:
        if self._unit_timeout is None:
            return None
        heads = [self._head_started[w] for w, queue in enumerate(self._queues) if queue]
        return max(0.0, min(heads) + self._unit_timeout - time.monotonic()) + 0.01 if heads else None

    def _report(self, unit: WorkUnit, result: UnitResult, on_result: Callable[[WorkUnit, UnitResult], None]) -> None:
        on_result(unit, result)
        if result.error:
            for other in [u for u in self._pending if u.checkpoint_digest == unit.checkpoint_digest]:
                self._pending.remove(other)
                on_result(other, UnitResult(unit_id=other.unit_id, worker=result.worker, error=result.error))


@dataclass
class _Collector:
    """Accumulates unit results as they stream in; writes replays at once, reduces at the end."""

    run_dir: Path
    entries: Sequence[_Entry]
    suite: Suite
    results: dict[int, list[EpisodeResult]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    replay_urls: dict[tuple[int, str], str] = field(default_factory=dict)
    cached_episodes: int = 0
    played_agent_steps: int = 0
    workers_replaced: int = 0
    workers_start_s: float = 0.0

    def __post_init__(self) -> None:
        for index, entry in enumerate(self.entries):
            if entry.checkpoint.error:
                self.errors[index] = entry.checkpoint.error

    def add_cached(self, cache: ResultsCache, replays: bool) -> set[tuple[int, str, int]]:
        """Take every episode the cache already holds; return their (checkpoint index, env, episode) keys.
        Episode 0 counts as cached only with its replay when replays are wanted."""
        found: set[tuple[int, str, int]] = set()
        for index, entry in enumerate(self.entries):
            if entry.checkpoint.error:
                continue
            for env in self.suite.envs:
                for episode in range(env.episodes):
                    seed = episode_seed(self.suite.seed, env.name, episode)
                    result = cache.get(entry.checkpoint.digest, env, seed, episode)
                    if result is None or (replays and episode == 0 and result.replay is None):
                        continue
                    self._keep(index, result)
                    found.add((index, env.name, episode))
        self.cached_episodes = len(found)
        return found

    def add(self, unit: WorkUnit, result: UnitResult) -> None:
        index = unit.checkpoint_index
        if result.error:
            self.errors.setdefault(index, result.error)
            return
        for episode in result.episodes:
            self._keep(index, episode)
            self.played_agent_steps += episode.agent_steps

    def _keep(self, index: int, episode: EpisodeResult) -> None:
        self.results.setdefault(index, []).append(episode)
        if episode.replay is not None:
            name = self.entries[index].checkpoint.name
            path = replay_path(self.run_dir, index, name, episode.env, episode.episode)
            atomic_write(path, episode.replay)
            self.replay_urls[(index, episode.env)] = path.resolve().as_uri()

    def rows(self) -> list[EpisodeRow]:
        """One row per episode: checkpoints in plan order, environments in suite order, then episode."""
        env_order = {env.name: i for i, env in enumerate(self.suite.envs)}
        rows = []
        for index, entry in enumerate(self.entries):
            for result in sorted(self.results.get(index, []), key=lambda r: (env_order[r.env], r.episode)):
                checkpoint = entry.checkpoint
                rows.append(
                    EpisodeRow(entry.policy_uri, checkpoint.name, checkpoint.version, checkpoint.digest, result)
                )
        return rows

    def timing(self, wall_s: float, ray_init_s: float, evaluation_s: float, stats: list[WorkerStats]) -> Timing:
        agent_steps = self.played_agent_steps
        return Timing(
            wall_s=wall_s,
            ray_init_s=ray_init_s,
            evaluation_s=evaluation_s,
            agent_steps=agent_steps,
            agent_steps_per_s=agent_steps / evaluation_s if evaluation_s > 0 else 0.0,
            episodes=sum(len(results) for results in self.results.values()),
            episodes_cached=self.cached_episodes,
            policy_loads=sum(s.loads for s in stats),
            workers=len(stats),
            workers_replaced=self.workers_replaced,
            workers_start_s=self.workers_start_s,
        )

    def report(self, config: EvalConfig, timing: Timing, stats: list[WorkerStats]) -> Report:
        policies: dict[str, list[CheckpointReport]] = {uri: [] for uri in config.policy_uris}
        for index, entry in enumerate(self.entries):
            checkpoint = entry.checkpoint
            error = self.errors.get(index)
            metrics = None if error else checkpoint_metrics(self.suite, self.results.get(index, []))
            first_env = self.suite.envs[0].name
            policies[entry.policy_uri].append(
                CheckpointReport(
                    name=checkpoint.name,
                    uri=checkpoint.uri,
                    version=checkpoint.version,
                    digest=checkpoint.digest,
                    metrics=metrics,
                    replay_url=None if error else self.replay_urls.get((index, first_env)),
                    error=error,
                )
            )
        return Report(
            simulation_suite=self.suite.name,
            run_name=config.run_name,
            evaluator_version=__version__,
            seed=self.suite.seed,
            policies=[PolicyReport(policy_uri=uri, checkpoints=cps) for uri, cps in policies.items()],
            timing=timing,
            workers=[
                WorkerReport(
                    worker=s.worker,
                    device=s.device,
                    node_id=s.node_id,
                    gpu_ids=list(s.gpu_ids),
                    policy_loads=s.loads,
                    cache_hits=s.hits,
                    loaded_checkpoints=list(s.loaded_checkpoints),
                    cached_policies=s.cached_policies,
                    peak_rss_mb=s.peak_rss_mb,
                )
                for s in stats
            ],
        )


class _progress:
    """A rich progress bar on stderr (episodes done / total); a no-op when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self._progress = (
            Progress(
                TextColumn("evaluating"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("episodes"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            if enabled
            else None
        )
        self._total = total

    def __enter__(self):
        if self._progress is None:
            return lambda n: None
        self._progress.start()
        task = self._progress.add_task("evaluating", total=self._total)
        return lambda n: self._progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
