"""The driver: one evaluation end to end. List the policies' checkpoints -> download them a bounded number
ahead (`evaluator.run.checkpoint_feed`) -> per checkpoint as it arrives, reuse stored episodes and plan the rest
(`evaluator.run.unit_stream`) -> run the units in this process when the plan is small (`evaluator.run.in_process`),
else start (or attach to) Ray and a pool of `EvalWorker` actors (`evaluator.run.ray_cluster`) and stream the units
to them (`evaluator.run.scheduler`) -> collect results as they arrive (`evaluator.reduce.collector`) -> assemble the
report (`evaluator.reduce.assembly`) -> write and deliver it.

Memory is bounded by the work in flight, not by the run's size: at most `max_resident_checkpoints`
checkpoints' bytes are held, each released when its last unit is reported, and results are streamed to disk.

Failure policy: a checkpoint that cannot be fetched or loaded fails alone (its `error`); dead and hung
workers are replaced by the scheduler (actors have no Ray restarts, so its accounting never races an actor
coming back; `evaluator.run.work_queue` has the rules); every other checkpoint completes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from actors.protocol import CoPlayerBytes
from evaluator.config import EvalConfig, Play, WandbAccount, Workers, results_db_url
from evaluator.cost.estimate import CheckpointIdentity, Usage, cost_report
from evaluator.cost.node_clock import LOCAL, NodeLifetime
from evaluator.cost.prices import PriceTable, load_prices
from evaluator.outputs import OutputError, deliver, preflight_run, with_delivered_replay_urls
from evaluator.reduce.adaptive import AdaptivePlanner
from evaluator.reduce.assembly import CO_PLAYER, build_report, ratings_and_cross_play
from evaluator.reduce.collector import Collector, Entry
from evaluator.reduce.report import OutputStatus, Report
from evaluator.reduce.run_directory import EpisodeTable, atomic_write, write_report, write_report_streamed
from evaluator.reduce.sink import RunSink, lineup_uris
from evaluator.run.checkpoint_feed import CheckpointFeed
from evaluator.run.executor import NOTHING_RAN, RunTiming
from evaluator.run.in_process import NODE_ID as IN_PROCESS_NODE
from evaluator.run.in_process import InProcessExecutor, runs_in_process
from evaluator.run.lineup import recorded_suite, resolve_lineups
from evaluator.run.plan import plan_checkpoint
from evaluator.run.scheduler import OnResult, execute
from evaluator.run.unit_stream import Admission, ProgressCallback, UnitStream
from evaluator.scorecard.rows import Row, RowCollector, rows_of
from evaluator.sources import Checkpoint, SourceSettings, list_candidates
from evaluator.store.episodes import EpisodeStore
from evaluator.store.runs import RecordedCheckpoint, RunLog
from sim.errors import EvaluatorError, UsageError, first_line
from sim.suites import Suite, get_suite

logger = logging.getLogger(__name__)

DEFAULT_MAX_RESIDENT = 16
"""Resident checkpoints when `--max-resident-checkpoints` is not given: this, or twice the workers if more."""


@dataclass
class RunOutcome:
    run_dir: Path
    failures: list[str]
    """`name (version): error` per failed checkpoint, and a failed delivery; empty when all went well."""
    loaded: Report | None = None
    suite: str = ""
    """The suite's name, as the run played it."""
    empty: bool = False
    """The admission took no checkpoint (a sweep with nothing new): no report, no Parquet, no run recorded."""

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def report(self) -> Report:
        """The report, read back from report.json on first use: a large run never holds it in memory unless
        asked (the CLI streams the file instead)."""
        if self.loaded is None:
            self.loaded = Report.model_validate_json((self.run_dir / "report.json").read_bytes())
        return self.loaded


