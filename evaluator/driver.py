"""The driver: one evaluation end to end. Resolve policies -> plan units -> reuse cached episodes -> start
(or attach to) Ray and a pool of `EvalWorker` actors (`evaluator.ray_cluster`) -> stream the units to them
(`evaluator.scheduler`) -> collect results as they arrive (`evaluator.collector`) -> assemble the report
(`evaluator.report_assembly`) -> write and deliver it.

Failure policy: a checkpoint that cannot be fetched or loaded fails alone (its `error`); dead and hung
workers are replaced by the scheduler (actors have no Ray restarts, so its accounting never races an actor
coming back; `evaluator.work_queue` has the rules); every other checkpoint completes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from actors.protocol import UnitResult, WorkerStats, WorkUnit
from evaluator.collector import Collector, Entry
from evaluator.config import EvalConfig
from evaluator.in_process import in_process_worker, run_in_process, runs_in_process
from evaluator.outputs import OutputError, deliver, preflight_run, with_delivered_replay_urls
from evaluator.outputs.local import EpisodeTable, write_report
from evaluator.plan import make_plan
from evaluator.report import OutputStatus, Report
from evaluator.report_assembly import build_report
from evaluator.results_cache import ResultsCache
from evaluator.sources import Checkpoint, SourceSettings, resolve
from sim.errors import UsageError
from sim.suites import Suite, get_suite

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""`(episodes done, episodes to play)`, called as units finish."""


@dataclass
class RunOutcome:
    report: Report
    run_dir: Path
    failed: bool


def evaluate(
    config: EvalConfig,
    *,
    on_progress: ProgressCallback | None = None,
    resolved: Mapping[str, Sequence[Checkpoint]] | None = None,
) -> RunOutcome:
    """Run one evaluation end to end and write its outputs; raises UsageError before any work on bad input.

    `resolved` gives the checkpoints of each policy URI already resolved (`evaluator.sweep` passes the ones it
    holds leases for); by default each URI is resolved here with `config.checkpoints`. `on_progress(done,
    total)` is called with episodes played so far (the CLI draws its bar from it)."""
    started = time.perf_counter()
    suite = load_suite(config)
    settings = source_settings(config)
    preflight_run(config, settings)
    entries = [
        Entry(uri, checkpoint)
        for uri in config.policy_uris
        for checkpoint in (resolved[uri] if resolved is not None else resolve(uri, config.checkpoints, settings))
    ]
    run_dir = config.data_dir / config.run_name
    cache = ResultsCache(config.data_dir) if config.reuse_results else None
    table = EpisodeTable(run_dir / "episodes.parquet")
    try:
        collector = Collector(run_dir, entries, suite, table)
        cached = collector.add_cached(cache, replays=config.replays) if cache else set()
        fetched = [e.checkpoint if e.checkpoint.error is None else None for e in entries]
        units = make_plan(fetched, suite, shard_size=config.shard_size, replays=config.replays, skip=cached)
        ray_init_s, evaluation_s, stats = 0.0, 0.0, []
        if units:  # everything cached: no Ray at all
            ray_init_s, evaluation_s, stats = _run_units(config, units, collector, cache, on_progress)
    except BaseException:
        table.abort()
        raise
    table.close()

    timing = collector.timing(time.perf_counter() - started, ray_init_s, evaluation_s, stats)
    checkpoints = collector.checkpoint_reports()
    report = build_report(checkpoints, suite, config.policy_uris, config.run_name, timing, stats)
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
    units: Sequence[WorkUnit],
    collector: Collector,
    cache: ResultsCache | None,
    on_progress: ProgressCallback | None,
) -> tuple[float, float, list[WorkerStats]]:
    """Run the units in this process when the plan is small (evaluator.in_process), else start or attach to
    Ray and run them on a pool of workers; (ray start s, evaluation s, worker stats)."""

    total, done = sum(len(u.jobs) for u in units), 0

    def on_result(unit: WorkUnit, result: UnitResult) -> None:
        nonlocal done
        collector.add(unit, result)
        if cache is not None:
            envs = {job.env.name: job.env for job in unit.jobs}
            for episode in result.episodes:
                cache.put(unit.checkpoint_digest, envs[episode.env], episode)
        done += len(unit.jobs)
        if on_progress is not None:
            on_progress(done, total)

    data = {e.checkpoint.digest: e.checkpoint.data for e in collector.entries if not e.checkpoint.error}
    if runs_in_process(config, units):
        workers_started = time.perf_counter()
        worker = in_process_worker(config)
        collector.workers_start_s = time.perf_counter() - workers_started
        eval_started = time.perf_counter()
        stats = run_in_process(worker, units, data, on_result)
        return 0.0, time.perf_counter() - eval_started, [stats]
    import ray  # not before: a small evaluation in process never loads it

    from evaluator.ray_cluster import connect, worker_count, worker_factory, worker_stats
    from evaluator.scheduler import Scheduler

    ray_init_s, started_ray = connect(config)
    try:
        count = worker_count(config, ray.cluster_resources(), len(units))
        scheduler = Scheduler(worker_factory(config), count, data, units, config.max_attempts, config.unit_timeout)
        workers_started = time.perf_counter()
        # Actor processes boot (imports, torch) before the evaluation clock starts; a worker that fails to
        # start surfaces in the scheduler's own loop (this wait never raises).
        probes = [worker.stats.remote() for worker in scheduler.workers]
        ray.wait(probes, num_returns=len(probes), timeout=300)
        collector.workers_start_s = time.perf_counter() - workers_started
        eval_started = time.perf_counter()
        if on_progress is not None:
            on_progress(0, total)
        scheduler.run(on_result)
        evaluation_s = time.perf_counter() - eval_started
        stats = worker_stats(scheduler.workers)
        collector.workers_replaced = scheduler.replaced
        for worker in scheduler.workers:
            ray.kill(worker)
    finally:
        if started_ray:
            ray.shutdown()
    return ray_init_s, evaluation_s, stats


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
