"""Adaptive episodes (`--target-ci`): rounds add episodes only where the interval is still wide, never beyond
`--max-episodes`, the same for any number of workers, and reusable from the results database."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluator.config import EvalConfig, Execution
from evaluator.reduce.adaptive import AdaptivePlanner, AdaptiveRule
from evaluator.run.driver import evaluate
from sim.metrics import EpisodeResult
from sim.suites import get_suite

EXAMPLES = Path(__file__).parents[1] / "examples" / "policies" / "navigator_bc"
SMOKE = get_suite("smoke")


def test_the_rule_doubles_only_wide_environments_and_stops_at_the_maximum():
    rule = AdaptiveRule(target_ci=0.2, min_episodes=4, max_episodes=16)
    wide = np.array([0.0, 2.0, 0.0, 2.0, 1.0, 0.0, 2.0, 0.0])
    settled = np.full(8, 1.0)
    assert rule.next_counts(SMOKE, [wide, settled]) == [16, 8]
    assert rule.next_counts(SMOKE, [np.tile(wide, 2), settled]) == [16, 8], "never beyond max_episodes"


def test_the_planner_grows_a_round_from_a_checkpoints_episodes_and_stops_when_none_needs_more():
    planner = AdaptivePlanner.of(EvalConfig(policy_uris=("builtin://random",), target_ci=0.2, max_episodes=16).play)
    assert AdaptivePlanner.of(EvalConfig(policy_uris=("builtin://random",)).play) is None, "fixed episodes"
    first = planner.first_round(SMOKE)
    assert [env.episodes for env in first.envs] == [8, 8]
    wide = [0.0, 2.0, 0.0, 2.0, 1.0, 0.0, 2.0, 0.0]

    def episodes(env: str, rewards: list[float]) -> list[EpisodeResult]:
        agents = next(e.num_agents for e in SMOKE.envs if e.name == env)
        return [EpisodeResult(env, i, i, (r,) * agents, steps=5) for i, r in enumerate(rewards)]

    kept = episodes("tiny_room", wide) + episodes("tiny_random", [1.0] * 8)
    grown = planner.next_round(first, kept)
    assert [env.episodes for env in grown.envs] == [16, 8], "only the wide environment doubles"
    assert planner.next_round(first, episodes("tiny_room", [1.0] * 8) + episodes("tiny_random", [1.0] * 8)) is None


def config(tmp_path: Path, **overrides) -> EvalConfig:
    base = dict(
        policy_uris=(str(EXAMPLES),),
        checkpoints="all",
        suite="smoke",
        target_ci=0.15,
        min_episodes=4,
        max_episodes=32,
        replays=False,
        data_dir=tmp_path / "data",
    )
    return EvalConfig(**(base | overrides))


def episodes_used(report) -> list[dict[str, int]]:
    return [
        {env: m.episodes for env, m in c.metrics.environments.items()} for p in report.policies for c in p.checkpoints
    ]


@pytest.mark.usefixtures("ray_session")
def test_adaptive_runs_are_identical_for_one_and_two_workers_and_bounded(tmp_path: Path):
    reports = {
        workers: evaluate(
            config(tmp_path, execution=Execution.RAY, num_workers=workers, run_name=f"w{workers}",
                   reuse_results=False)
        ).report
        for workers in (1, 2)
    }  # fmt: skip
    one, two = reports[1], reports[2]
    assert [c.metrics for p in one.policies for c in p.checkpoints] == [
        c.metrics for p in two.policies for c in p.checkpoints
    ]
    used = episodes_used(one)
    assert all(4 <= n <= 32 for counts in used for n in counts.values())
    assert len({n for counts in used for n in counts.values()}) > 1, "environments got different episode counts"
    assert one.adaptive is not None and one.adaptive.target_ci == 0.15
    for counts, checkpoint in zip(used, (c for p in one.policies for c in p.checkpoints), strict=True):
        for env, metrics in checkpoint.metrics.environments.items():
            half = (metrics.ci95[1] - metrics.ci95[0]) / 2
            assert half <= 0.15 or counts[env] == 32, (env, counts[env], half)


def test_a_repeated_adaptive_run_plays_nothing_new(tmp_path: Path):
    first = evaluate(config(tmp_path, execution=Execution.IN_PROCESS, run_name="first")).report
    again = evaluate(config(tmp_path, execution=Execution.IN_PROCESS, run_name="again")).report
    assert again.timing.units == 0 and again.timing.episodes_cached == first.timing.episodes
    assert episodes_used(again) == episodes_used(first)
    assert [c.metrics for p in again.policies for c in p.checkpoints] == [
        c.metrics for p in first.policies for c in p.checkpoints
    ]


def test_adaptive_options_are_checked():
    with pytest.raises(ValueError, match="not --episodes"):
        EvalConfig(policy_uris=("builtin://random",), target_ci=0.1, episodes=10)
    with pytest.raises(ValueError, match="above --max-episodes"):
        EvalConfig(policy_uris=("builtin://random",), target_ci=0.1, min_episodes=64, max_episodes=8)