def evaluate(
    config: EvalConfig,
    *,
    on_progress: ProgressCallback | None = None,
    admission: Admission | None = None,
) -> RunOutcome:
    """Run one evaluation end to end and write its outputs; raises UsageError before any work on bad input.

    Each policy URI's checkpoints are listed with `config.checkpoints` and downloaded a bounded number ahead;
    `admission` decides, as each arrives, whether the run takes it (`evaluator.run.sweep` takes a lease;
    default: every checkpoint). `on_progress(done, total)` is called with episodes settled so far (the CLI
    draws its bar from it)."""
    started = time.perf_counter()
    suite = load_suite(config.play, trust_remote_code=config.trust_remote_code)
    prices = load_prices(config.prices_file)
    settings = source_settings(config.data_dir, config.wandb)
    preflight_run(config.storage, settings)
    listed = [(uri, c) for uri in config.policy_uris for c in list_candidates(uri, config.checkpoints, settings)]
    suite, co_players = resolve_lineups(suite, config.play, settings, [c for _, c in listed])
    run_dir = config.data_dir / config.run_name
    entries = [Entry(uri, Checkpoint(c.name, c.uri, c.version, digest="")) for uri, c in listed]
    store_url = results_db_url(config.storage)
    warn_about_old_cache(config.data_dir)
    store = EpisodeStore(store_url)
    run_log = RunLog(
        store_url, config.run_name, recorded_suite(suite.name, config.play), config.model_dump(mode="json")
    )
    table = EpisodeTable(run_dir / "episodes.parquet")
    feed = CheckpointFeed([c for _, c in listed], config.max_resident_checkpoints or DEFAULT_MAX_RESIDENT)
    del listed  # the feed holds each candidate until it is downloaded
    try:
        adaptive = AdaptivePlanner.of(config.play)
        collector = Collector(
            entries,
            suite,
            baseline=config.baseline,
            normalize=config.normalize,
            reduce_when_complete=adaptive is None,
        )
        stream = UnitStream(
            feed,
            collector,
            RunSink(run_dir, table, store, run_log.run_id, lineup_uris(suite)),
            shard_size=config.shard_size,
            replays=config.replays,
            store=store,
            reuse=config.reuse_results,
            adaptive=adaptive,
            admission=admission,
            on_progress=on_progress,
        )
        ray_init_s, ran = 0.0, NOTHING_RAN
        usage = Usage()
        if stream.has_work():  # everything stored or failed: no Ray at all
            widen_feed = config.max_resident_checkpoints is None  # the default bound grows with the pool
            ray_init_s, ran = _run_units(
                config.workers,
                stream,
                usage,
                prices,
                co_players,
                shard_size=config.shard_size,
                widen_feed=widen_feed,
            )
    except BaseException:
        table.abort()  # nothing half-written: no episodes.parquet, no report; stored episodes are whole units
        with contextlib.suppress(EvaluatorError):  # the database itself may be what went away
            run_log.failed()
        raise
    finally:
        feed.close()
    if admission is not None and len(collector.left_out) == len(collector.entries):
        table.abort()
        run_log.discard()
        return RunOutcome(run_dir=run_dir, failures=[], suite=suite.name, empty=True)
    table.close()

    stats = list(ran.workers)
    timing = collector.timing(
        time.perf_counter() - started,
        ray_init_s,
        ran.evaluation_s,
        stats,
        workers_start_s=ran.workers_start_s,
        workers_replaced=ran.replaced,
    )
    cost = cost_report(usage, prices, timing.agent_steps, _identities(collector))
    policy_uris = collector.policy_uris(config.policy_uris)
    rule = adaptive.rule if adaptive else None
    skeleton = build_report([], suite, policy_uris, config.run_name, timing, stats, rule, cost=cost)
    if collector.games:  # mixed episodes: who beat whom, and each policy's rating
        by = config.play.rating.value
        ratings, cells = ratings_and_cross_play(collector.games, _players(collector, suite), by)
        skeleton = skeleton.model_copy(update={"ratings": ratings, "rating_system": by, "cross_play": cells})
    failures = collector.failures()
    if not config.output_uri:
        page_rows = RowCollector(suite.name)
        write_report_streamed(
            run_dir,
            skeleton,
            [page_rows.collecting(p.policy_uri, collector.checkpoint_reports(p.policy_uri)) for p in skeleton.policies],
        )
        write_scorecard(run_dir, skeleton, (page_rows.finished(), page_rows.environments))
        run_log.finish(_recorded(collector, skeleton), timing, failed=bool(failures))
        return RunOutcome(run_dir=run_dir, failures=failures, suite=suite.name)
    # Delivery reads the whole report (W&B logs every checkpoint's metrics): built in memory only here.
    policies = [
        p.model_copy(update={"checkpoints": list(collector.checkpoint_reports(p.policy_uri))})
        for p in skeleton.policies
    ]
    report = skeleton.model_copy(update={"policies": policies})
    report = with_delivered_replay_urls(report, run_dir, config.output_uri)
    report = report.model_copy(update={"output": OutputStatus(uri=config.output_uri)})
    write_report(run_dir, report)
    write_scorecard(run_dir, report)
    report = _deliver(run_dir, report, config.output_uri, settings)
    if report.output is not None and report.output.error is not None:
        failures.append(report.output.error)
    run_log.finish(_recorded(collector, skeleton), timing, failed=bool(failures))
    return RunOutcome(run_dir=run_dir, failures=failures, loaded=report, suite=suite.name)


