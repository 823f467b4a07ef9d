"""A run's checkpoints against each other: paired comparisons with the previous checkpoint of the same policy,
the run's best and the `--baseline`, and scores normalised between two reference policies (`--normalize`).

Both need every checkpoint's episode scores at the end of the run; they are kept here as one small array per
checkpoint and environment (its episodes' scores: 444 floats for navigation), not as episodes.
A reference policy (baseline, LOW, HIGH) stands for its last checkpoint that was evaluated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from evaluator.reduce import statistics
from evaluator.reduce.assembly import compare
from evaluator.reduce.report import CheckpointReport, Comparison, NormalizedScores
from sim.suites import Suite


@dataclass
class RunScores:
    suite: Suite
    policy_of: Callable[[int], str]
    """The policy URI of the checkpoint at an index of the run."""
    baseline: str | None = None
    normalize: tuple[str, str] | None = None
    """(LOW, HIGH) policy URIs: each environment's score maps to 0 at LOW's and 1 at HIGH's."""
    scores: dict[int, list[np.ndarray]] = field(default_factory=dict)
    """Per checkpoint, per environment (suite order), its episodes' scores in episode order."""
    suite_scores: dict[int, float] = field(default_factory=dict)

    def record(self, index: int, per_env: Sequence[np.ndarray], suite_score: float) -> None:
        self.scores[index] = list(per_env)
        self.suite_scores[index] = suite_score

    def per_env(self, index: int) -> list[np.ndarray]:
        return self.scores[index]

    def comparisons(
        self, index: int, previous: int | None, identity: Callable[[int], CheckpointReport]
    ) -> list[Comparison]:
        """Against the previous checkpoint, the best and the baseline (each once, never against itself); on
        normalised scores when `--normalize` is given, so the suite's environments weigh as in its score."""
        if index not in self.scores:
            return []
        others = {"previous": previous, "best": self._best, "baseline": self._baseline}
        kept = self._normalizer[2] if self._normalizer else [True] * len(self.suite.envs)
        names = [env.name for env, keep in zip(self.suite.envs, kept, strict=True) if keep]

        def scores(i: int) -> list[np.ndarray]:
            per_env = self._normalized_scores(i) if self._normalizer else self.per_env(i)
            return [s for s, keep in zip(per_env, kept, strict=True) if keep]

        return [
            compare(against, scores(index), identity(other), scores(other), self.suite, names)
            for against, other in others.items()
            if other is not None and other != index and names
        ]

    def normalized(self, index: int) -> NormalizedScores | None:
        if self._normalizer is None or index not in self.scores:
            return None
        kept = self._normalizer[2]
        per_env = self._normalized_scores(index)
        scored = [scores for scores, keep in zip(per_env, kept, strict=True) if keep]
        names = [env.name for env, keep in zip(self.suite.envs, kept, strict=True) if keep]
        if not scored:
            return None
        return NormalizedScores(
            low=self.normalize[0],
            high=self.normalize[1],
            score=float(statistics.mean_of_means(scored)),
            ci95=statistics.stratified_interval(
                scored, statistics.mean_of_means, statistics.rng_for(self.suite.seed, "normalized")
            ),
            iqm=float(statistics.iqm(scored)),
            iqm_ci95=statistics.stratified_interval(
                scored, statistics.iqm, statistics.rng_for(self.suite.seed, "normalized iqm")
            ),
            environments={name: float(scores.mean()) for name, scores in zip(names, scored, strict=True)},
            excluded=[env.name for env, keep in zip(self.suite.envs, kept, strict=True) if not keep],
        )

    @functools.cached_property
    def _best(self) -> int | None:
        """The run's best checkpoint by suite score (the first of equals). Asked once every score is in, and
        once only (like the baseline): a report of 10,000 checkpoints must not search 10,000 times."""
        return max(self.suite_scores, key=lambda i: (self.suite_scores[i], -i), default=None)

    @functools.cached_property
    def _baseline(self) -> int | None:
        return self._reference(self.baseline)

    def _reference(self, policy_uri: str | None) -> int | None:
        found = [i for i in sorted(self.scores) if self.policy_of(i) == policy_uri] if policy_uri else []
        return found[-1] if found else None

    @functools.cached_property
    def _normalizer(self) -> tuple[np.ndarray, np.ndarray, list[bool]] | None:
        """Per environment LOW's and HIGH's scores, and whether it can be normalised (they differ)."""
        if self.normalize is None:
            return None
        low, high = (self._reference(uri) for uri in self.normalize)
        if low is None or high is None:
            return None
        lows = np.array([s.mean() for s in self.per_env(low)])
        highs = np.array([s.mean() for s in self.per_env(high)])
        return lows, highs, list(highs != lows)

    def _normalized_scores(self, index: int) -> list[np.ndarray]:
        assert self._normalizer is not None
        lows, highs, kept = self._normalizer
        span = np.where(kept, highs - lows, 1.0)
        return [(scores - low) / width for scores, low, width in zip(self.per_env(index), lows, span, strict=True)]
