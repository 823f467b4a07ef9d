"""The navigation suite measures navigation: the scripted navigator must beat random by a wide margin."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sim.envs import AsciiMap, episode_seed
from sim.metrics import summarize
from sim.policies import load_policy
from sim.runner import EpisodeJob, run_episodes
from sim.suites import Suite, get_suite

NAVIGATION = get_suite("navigation")
EXAMPLE_SUITE = Path(__file__).parents[1] / "examples" / "suites" / "metta_navigation.yaml"
EXAMPLE_POLICIES = Path(__file__).parents[1] / "examples" / "policies"


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


def example_suite_score(uri: str, data: bytes) -> float:
    """Mean over the navigation suite's environments of 8 episodes each."""
    jobs = [EpisodeJob(env, i, episode_seed(NAVIGATION.seed, env.name, i)) for env in NAVIGATION.envs for i in range(8)]
    results = run_episodes(load_policy(uri, data), jobs)
    return sum(summarize([r for r in results if r.env == e.name]).score for e in NAVIGATION.envs) / len(NAVIGATION.envs)


@pytest.mark.slow
@pytest.mark.parametrize("run", ["navigator_bc", "navigator_lstm"])
def test_example_checkpoints_improve_and_beat_random(run: str):
    """The committed example runs are the demo's proof: later checkpoints score higher, the last beats random.
    `navigator_bc` is the MLP, `navigator_lstm` the recurrent TokenGridLSTM in Metta's `<run>:v<epoch>` layout."""
    from evaluator.sources import resolve

    first, *_, last = resolve(str(EXAMPLE_POLICIES / run), "all")
    random, weak, strong = (example_suite_score(c.uri, c.data) for c in (resolve("builtin://random")[0], first, last))
    assert strong > weak > random
    assert strong > 4 * random


@pytest.mark.slow
def test_lstm_example_reports_do_not_depend_on_lockstep_width():
    """One loaded recurrent policy, episodes one at a time (width 1: every episode reuses slot 0, so its state
    rows must be zeroed at each start), a few at a time (3: reuse and batching) and all at once (64): the
    same episodes, reward for reward and stat for stat."""
    from evaluator.sources import resolve

    [checkpoint] = resolve(str(EXAMPLE_POLICIES / "navigator_lstm"), "latest")
    policy = load_policy(checkpoint.uri, checkpoint.data)
    envs = [env for env in NAVIGATION.envs if env.name in ("corridors", "memory", "walls_4agents")]
    jobs = [EpisodeJob(env, i, episode_seed(NAVIGATION.seed, env.name, i)) for env in envs for i in range(5)]

    def played(width: int) -> list:
        return [dataclasses.replace(r, wall_s=0.0) for r in run_episodes(policy, jobs, lockstep_envs=width)]

    wide = played(64)
    assert policy.recurrent
    assert any(result.reward_mean > 0 for result in wide)
    assert played(1) == wide
    assert played(3) == wide


def test_example_bundles_are_small():
    """Example checkpoints ship as bundles (policy_spec.json + weights.safetensors) and live in the repository."""
    bundles = [path for run in ("navigator_bc", "navigator_lstm") for path in (EXAMPLE_POLICIES / run).iterdir()]
    assert len(bundles) >= 7
    for bundle in bundles:
        assert sorted(p.name for p in bundle.iterdir()) == ["policy_spec.json", "weights.safetensors"], bundle
        assert sum(p.stat().st_size for p in bundle.iterdir()) < 1_000_000, bundle