def write_scorecard(run_dir: Path, report: Report, rows: tuple[list[Row], list[str]] | None = None) -> None:
    """report.html beside report.json, from `rows` (rows, environments) when given, else from the report's own
    checkpoints. The report is already complete: a page that cannot be drawn is an error in the log (the run's
    results stand), never a lost evaluation."""
    from evaluator.scorecard.page import PAGE_NAME, render_page  # plotly: imported only when a page is drawn

    try:
        page_rows, envs = rows if rows is not None else rows_of(report)
        atomic_write(run_dir / PAGE_NAME, render_page(report, page_rows, envs, run_dir).encode("utf-8"))
    except Exception as exc:  # a bug in drawing must not throw away the evaluation it draws
        logger.error("report.html not written: %s: %s", type(exc).__name__, first_line(exc))


def _recorded(collector: Collector, skeleton: Report) -> Iterator[RecordedCheckpoint]:
    ratings = {r.digest: r.model_dump(include={"mu", "sigma", "ordinal", "elo", "games"}) for r in skeleton.ratings}
    for policy in skeleton.policies:
        for checkpoint in collector.checkpoint_reports(policy.policy_uri):
            yield RecordedCheckpoint(policy.policy_uri, checkpoint, ratings.get(checkpoint.digest))


@functools.cache
def warn_about_old_cache(data_dir: Path) -> None:
    """The per-episode JSON files of earlier versions are not read any more: said once, not imported (their
    episodes are replayed once, then stored)."""
    old = data_dir / "cache" / "results"
    if old.is_dir():
        logger.info("ignoring the old per-episode cache %s: results now live in the results database; delete it", old)


def _players(collector: Collector, suite: Suite) -> dict[str, tuple[str, str, str]]:
    """digest -> (policy URI, name, version) of everyone who may have played: the co-players, then the run's
    checkpoints (a checkpoint that is also a co-player is named as the checkpoint)."""
    players = {npc.digest: (npc.uri, npc.uri, CO_PLAYER) for env in suite.envs for npc in env.npcs}
    for index, entry in enumerate(collector.entries):
        if index not in collector.left_out and entry.checkpoint.digest:
            checkpoint = entry.checkpoint
            players[checkpoint.digest] = (entry.policy_uri, checkpoint.name, checkpoint.version)
    return players


def _identities(collector: Collector) -> list[CheckpointIdentity]:
    return [
        CheckpointIdentity(e.policy_uri, e.checkpoint.name, e.checkpoint.version, e.checkpoint.digest)
        for index, e in enumerate(collector.entries)
        if index not in collector.left_out
    ]


