"""Report assembly, next to the report models: per-episode results -> `CheckpointMetrics` -> `Report`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict

import numpy as np

from actors.protocol import WorkerStats
from evaluator import __version__
from evaluator.reduce import statistics
from evaluator.reduce.ratings import Game, cross_play, rate
from evaluator.reduce.report import (
    AdaptiveEpisodes,
    CheckpointMetrics,
    CheckpointReport,
    Comparison,
    CostReport,
    CrossPlayCell,
    EnvironmentDifference,
    EnvironmentMetrics,
    Lineup,
    LineupPlayer,
    PolicyRating,
    PolicyReport,
    Report,
    Timing,
    WorkerReport,
)
from evaluator.reduce.vor import vor_metrics
from evaluator.secrets import redact_url
from sim.envs import EnvSpec
from sim.metrics import EpisodeResult, summarize
from sim.suites import Suite


def episode_scores(suite: Suite, results: Sequence[EpisodeResult]) -> list[np.ndarray]:
    """Per environment (suite order), each episode's score (mean reward of the candidate's agents: every agent
    unless a line-up seats co-players) in episode order: what the statistics and the paired comparisons take (a
    checkpoint's whole evaluation in a few KB)."""
    by_env: dict[str, list[EpisodeResult]] = {env.name: [] for env in suite.envs}
    for result in results:
        by_env[result.env].append(result)
    return [np.array([r.score for r in sorted(by_env[env.name], key=lambda r: r.episode)]) for env in suite.envs]


CO_PLAYER = "co-player"
"""The version a co-player is listed under among the rated players (it is not one of the run's checkpoints)."""


def lineup_of(env: EnvSpec) -> Lineup:
    """The report's line-up of a mixed env: who plays beside the candidate, with how many agents each."""
    counts = env.seat_counts
    return Lineup(
        candidate_agents=counts[0],
        candidate_share=env.candidate_share,
        npcs=[
            LineupPlayer(uri=redact_url(npc.uri), digest=npc.digest, proportion=npc.proportion, agents=count)
            for npc, count in zip(env.npcs, counts[1:], strict=True)
        ],
    )


def checkpoint_metrics(suite: Suite, results: Sequence[EpisodeResult]) -> CheckpointMetrics:
    """Reduce one checkpoint's episodes; environments keep the suite's order. Intervals per
    `evaluator.reduce.statistics`, seeded by suite and environment: the same episodes give the same report."""
    environments: dict[str, EnvironmentMetrics] = {}
    order = {env.name: i for i, env in enumerate(suite.envs)}
    scores = episode_scores(suite, results)
    for env, env_scores in zip(suite.envs, scores, strict=True):
        episodes = sorted((r for r in results if r.env == env.name), key=lambda r: r.episode)
        summary = summarize(episodes)
        successes = sum(r.success for r in episodes)
        environments[env.name] = EnvironmentMetrics(
            episodes=summary.episodes,
            score=summary.score,
            std=summary.std,
            ci95=statistics.mean_interval(env_scores, statistics.rng_for(suite.seed, env.name)),
            success_rate=summary.success_rate,
            success_ci95=statistics.wilson_interval(successes, len(episodes)),
            mean_steps=summary.mean_steps,
            agent_steps=sum(r.agent_steps for r in episodes),
            lineup=lineup_of(env) if env.mixed else None,
            npc_score=float(np.mean([r.npc_score for r in episodes])) if env.mixed else None,
            all_score=float(np.mean([r.reward_mean for r in episodes])) if env.mixed else None,
        )
    # The suite score, its intervals and reward_avg are over the suite's own environments, not line-up variants.
    scored = {env.name for env in suite.scored().envs}
    scores = [env_scores for env, env_scores in zip(suite.envs, scores, strict=True) if env.name in scored]
    env_scores = [m.score for name, m in environments.items() if name in scored]
    counted = sorted((r for r in results if r.env in scored), key=lambda r: (order[r.env], r.episode))
    vor, env_vor = vor_metrics(suite, results)
    for name, found in env_vor.items():
        environments[name] = environments[name].model_copy(update={"vor": found})
    return CheckpointMetrics(
        vor=vor,
        suite_scores={f"{suite.name}/score": sum(env_scores) / len(env_scores)},
        simulation_scores={f"{suite.name}/{name}/score": m.score for name, m in environments.items()},
        # In suite and episode order: a float sum must not depend on the order episodes arrived in.
        reward_avg=sum(r.score for r in counted) / len(counted),
        suite_ci95=statistics.stratified_interval(
            scores, statistics.mean_of_means, statistics.rng_for(suite.seed, "suite")
        ),
        iqm=float(statistics.iqm(scores)),
        iqm_ci95=statistics.stratified_interval(scores, statistics.iqm, statistics.rng_for(suite.seed, "iqm")),
        environments=environments,
    )


def compare(
    against: str,
    mine: Sequence[np.ndarray],
    other: CheckpointReport,
    theirs: Sequence[np.ndarray],
    suite: Suite,
    names: Sequence[str] | None = None,
) -> Comparison:
    """`mine` against `other` (whose episode scores are `theirs`), paired episode by episode; `names` are the
    environments the scores are of (default: the suite's)."""
    rng = statistics.rng_for(suite.seed, "compare", against, other.digest)
    total = statistics.paired_suite_difference(mine, theirs, rng)
    names = [env.name for env in suite.envs] if names is None else names
    environments = {
        name: EnvironmentDifference(**asdict(statistics.paired_difference(a, b, rng)))
        for name, a, b in zip(names, mine, theirs, strict=True)
    }
    return Comparison(
        against=against,
        name=other.name,
        version=other.version,
        digest=other.digest,
        difference=total.difference,
        ci95=total.ci95,
        probability_of_improvement=total.probability_of_improvement,
        verdict=total.verdict,
        environments=environments,
    )


def build_report(
    checkpoints: Sequence[tuple[str, CheckpointReport]],
    suite: Suite,
    policy_uris: Sequence[str],
    run_name: str,
    timing: Timing,
    stats: Sequence[WorkerStats],
    adaptive: AdaptiveEpisodes | None = None,
    *,
    cost: CostReport | None = None,
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
        adaptive=adaptive,
        cost=cost,
    )


def worker_report(stats: WorkerStats) -> WorkerReport:
    """The report's entry of a worker: its counters as the actor reported them, field for field."""
    return WorkerReport(**asdict(stats))


def ratings_and_cross_play(
    games: Sequence[Game], players: Mapping[str, tuple[str, str, str]], by: str = "openskill"
) -> tuple[list[PolicyRating], list[CrossPlayCell]]:
    """The report's ratings (best first by `by`: "openskill" or "elo") and cross-play matrix from the run's games;
    `players`: digest -> (policy URI, name, version) of every checkpoint and co-player that may have played."""
    ratings = [
        PolicyRating(
            policy_uri=players[r.player][0],
            name=players[r.player][1],
            version=players[r.player][2],
            digest=r.player,
            mu=r.mu,
            sigma=r.sigma,
            ordinal=r.ordinal,
            elo=r.elo,
            games=r.games,
        )
        for r in rate(games, by)
    ]

    def label(digest: str) -> str:
        uri, name, version = players[digest]
        return uri if version == CO_PLAYER else f"{name}:{version}"

    cells = [
        CrossPlayCell(
            policy=label(m.a),
            against=label(m.b),
            games=m.games,
            mean_reward=m.mean_reward,
            win_rate=m.win_rate,
            loss_rate=m.loss_rate,
            tie_rate=m.tie_rate,
        )
        for m in cross_play(games)
    ]
    return ratings, cells
