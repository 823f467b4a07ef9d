"""The statistics of an evaluation: intervals that hold for episode rewards (few, discrete, skewed), and
paired comparisons of checkpoints. Pure numpy/scipy, seeded: the same episodes always give the same figures.

The methods are those of Agarwal et al. 2021 ("Deep RL at the Edge of the Statistical Precipice", the
`rliable` library, which is archived and heavy, so its few lines are here on scipy):
- an environment's mean: BCa bootstrap (`scipy.stats.bootstrap`), which corrects the percentile interval for
  the bias and skew of such samples; the percentile interval where BCa is undefined (a degenerate resample);
- a success rate: the Wilson score interval (`scipy.stats.binomtest`), right near 0 and 1 where the normal
  approximation is not;
- the suite: the mean of environment scores and the interquartile mean (IQM, `scipy.stats.trim_mean` at 25%)
  of every episode, with a *stratified* bootstrap: episodes are resampled within each environment (each has
  a fixed number of episodes; resampling across them would change the suite's make-up), percentile interval;
- two checkpoints: every checkpoint plays the same episode seeds, so their episodes are pairs (common random
  numbers) and the difference is bootstrapped on the same resampled indices for both, which removes the
  variance the two share; the probability of improvement is P(X > Y) + P(X = Y) / 2 per environment (the
  Mann-Whitney U statistic over all pairs, `scipy.stats.mannwhitneyu`), averaged over environments.
Fewer than 2 episodes give no interval (None), not a zero-width one.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

RESAMPLES = 2000
CONFIDENCE = 0.95
Interval = tuple[float, float]
Samples = Sequence[np.ndarray]
"""Per environment (suite order), the episode values in episode order."""


def rng_for(*parts: object) -> np.random.Generator:
    """A generator seeded from names (suite seed, environment, checkpoints compared): reproducible figures
    that do not depend on what else ran."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def mean_interval(values: np.ndarray, rng: np.random.Generator) -> Interval | None:
    """BCa bootstrap 95% interval of the mean."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return None
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns (and gives nan) on degenerate resamples: we fall back
        for method in ("BCa", "percentile"):
            result = stats.bootstrap(
                (values,),
                np.mean,
                n_resamples=RESAMPLES,
                confidence_level=CONFIDENCE,
                method=method,
                random_state=rng,
                vectorized=True,
            )
            low, high = result.confidence_interval
            if np.isfinite(low) and np.isfinite(high):
                return float(low), float(high)
    raise AssertionError("the percentile interval of a non-degenerate sample is finite")


def wilson_interval(successes: int, trials: int) -> Interval | None:
    if trials < 2:
        return None
    interval = stats.binomtest(successes, trials).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(interval.low), float(interval.high)


def mean_of_means(samples: Samples) -> np.ndarray:
    """The suite score: environments weigh alike whatever their episode counts (works on resampled stacks)."""
    return np.mean([sample.mean(axis=-1) for sample in samples], axis=0)


def iqm(samples: Samples) -> np.ndarray:
    """Interquartile mean of every episode of the suite: robust to a few outlying episodes, and far less
    variable than the median."""
    return stats.trim_mean(np.concatenate(samples, axis=-1), 0.25, axis=-1)


def stratified_interval(
    samples: Samples, statistic: Callable[[Samples], np.ndarray], rng: np.random.Generator
) -> Interval | None:
    """Percentile 95% interval of `statistic` with episodes resampled within each environment."""
    if sum(len(sample) for sample in samples) < 2 or any(len(sample) == 0 for sample in samples):
        return None
    resampled = [np.asarray(s, dtype=np.float64)[rng.integers(0, len(s), (RESAMPLES, len(s)))] for s in samples]
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(statistic(resampled), [tail, 100 - tail])
    return float(low), float(high)


def probability_of_improvement(mine: np.ndarray, theirs: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 for an episode X of mine and Y of theirs (1 = always better)."""
    if np.array_equal(mine, theirs):
        return 0.5
    return float(stats.mannwhitneyu(mine, theirs).statistic / (len(mine) * len(theirs)))


@dataclass(frozen=True)
class Difference:
    """Mine minus theirs, with its paired 95% interval and the probability of improvement."""

    difference: float
    ci95: Interval | None
    probability_of_improvement: float

    @property
    def verdict(self) -> str:
        if self.ci95 is None:
            return "no difference"
        low, high = self.ci95
        return "better" if low > 0 else "worse" if high < 0 else "no difference"


def _common(mine: np.ndarray, theirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The episodes both played (adaptive runs may give checkpoints different counts; episode i has one seed)."""
    length = min(len(mine), len(theirs))
    return np.asarray(mine[:length], dtype=np.float64), np.asarray(theirs[:length], dtype=np.float64)


def paired_difference(mine: np.ndarray, theirs: np.ndarray, rng: np.random.Generator) -> Difference:
    """One environment: the episodes of equal index are pairs (same seed)."""
    mine, theirs = _common(mine, theirs)
    differences = mine - theirs
    return Difference(
        difference=float(differences.mean()),
        ci95=mean_interval(differences, rng),
        probability_of_improvement=probability_of_improvement(mine, theirs),
    )


def paired_suite_difference(mine: Samples, theirs: Samples, rng: np.random.Generator) -> Difference:
    """The suite score's difference (mean of environment differences), stratified paired bootstrap."""
    pairs = [_common(a, b) for a, b in zip(mine, theirs, strict=True)]
    differences = [a - b for a, b in pairs]
    return Difference(
        difference=float(mean_of_means(differences)),
        ci95=stratified_interval(differences, mean_of_means, rng),
        probability_of_improvement=float(np.mean([probability_of_improvement(a, b) for a, b in pairs])),
    )
