"""Report assembly, next to the report models: per-episode results -> `CheckpointMetrics` -> `Report`."""

from __future__ import annotations

from collections.abc import Sequence

from actors.protocol import WorkerStats
from evaluator import __version__
from evaluator.report import (
    CheckpointMetrics,
    CheckpointReport,
    EnvironmentMetrics,
    PolicyReport,
    Report,
    Timing,
    WorkerReport,
)
from sim.metrics import EpisodeResult, summarize
from sim.suites import Suite


def checkpoint_metrics(suite: Suite, results: Sequence[EpisodeResult]) -> CheckpointMetrics:
    """Reduce one checkpoint's episodes; environments keep the suite's order."""
    environments: dict[str, EnvironmentMetrics] = {}
    order = {env.name: i for i, env in enumerate(suite.envs)}
    for env in suite.envs:
        episodes = sorted((r for r in results if r.env == env.name), key=lambda r: r.episode)
        summary = summarize(episodes)
        environments[env.name] = EnvironmentMetrics(
            episodes=summary.episodes,
            score=summary.score,
            std=summary.std,
            ci95=(summary.ci95_low, summary.ci95_high),
            success_rate=summary.success_rate,
            mean_steps=summary.mean_steps,
            agent_steps=sum(r.agent_steps for r in episodes),
        )
    env_scores = [m.score for m in environments.values()]
    return CheckpointMetrics(
        suite_scores={f"{suite.name}/score": sum(env_scores) / len(env_scores)},
        simulation_scores={f"{suite.name}/{name}/score": m.score for name, m in environments.items()},
        # In suite and episode order: a float sum must not depend on the order episodes arrived in.
        reward_avg=sum(r.reward_mean for r in sorted(results, key=lambda r: (order[r.env], r.episode))) / len(results),
        environments=environments,
    )


def build_report(
    checkpoints: Sequence[tuple[str, CheckpointReport]],
    suite: Suite,
    policy_uris: Sequence[str],
    run_name: str,
    timing: Timing,
    stats: Sequence[WorkerStats],
) -> Report:
    """Every checkpoint (`(policy URI, its report)`, in the run's order) under its policy URI."""
    policies: dict[str, list[CheckpointReport]] = {uri: [] for uri in policy_uris}
    for policy_uri, checkpoint in checkpoints:
        policies[policy_uri].append(checkpoint)
    return Report(
        simulation_suite=suite.name,
        run_name=run_name,
        evaluator_version=__version__,
        seed=suite.seed,
        policies=[PolicyReport(policy_uri=uri, checkpoints=cps) for uri, cps in policies.items()],
        timing=timing,
        workers=[worker_report(s) for s in stats],
    )


def worker_report(stats: WorkerStats) -> WorkerReport:
    return WorkerReport(
        worker=stats.worker,
        device=stats.device,
        node_id=stats.node_id,
        gpu_ids=list(stats.gpu_ids),
        policy_loads=stats.loads,
        cache_hits=stats.hits,
        loaded_checkpoints=list(stats.loaded_checkpoints),
        cached_policies=stats.cached_policies,
        peak_rss_mb=stats.peak_rss_mb,
    )
