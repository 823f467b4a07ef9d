"""The statistics hold: intervals cover the truth as often as they claim (by simulation on known, skewed,
discrete distributions), the IQM is scipy's, pairing narrows comparisons, and everything is seeded."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evaluator.reduce.statistics import (
    iqm,
    mean_interval,
    mean_of_means,
    paired_difference,
    paired_suite_difference,
    probability_of_improvement,
    rng_for,
    stratified_interval,
    wilson_interval,
)

TRIALS = 1000
REWARDS = np.array([0.0, 1.0, 3.0])
PROBABILITIES = np.array([0.6, 0.3, 0.1])
"""A skewed, discrete episode reward (most episodes collect nothing), mean 0.6."""
TRUE_MEAN = float(REWARDS @ PROBABILITIES)


def covered(interval: tuple[float, float] | None, truth: float) -> bool:
    assert interval is not None
    return interval[0] <= truth <= interval[1]


def test_the_bootstrap_interval_of_a_mean_covers_the_truth_95_percent_of_the_time():
    draws = np.random.default_rng(0)
    hits = sum(
        covered(mean_interval(draws.choice(REWARDS, 40, p=PROBABILITIES), rng_for("coverage", t)), TRUE_MEAN)
        for t in range(TRIALS)
    )
    assert 0.93 <= hits / TRIALS <= 0.97, hits / TRIALS


def test_the_wilson_interval_covers_a_success_rate_95_percent_of_the_time():
    draws = np.random.default_rng(1)
    hits = sum(covered(wilson_interval(int(draws.binomial(30, 0.2)), 30), 0.2) for _ in range(TRIALS))
    assert 0.93 <= hits / TRIALS <= 0.97, hits / TRIALS


def test_the_stratified_suite_interval_covers_the_suite_score_95_percent_of_the_time():
    """Two environments with different distributions and episode counts: the suite score is the mean of
    their means."""
    draws = np.random.default_rng(2)
    truth = (TRUE_MEAN + 0.5) / 2
    hits = 0
    for trial in range(TRIALS):
        samples = [draws.choice(REWARDS, 40, p=PROBABILITIES), draws.binomial(1, 0.5, 30).astype(float)]
        hits += covered(stratified_interval(samples, mean_of_means, rng_for("suite", trial)), truth)
    assert 0.93 <= hits / TRIALS <= 0.97, hits / TRIALS


def test_the_iqm_is_scipys_trimmed_mean_of_every_episode():
    samples = [np.array([0.0, 1, 2, 9]), np.array([3.0, 3, 4, 5, 100, -50])]
    assert iqm(samples) == pytest.approx(stats.trim_mean(np.concatenate(samples), 0.25))


def test_intervals_are_seeded_and_need_two_episodes():
    values = np.array([0.0, 1, 1, 3, 0, 0, 1])
    assert mean_interval(values, rng_for("a")) == mean_interval(values, rng_for("a"))
    assert mean_interval(np.array([2.0]), rng_for("a")) is None and wilson_interval(1, 1) is None
    assert mean_interval(np.array([2.0, 2.0]), rng_for("a")) == (2.0, 2.0)


def test_pairing_narrows_the_interval_of_a_difference_and_gives_a_verdict():
    """Episodes of equal seed share most of their outcome (the map, the spawn): a paired bootstrap removes it."""
    draws = np.random.default_rng(3)
    shared = draws.choice(REWARDS, 60, p=PROBABILITIES)
    mine, theirs = shared + draws.binomial(1, 0.5, 60), shared + draws.binomial(1, 0.3, 60)
    paired = paired_difference(mine, theirs, rng_for("p"))
    independent = [  # the same difference with the two checkpoints' episodes resampled independently
        np.mean(mine[draws.integers(0, 60, 60)]) - np.mean(theirs[draws.integers(0, 60, 60)]) for _ in range(2000)
    ]
    width_unpaired = np.subtract(*np.percentile(independent, [97.5, 2.5]))
    assert paired.ci95 is not None and paired.ci95[1] - paired.ci95[0] < 0.8 * width_unpaired
    assert paired.verdict == "better" and paired.probability_of_improvement > 0.5
    suite = paired_suite_difference([mine, mine], [theirs, theirs], rng_for("s"))
    assert suite.difference == pytest.approx(paired.difference) and suite.verdict == "better"
    assert paired_difference(theirs, theirs, rng_for("x")).verdict == "no difference"
    assert probability_of_improvement(mine, mine) == 0.5


def test_a_run_reports_intervals_and_paired_verdicts_narrower_than_unpaired(tmp_path):
    """Two example checkpoints on the navigation suite (8 episodes per environment), in process: every
    interval is in report.json, each checkpoint is compared with the previous one, the best and the baseline,
    and the paired interval of the difference is narrower than the one resampling the two checkpoints'
    episodes independently (the seed fixes the map and the spawn, which both checkpoints then share)."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from evaluator.cli.summary import summary_tables
    from evaluator.config import EvalConfig, Execution
    from evaluator.run.driver import evaluate

    examples = Path(__file__).parents[1] / "examples" / "policies" / "navigator_bc"
    config = EvalConfig(
        policy_uris=(str(examples / "ckpt_0003"), str(examples / "ckpt_0004")),
        suite="navigation",
        episodes=8,
        execution=Execution.IN_PROCESS,
        replays=False,
        data_dir=tmp_path,
        run_name="paired",
        baseline="builtin://random",
    )
    outcome = evaluate(config)
    first, last, baseline = (p.checkpoints[0] for p in outcome.report.policies)
    assert first.metrics.suite_ci95 and first.metrics.iqm_ci95
    assert all(e.ci95 and e.success_ci95 for e in first.metrics.environments.values())
    assert [c.against for c in first.comparisons] == ["best", "baseline"]  # first of its policy: no previous
    versus = {c.against: c for c in last.comparisons}["baseline"]  # each URI is its own policy: no previous
    assert (versus.name, versus.digest) == (baseline.name, baseline.digest)
    assert set(versus.environments) == set(last.metrics.environments)
    scores = [c.metrics.suite_scores["navigation/score"] for c in (last, baseline)]
    assert versus.difference == pytest.approx(scores[0] - scores[1]) and versus.verdict == "better"
    assert all(c.name != last.name for c in last.comparisons), "never compared with itself"
    assert [c.against for c in baseline.comparisons] == ["best"]  # the baseline is not compared with itself

    rows = pq.read_table(tmp_path / "paired" / "episodes.parquet").to_pylist()

    def scores(policy: str, env: str) -> np.ndarray:
        mine = sorted((r["episode"], r["reward_mean"]) for r in rows if r["policy_uri"] == policy and r["env"] == env)
        return np.array([score for _, score in mine])

    envs = list(first.metrics.environments)
    mine = [scores(config.policy_uris[1], env) for env in envs]
    theirs = [scores(config.policy_uris[0], env) for env in envs]
    paired = paired_suite_difference(mine, theirs, rng_for("t"))
    draws, pairs = np.random.default_rng(4), list(zip(mine, theirs, strict=True))
    independent = [
        np.mean([m[draws.integers(0, 8, 8)].mean() - t[draws.integers(0, 8, 8)].mean() for m, t in pairs])
        for _ in range(2000)
    ]
    assert paired.ci95 is not None
    assert paired.ci95[1] - paired.ci95[0] < np.subtract(*np.percentile(independent, [97.5, 2.5]))
    tables = summary_tables(outcome.report)
    assert "vs previous (95% CI)" in [column.header for column in tables[0].columns]


