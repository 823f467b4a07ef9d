"""Value over replacement (issue 24): cogames' `pickup` definition, on hand-made episodes and on real ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from evaluator.config import EvalConfig
from evaluator.reduce.vor import vor_metrics
from evaluator.run.driver import evaluate
from evaluator.run.lineup import vor_suite
from evaluator.store.queries import run_detail
from sim.envs import EnvSpec, RandomMap
from sim.errors import UsageError
from sim.lineup import CoPlayer, vor_seats
from sim.metrics import EpisodeResult
from sim.suites import Suite

POOL = (CoPlayer(uri="builtin://noop", digest="sha256:pool"),)
SUITE = """
name: vor4
envs:
  - name: open4
    map: {kind: random, width: 13, height: 13, goals: 5}
    num_agents: 4
    max_steps: 60
    episodes: 6
"""


def test_scenarios_are_n_half_one_and_the_pool_alone():
    assert vor_seats(4) == (4, 2, 1, 0)
    assert vor_seats(2) == (2, 1, 0)
    assert vor_seats(7) == (7, 3, 1, 0)
    env = EnvSpec(name="e", map=RandomMap(width=9, height=9), max_steps=5, num_agents=4)
    suite = vor_suite(Suite(name="s", envs=(env,)), POOL)
    variants = {e.name: (e.seat_counts, e.variant_of, e.seed_name) for e in suite.envs[1:]}
    assert variants == {
        "e.vor.k2": ((2, 2), "e", "e"),
        "e.vor.k1": ((1, 3), "e", "e"),
        "e.vor.k0": ((0, 4), "e", "e"),
    }
    assert suite.scored().envs == (env,)  # the suite score stays the environment's own


def test_vor_is_the_candidate_weighted_mean_minus_the_pool_mean():
    env = EnvSpec(name="e", map=RandomMap(width=9, height=9), max_steps=5, num_agents=4)
    suite = vor_suite(Suite(name="s", envs=(env,)), POOL)
    rng = np.random.default_rng(0)
    results, own, pool = [], [], []
    for episode in range(5):
        alone = tuple(rng.random(4))
        k2, k1, k0 = tuple(rng.random(4)), tuple(rng.random(4)), tuple(rng.random(4))
        results += [
            EpisodeResult("e", episode, episode, alone, 5),
            EpisodeResult("e.vor.k2", episode, episode, k2, 5, seats=(0, 1, 0, 1)),
            EpisodeResult("e.vor.k1", episode, episode, k1, 5, seats=(1, 1, 1, 0)),
            EpisodeResult("e.vor.k0", episode, episode, k0, 5, seats=(1, 1, 1, 1)),
        ]
        own += [*alone, k2[0], k2[2], k1[3]]
        pool.append(np.mean(k0))
    total, per_env = vor_metrics(suite, results)
    expected = sum(own) / len(own) - np.mean(pool)  # cogames: candidate-agent-weighted mean minus pool-only mean
    assert total.value == pytest.approx(expected) and per_env["e"].value == pytest.approx(expected)
    assert total.seats == [4, 2, 1, 0] and total.pool == ["builtin://noop"]
    assert total.ci95[0] < total.value < total.ci95[1]


def _run(tmp_path: Path, name: str, candidate: str) -> dict:
    suite = tmp_path / "vor4.yaml"
    suite.write_text(SUITE)
    config = EvalConfig(
        policy_uris=(candidate,),
        suite=str(suite),
        vor=("builtin://noop",),
        data_dir=tmp_path,
        run_name=name,
        execution="in-process",
    )
    return json.loads((evaluate(config).run_dir / "report.json").read_text())


def test_navigator_is_worth_more_than_a_noop_pool_and_noop_is_worth_nothing(tmp_path: Path):
    navigator = _run(tmp_path, "navigator", "builtin://navigator")["policies"][0]["checkpoints"][0]["metrics"]
    assert navigator["vor"]["value"] > 0 and navigator["vor"]["ci95"][0] > 0
    assert navigator["vor"]["verdict"] == "better"
    assert navigator["environments"]["open4"]["vor"] == navigator["vor"]
    assert navigator["suite_scores"]["vor4/score"] == navigator["environments"]["open4"]["score"]
    noop = _run(tmp_path, "noop", "builtin://noop")["policies"][0]["checkpoints"][0]["metrics"]
    assert noop["vor"]["value"] == 0 and noop["vor"]["verdict"] == "no difference"
    recorded = run_detail(f"sqlite:///{tmp_path / 'results.db'}", "navigator").checkpoints[0]
    assert recorded.mixed["vor"] == navigator["vor"]["value"]  # what `results --run` shows
    assert set(recorded.mixed["environments"]) == {"open4.vor.k2", "open4.vor.k1", "open4.vor.k0"}  # k = 4: alone


def test_vor_needs_a_multi_agent_environment(tmp_path: Path):
    config = EvalConfig(policy_uris=("builtin://noop",), suite="smoke", env="tiny_room", vor=("builtin://noop",),
                        data_dir=tmp_path, execution="in-process")  # fmt: skip
    with pytest.raises(UsageError, match="--vor needs an environment of at least 2 agents"):
        evaluate(config)


def test_the_same_episodes_give_cogames_pickup_figures(tmp_path: Path):
    """cogames' own scoring (`metta_alo.scoring`, cogames 0.27.3: what `cogames pickup` runs on its rollouts) fed our
    episodes, scenario by scenario, as mettagrid rollout results: the same VOR."""
    from metta_alo.scoring import VorTotals, overall_value_over_replacement, summarize_vor_scenario
    from mettagrid.simulator.multi_episode.rollout import EpisodeRolloutResult, MultiEpisodeRolloutResult

    report = _run(tmp_path, "pickup", "builtin://navigator")
    ours = report["policies"][0]["checkpoints"][0]["metrics"]["vor"]["value"]
    rows = pq.read_table(tmp_path / "pickup" / "episodes.parquet").to_pylist()
    totals = VorTotals()
    for seats, env in ((4, "open4"), (2, "open4.vor.k2"), (1, "open4.vor.k1"), (0, "open4.vor.k0")):
        episodes = [
            EpisodeRolloutResult(
                assignments=[0 if policy == "builtin://navigator" else 1 for policy in row["agent_policies"]],
                rewards=row["rewards"],
                action_timeouts=[0] * len(row["rewards"]),
                stats={"game": {}, "agent": []},
                replay_path=None,
                steps=row["steps"],
                max_steps=60,
            )
            for row in rows
            if row["env"] == env
        ]
        assert len(episodes) == 6
        summary = summarize_vor_scenario(
            MultiEpisodeRolloutResult(episodes=episodes), candidate_policy_index=0, candidate_count=seats
        )
        totals.update(seats, summary)
    theirs = overall_value_over_replacement(
        totals.total_candidate_weighted_sum, totals.total_candidate_agents, totals.replacement_mean
    )
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_vor_beside_npc_line_ups_plays_the_candidate_alone_for_k_equal_n(tmp_path: Path):
    suite = tmp_path / "vor4.yaml"
    suite.write_text(SUITE)
    config = EvalConfig(
        policy_uris=("builtin://navigator",),
        suite=str(suite),
        vor=("builtin://noop",),
        npcs=("builtin://random",),
        data_dir=tmp_path,
        run_name="npc",
        execution="in-process",
    )
    metrics = evaluate(config).report.policies[0].checkpoints[0].metrics
    envs = metrics.environments
    assert envs["open4"].lineup.npcs[0].uri == "builtin://random"  # the --npc line-up stands
    assert envs["open4.vor.k4"].lineup is None  # K = n: the candidate alone, on the same seeds
    assert {"open4.vor.k2", "open4.vor.k1", "open4.vor.k0"} <= set(envs)
    assert metrics.vor.verdict == "better" and metrics.suite_scores["vor4/score"] == envs["open4"].score
