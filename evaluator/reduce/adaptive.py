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

from evaluator.config import Play
from evaluator.reduce import statistics
from evaluator.reduce.assembly import episode_scores
from evaluator.reduce.report import AdaptiveEpisodes
from sim.metrics import EpisodeResult
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


class AdaptivePlanner:
    """Adaptive episodes in one place: the rule, the first round every checkpoint plays, and each next round
    decided from a checkpoint's episodes so far. The unit stream plans the units of the suite it returns."""

    def __init__(self, rule: AdaptiveRule) -> None:
        self.rule = rule

    @classmethod
    def of(cls, play: Play) -> AdaptivePlanner | None:
        """The run's planner, or None when its episodes are fixed (no `--target-ci`)."""
        if play.target_ci is None:
            return None
        return cls(
            AdaptiveRule(target_ci=play.target_ci, min_episodes=play.min_episodes, max_episodes=play.max_episodes)
        )

    def first_round(self, suite: Suite) -> Suite:
        """Every environment at `min_episodes`."""
        return suite.with_episodes(self.rule.min_episodes)

    def next_round(self, suite: Suite, kept: Sequence[EpisodeResult]) -> Suite | None:
        """`suite` grown to the episodes each environment needs after `kept` (a checkpoint's episodes so far), or
        None when every environment has enough: the checkpoint is done."""
        counts = self.rule.next_counts(suite, episode_scores(suite, kept))
        if sum(counts) == len(kept):
            return None
        envs = tuple(env.model_copy(update={"episodes": n}) for env, n in zip(suite.envs, counts, strict=True))
        return suite.model_copy(update={"envs": envs})