def test_normalized_scores_map_low_to_0_and_high_to_1(tmp_path):
    from pathlib import Path

    from evaluator.config import EvalConfig, Execution
    from evaluator.run.driver import evaluate

    checkpoint = str(Path(__file__).parents[1] / "examples" / "policies" / "navigator_bc" / "ckpt_0002")
    config = EvalConfig(
        policy_uris=(checkpoint,),
        normalize="builtin://random,builtin://navigator",
        suite="smoke",
        episodes=6,
        execution=Execution.IN_PROCESS,
        replays=False,
        data_dir=tmp_path,
    )
    assert config.policy_uris == (checkpoint, "builtin://random", "builtin://navigator")
    mine, low, high = (p.checkpoints[0].metrics for p in evaluate(config).report.policies)
    assert low.normalized.score == pytest.approx(0.0) and high.normalized.score == pytest.approx(1.0)
    for env, score in mine.normalized.environments.items():
        raw = [m.environments[env].score for m in (mine, low, high)]
        assert score == pytest.approx((raw[0] - raw[1]) / (raw[2] - raw[1]))
    assert mine.normalized.score == pytest.approx(np.mean(list(mine.normalized.environments.values())))
    with pytest.raises(ValueError, match="LOW,HIGH"):
        EvalConfig(policy_uris=(checkpoint,), normalize="builtin://random")


def test_each_checkpoint_is_compared_with_its_policys_previous_the_best_and_the_baseline():
    from evaluator.reduce.comparisons import RunScores
    from evaluator.reduce.report import CheckpointReport
    from sim.suites import get_suite

    suite = get_suite("smoke").with_episodes(4)
    policies = ["run", "run", "run", "base"]
    scores = RunScores(suite, lambda i: policies[i], baseline="base")
    for index, level in enumerate([0.0, 2.0, 1.0, 0.5]):
        per_env = [np.array([level, level + 1, level, level + 1]) for _ in suite.envs]
        scores.record(index, per_env, level + 0.5)

    def identity(i: int) -> CheckpointReport:
        return CheckpointReport(name=f"c{i}", uri=f"file:///c{i}", version=f"v{i}", digest=f"sha256:{i}")

    against = {c.against: (c.name, c.verdict) for c in scores.comparisons(2, previous=1, identity=identity)}
    assert against == {"previous": ("c1", "worse"), "best": ("c1", "worse"), "baseline": ("c3", "better")}
    assert [c.against for c in scores.comparisons(1, previous=0, identity=identity)] == ["previous", "baseline"]
    assert [c.against for c in scores.comparisons(3, previous=None, identity=identity)] == ["best"]