def _run_units(
    workers: Workers,
    stream: UnitStream,
    usage: Usage,
    prices: PriceTable,
    co_players: Mapping[str, CoPlayerBytes],
    *,
    shard_size: int,
    widen_feed: bool,
) -> tuple[float, RunTiming]:
    """Run the units through one executor (`evaluator.run.executor`, driven by `evaluator.run.scheduler`): in this
    process when the plan is small (`evaluator.run.in_process`), else on a pool of Ray workers, starting or
    attaching to Ray; (ray start s, what running them took). `usage` gathers what the cost estimate prices:
    each unit's worker seconds, the nodes our workers ran on and every node's time up."""
    per_checkpoint = plan_checkpoint(0, Checkpoint("", "", "", ""), stream.suite, shard_size=shard_size)
    max_units = len(per_checkpoint) * len(stream.feed)
    on_result = usage.recording(stream.reported)
    if runs_in_process(workers, sum(u.agent_steps_upper_bound for u in per_checkpoint) * len(stream.feed)):
        prices.require([LOCAL])  # this machine is the one node
        held_from = time.time()
        ray_init_s = 0.0
        timing = execute(
            InProcessExecutor(workers, co_players),
            stream,
            on_result,
            max_attempts=workers.max_attempts,
            unit_timeout=None,
        )  # a call in process runs to its end: --unit-timeout cannot apply (auto never chooses this with one)
        usage.lifetimes.append(NodeLifetime(IN_PROCESS_NODE, LOCAL, held_from, time.time()))
    else:
        ray_init_s, timing = _run_on_ray(workers, stream, on_result, usage, prices, max_units, widen_feed, co_players)
    usage.ran_on(timing.nodes)
    return ray_init_s, timing


def _run_on_ray(
    workers: Workers,
    stream: UnitStream,
    on_result: OnResult,
    usage: Usage,
    prices: PriceTable,
    max_units: int,
    widen_feed: bool,
    co_players: Mapping[str, CoPlayerBytes],
) -> tuple[float, RunTiming]:
    """Start or attach to Ray, size the worker pool for its nodes (every node that could run a worker must have a
    price: fail fast) and run the units on it; (ray start s, timing)."""
    # Not before: a small evaluation in process never loads Ray.
    from evaluator.run.ray_cluster import host_types, ray_session, worker_factory, worker_slots
    from evaluator.run.ray_executor import RayExecutor

    with ray_session(workers, usage) as cluster:
        slots = worker_slots(workers, cluster.nodes, max_units)
        prices.require(host_types(cluster.nodes, slots))
        if widen_feed:
            stream.feed.widen(2 * len(slots))
        usage.ran_on(slot.node_id for slot in slots)
        executor = RayExecutor(worker_factory(workers, slots, co_players), len(slots))
        timing = execute(
            executor, stream, on_result, max_attempts=workers.max_attempts, unit_timeout=workers.unit_timeout
        )
    return cluster.ray_init_s, timing


def _deliver(run_dir: Path, report: Report, output_uri: str, settings: SourceSettings) -> Report:
    """Deliver to OUTPUT_URI; a failure is recorded in the report (and the local report.json), never lost."""
    try:
        deliver(run_dir, report, output_uri, settings)
    except (OutputError, UsageError) as exc:
        logger.error("%s", exc)
        report = report.model_copy(update={"output": OutputStatus(uri=output_uri, error=str(exc))})
        write_report(run_dir, report)
    return report


def source_settings(data_dir: Path, wandb: WandbAccount) -> SourceSettings:
    key = wandb.wandb_api_key.get_secret_value() if wandb.wandb_api_key else None
    return SourceSettings(
        data_dir=data_dir,
        wandb_entity=wandb.wandb_entity,
        wandb_project=wandb.wandb_project,
        wandb_api_key=key,
    )


def load_suite(play: Play, *, trust_remote_code: bool = False) -> Suite:
    """The suite as the run's first round plays it (adaptive runs start at `min_episodes`: their planner's
    first round). A game file's Python runs only with `trust_remote_code`."""
    suite = get_suite(play.suite, trust_remote_code=trust_remote_code).select(play.env).with_episodes(play.episodes)
    suite = suite if play.seed is None else suite.model_copy(update={"seed": play.seed})
    planner = AdaptivePlanner.of(play)
    return suite if planner is None else planner.first_round(suite)
