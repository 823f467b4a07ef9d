"""Adaptive episodes (`--target-ci`): how many episodes each environment of a checkpoint needs, decided in
rounds from the episodes played so far.

The rule: every environment starts at `min_episodes`; after each round, an environment whose score's 95%
interval (the report's own BCa bootstrap, `evaluator.reduce.statistics`) is wider than `target_ci` on either side
doubles its episodes, up to `max_episodes`. Doubling keeps the rounds few (log2(max/min)) and every round
big enough to batch. Episode i keeps its seed whatever the round, so results are reusable from the results
database and identical for any number of workers: the decision depends only on this checkpoint's episodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluator.reduce import statistics
from evaluator.reduce.report import AdaptiveEpisodes
from sim.suites import Suite


class AdaptiveRule(AdaptiveEpisodes):
    """The stopping rule (as the report states it), applied."""

    def half_width(self, suite: Suite, env: str, scores: np.ndarray) -> float:
        interval = statistics.mean_interval(scores, statistics.rng_for(suite.seed, env))
        return float("inf") if interval is None else (interval[1] - interval[0]) / 2

    def next_counts(self, suite: Suite, scores: Sequence[np.ndarray]) -> list[int]:
        """Episodes each environment (suite order) should have after the next round; equal to the counts it
        has when the checkpoint is done."""
        counts = []
        for env, env_scores in zip(suite.envs, scores, strict=True):
            played = len(env_scores)
            wide = played < self.max_episodes and self.half_width(suite, env.name, env_scores) > self.target_ci
            counts.append(min(self.max_episodes, 2 * played) if wide else played)
        return counts
