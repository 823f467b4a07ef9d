"""The navigation suite measures navigation: the scripted navigator must beat random by a wide margin."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.envs import AsciiMap, episode_seed
from sim.metrics import summarize
from sim.policies import load_policy
from sim.runner import EpisodeJob, run_episodes
from sim.suites import Suite, get_suite

NAVIGATION = get_suite("navigation")
EXAMPLE_SUITE = Path(__file__).parents[1] / "examples" / "suites" / "metta_navigation.yaml"


def test_navigation_suite_shape():
    assert len(NAVIGATION.envs) >= 12
    assert all(45 <= env.max_steps <= 1000 for env in NAVIGATION.envs)
    assert any(env.num_agents > 1 for env in NAVIGATION.envs)
    assert any(not isinstance(env.map, AsciiMap) and env.map.width >= 60 for env in NAVIGATION.envs)


def scores(suite: Suite, policy: str, episodes: int) -> dict[str, float]:
    jobs = [
        EpisodeJob(env, i, episode_seed(suite.seed, env.name, i))
        for env in suite.envs
        for i in range(min(episodes, env.episodes))
    ]
    results = run_episodes(load_policy(f"builtin://{policy}", b""), jobs)
    return {env.name: summarize([r for r in results if r.env == env.name]).score for env in suite.envs}


@pytest.mark.slow
@pytest.mark.parametrize("suite_name", ["navigation", str(EXAMPLE_SUITE)])
def test_navigator_far_above_random_on_most_environments(suite_name: str):
    suite = get_suite(suite_name)
    navigator, random = scores(suite, "navigator", 8), scores(suite, "random", 8)
    far_above = [name for name in navigator if navigator[name] > 0 and navigator[name] >= 2 * random[name]]
    assert len(far_above) >= 0.8 * len(suite.envs), (navigator, random)


@pytest.mark.slow
def test_example_checkpoints_improve_and_beat_random():
    """The committed example run is the demo's proof: later checkpoints score higher, the last beats random."""
    from evaluator.sources import resolve

    first, *_, last = resolve(str(Path(__file__).parents[1] / "examples" / "policies" / "navigator_bc"), "all")

    def suite_score(uri: str, data: bytes) -> float:
        jobs = [
            EpisodeJob(env, i, episode_seed(NAVIGATION.seed, env.name, i)) for env in NAVIGATION.envs for i in range(8)
        ]
        results = run_episodes(load_policy(uri, data), jobs)
        return sum(summarize([r for r in results if r.env == e.name]).score for e in NAVIGATION.envs) / len(
            NAVIGATION.envs
        )

    random, weak, strong = (suite_score(c.uri, c.data) for c in (resolve("builtin://random")[0], first, last))
    assert strong > weak > random
    assert strong > 4 * random
