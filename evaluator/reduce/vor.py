"""Value over replacement (VOR), as cogames' `pickup` defines it (`metta_alo.scoring`), from the episodes of
`evaluator.run.lineup.vor_suite`'s scenarios.

For one environment of n agents the candidate plays K of them beside the pool for each K of `sim.lineup.vor_seats`
(n, n/2, 1), and the pool plays alone (K = 0); every scenario plays the environment's episode seeds. VOR is the
candidate-agent-weighted mean reward over the K > 0 scenarios minus the pool-only per-agent mean reward. Each seed
gives one paired difference (the candidate's weighted mean over that seed's scenarios minus the pool's mean on the
same seed); since every seed weighs the same agents, their mean is exactly VOR, and its 95% interval is the BCa
bootstrap of that mean (paired by seed). The suite's VOR is the mean over its environments, with the stratified
paired interval. Verdict: better or worse than the pool when the interval excludes 0, else no difference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from evaluator.reduce import statistics
from evaluator.reduce.report import Vor
from sim.lineup import vor_seats, vor_variant
from sim.metrics import EpisodeResult
from sim.suites import Suite


def vor_metrics(suite: Suite, results: Sequence[EpisodeResult]) -> tuple[Vor | None, dict[str, Vor]]:
    """(the suite's VOR, each environment's) of one checkpoint; (None, {}) when the suite has no VOR scenarios."""
    by_env: dict[str, dict[int, EpisodeResult]] = defaultdict(dict)
    for result in results:
        by_env[result.env][result.episode] = result
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    described: dict[str, tuple[list[str], list[int]]] = {}
    for env in suite.envs:
        seats = vor_seats(env.num_agents)
        variants = {k: vor_variant(env.name, k) for k in seats if k < env.num_agents}
        scenario = {k: suite_env for k in variants for suite_env in suite.envs if suite_env.name == variants[k]}
        if env.variant_of is not None or len(scenario) != len(variants):
            continue
        # K = n: the environment itself, or its own variant where --npc made the environment mixed.
        alone = vor_variant(env.name, env.num_agents)
        names = {env.num_agents: alone if any(e.name == alone for e in suite.envs) else env.name, **variants}
        episodes = sorted(set.intersection(*(set(by_env[name]) for name in names.values())))
        if not episodes:
            continue
        candidate, pool = [], []
        for episode in episodes:
            played = [by_env[names[k]][episode] for k in seats if k > 0]
            own = [reward for result in played for reward in result.rewards_of(0)]
            candidate.append(sum(own) / len(own))
            pool.append(by_env[names[0]][episode].reward_mean)
        pairs[env.name] = (np.array(candidate), np.array(pool))
        described[env.name] = ([npc.uri for npc in scenario[0].npcs], list(seats))
    if not pairs:
        return None, {}
    environments = {}
    for name, (candidate, pool) in pairs.items():
        difference = statistics.paired_difference(candidate, pool, statistics.rng_for(suite.seed, name, "vor"))
        environments[name] = _vor(difference, *described[name])
    total = statistics.paired_suite_difference(
        [c for c, _ in pairs.values()], [p for _, p in pairs.values()], statistics.rng_for(suite.seed, "vor")
    )
    first = next(iter(described.values()))
    return _vor(
        total, first[0], sorted({k for _, seats in described.values() for k in seats}, reverse=True)
    ), environments


def _vor(difference: statistics.Difference, pool: list[str], seats: list[int]) -> Vor:
    return Vor(value=difference.difference, ci95=difference.ci95, verdict=difference.verdict, pool=pool, seats=seats)
