"""Mixed line-ups (issue 23): co-players beside the evaluated checkpoint, seats, attribution, batching, reuse.

Pure logic first (seats, parsing, shares), then real mettagrid episodes through the runner, then whole runs
through the driver (in process, and on 1 and 2 Ray workers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from rich.console import Console

from evaluator.cli.summary import summary_tables
from evaluator.config import EvalConfig
from evaluator.outputs.wandb import summary_metrics
from evaluator.reduce.report import Report
from evaluator.run.driver import evaluate
from sim.baselines import NavigatorPolicy, NoopPolicy
from sim.envs import EnvSpec, RandomMap, episode_seed
from sim.errors import UsageError
from sim.lineup import CoPlayer, parse_co_player, policy_shares, seat_assignment, seat_counts
from sim.runner import EpisodeJob, play
from tests.support.replays import read_replay
from tests.test_scorecard import cell_centre

MIXED_SUITE = """
name: mixtest
envs:
  - name: open4
    map: {kind: random, width: 13, height: 13, goals: 5}
    num_agents: 4
    max_steps: 60
    episodes: 4
  - name: solo
    map: {kind: random, width: 9, height: 9, goals: 1}
    max_steps: 40
    episodes: 2
"""


# -- seats -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("agents", "shares", "expected"),
    [
        (4, [0.5, 0.5], (2, 2)),
        (5, [0.5, 0.5], (3, 2)),  # a tie of remainders goes to the earlier policy
        (4, [1 / 3, 1 / 3, 1 / 3], (2, 1, 1)),
        (6, [0.2, 0.8], (1, 5)),
        (4, [0.05, 0.95], (1, 3)),  # the candidate gets at least one agent, from the largest holder
        (3, [0.01, 0.495, 0.495], (1, 1, 1)),
        (8, [0.25, 0.25, 0.5], (2, 2, 4)),
    ],
)
def test_seat_counts_by_largest_remainder(agents: int, shares: list[float], expected: tuple[int, ...]):
    counts = seat_counts(agents, shares)
    assert counts == expected and sum(counts) == agents


def test_seats_are_a_function_of_the_episode_seed_only():
    first = seat_assignment((2, 1, 1), 1234)
    assert np.array_equal(first, seat_assignment((2, 1, 1), 1234))
    assert sorted(first.tolist()) == [0, 0, 1, 2]
    shuffles = {tuple(seat_assignment((2, 2), seed)) for seed in range(40)}
    assert len(shuffles) == 6  # every arrangement of 2 + 2 seats turns up


def test_co_player_text_and_shares():
    assert parse_co_player("builtin://noop") == CoPlayer(uri="builtin://noop")
    assert parse_co_player(" s3://b/k.pt,proportion=2.5 ").proportion == 2.5
    for bad in ("", ",proportion=1", "x,proportion=0", "x,proportion=nan", "x,weight=2", "x,proportion=a"):
        with pytest.raises(ValueError):
            parse_co_player(bad)
    npcs = [CoPlayer(uri="a", proportion=1), CoPlayer(uri="b", proportion=3)]
    assert policy_shares(None, npcs) == [0.2, 0.2, 0.6]  # cogames: the candidate weighs proportion 1
    assert policy_shares(0.5, npcs) == [0.5, 0.125, 0.375]
    assert policy_shares(None, []) == [1.0]


def test_env_refuses_line_ups_it_cannot_seat():
    base = {"name": "e", "map": RandomMap(width=9, height=9), "max_steps": 5}
    with pytest.raises(ValidationError, match="at least 2 agents"):
        EnvSpec(**base, npcs=(CoPlayer(uri="builtin://noop"),))
    with pytest.raises(ValidationError, match="needs co-players"):
        EnvSpec(**base, num_agents=2, candidate_share=0.5)
    with pytest.raises(ValidationError, match="no agent to the co-players"):
        EnvSpec(**base, num_agents=2, npcs=(CoPlayer(uri="builtin://noop"),), candidate_share=1)


def test_spec_hash_covers_the_line_up_but_not_the_uri():
    env = EnvSpec(name="e", map=RandomMap(width=9, height=9), max_steps=5, num_agents=4)
    noop = CoPlayer(uri="builtin://noop", digest="sha256:aa")
    mixed = env.model_copy(update={"npcs": (noop,), "candidate_share": 0.5})
    assert mixed.spec_hash() != env.spec_hash()
    renamed = mixed.model_copy(update={"npcs": (noop.model_copy(update={"uri": "file:///same/bytes"}),)})
    assert renamed.spec_hash() == mixed.spec_hash()
    for changed in (
        {"npcs": (noop.model_copy(update={"digest": "sha256:bb"}),)},
        {"npcs": (noop.model_copy(update={"proportion": 2.0}),)},
        {"candidate_share": 0.75},
    ):
        assert mixed.model_copy(update=changed).spec_hash() != mixed.spec_hash()


# -- real episodes through the runner ----------------------------------------------------------------------------
def _mixed_env(**overrides) -> EnvSpec:
    fields = {
        "name": "open4",
        "map": RandomMap(width=13, height=13, goals=5),
        "max_steps": 60,
        "num_agents": 4,
        "npcs": (CoPlayer(uri="builtin://noop", digest="sha256:noop"),),
        "candidate_share": 0.5,
    } | overrides
    return EnvSpec(**fields)


def test_runner_attributes_rewards_to_seats_for_any_lockstep_width():
    env = _mixed_env()
    jobs = [EpisodeJob(env, i, episode_seed(0, env.name, i), record_replay=i == 0) for i in range(5)]
    outcomes = []
    for lockstep in (1, 2, 64):
        played = play(NavigatorPolicy(), jobs, lockstep_envs=lockstep, co_players={"sha256:noop": NoopPolicy()})
        assert not played.env_errors
        outcomes.append([(r.seats, r.rewards, r.steps) for r in played.results])
        for result in played.results:
            assert sorted(result.seats) == [0, 0, 1, 1]
            assert all(reward == 0 for reward, seat in zip(result.rewards, result.seats, strict=True) if seat == 1)
            assert result.score == pytest.approx(
                np.mean([r for r, s in zip(result.rewards, result.seats, strict=True) if s == 0])
            )
            assert result.npc_score == 0
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert any(score > 0 for _, rewards, _ in outcomes[0] for score in rewards)
    replay = read_replay(played.results[0].replay)
    names = {o["agent_id"]: o["policy_infos"]["policy_name"] for o in replay["objects"] if "agent_id" in o}
    seats = played.results[0].seats
    assert names == {agent: "candidate" if seat == 0 else "builtin://noop" for agent, seat in enumerate(seats)}


def test_same_policy_on_both_sides_is_one_member():
    """The candidate named as its own co-player: one instance, one row space, every agent still played."""
    env = _mixed_env(npcs=(CoPlayer(uri="builtin://navigator", digest="sha256:nav"),))
    navigator = NavigatorPolicy()
    jobs = [EpisodeJob(env, i, episode_seed(0, env.name, i)) for i in range(3)]
    mixed = play(navigator, jobs, co_players={"sha256:nav": navigator}).results
    alone = play(
        NavigatorPolicy(),
        [EpisodeJob(env.model_copy(update={"npcs": (), "candidate_share": None}), j.episode, j.seed) for j in jobs],
    ).results
    assert [r.rewards for r in mixed] == [r.rewards for r in alone]


# -- whole runs ------------------------------------------------------------------------------------------------
def _run(tmp_path: Path, name: str, **overrides) -> tuple[dict, Path]:
    suite = tmp_path / "mixtest.yaml"
    suite.write_text(MIXED_SUITE)
    fields = {
        "policy_uris": ("builtin://navigator",),
        "suite": str(suite),
        "npcs": ("builtin://noop",),
        "candidate_share": 0.5,
        "data_dir": tmp_path,
        "run_name": name,
        "execution": "in-process",
    } | overrides
    outcome = evaluate(EvalConfig(**fields))
    return json.loads((outcome.run_dir / "report.json").read_text()), outcome.run_dir


def test_candidate_score_is_its_own_agents_mean_in_the_parquet_rows(tmp_path: Path):
    report, run_dir = _run(tmp_path, "mixed")
    (checkpoint,) = report["policies"][0]["checkpoints"]
    open4, solo = checkpoint["metrics"]["environments"]["open4"], checkpoint["metrics"]["environments"]["solo"]
    assert open4["lineup"]["candidate_agents"] == 2 and open4["lineup"]["npcs"][0]["agents"] == 2
    assert open4["lineup"]["npcs"][0]["uri"] == "builtin://noop"
    assert open4["npc_score"] == 0.0 and open4["all_score"] == pytest.approx(open4["score"] / 2)
    assert "lineup" not in solo and "npc_score" not in solo  # a 1-agent env plays the candidate alone, as before
    rows = pq.read_table(run_dir / "episodes.parquet").to_pylist()
    mine = [r for r in rows if r["env"] == "open4"]
    assert len(mine) == 4
    for row in mine:
        assert sorted(row["agent_policies"]) == ["builtin://navigator"] * 2 + ["builtin://noop"] * 2
        noop_rewards = [r for r, p in zip(row["rewards"], row["agent_policies"], strict=True) if p == "builtin://noop"]
        assert noop_rewards == [0.0, 0.0]
        own = [r for r, p in zip(row["rewards"], row["agent_policies"], strict=True) if p == "builtin://navigator"]
        assert row["score"] == pytest.approx(np.mean(own))
    assert open4["score"] == pytest.approx(np.mean([r["score"] for r in mine]))
    assert open4["score"] > 0
    logged = summary_metrics(Report.model_validate(report))
    assert logged["mixtest/open4/npc_score"] == 0.0 and logged["mixtest/open4"] == open4["score"]
    assert logged["mixtest/open4/all_score"] == open4["all_score"] and "mixtest/solo/npc_score" not in logged
    printed = Console(width=200, record=True)
    for table in summary_tables(Report.model_validate(report)):
        printed.print(table)
    assert "2 candidate + 2 builtin://noop" in printed.export_text()


def test_a_changed_co_player_plays_its_episodes_anew(tmp_path: Path):
    first, _ = _run(tmp_path, "noop")
    again, _ = _run(tmp_path, "noop_again")
    assert again["timing"]["episodes_cached"] == 6  # the same line-up: every episode reused
    other, _ = _run(tmp_path, "random", npcs=("builtin://random",))
    assert other["timing"]["episodes_cached"] == 2  # only the 1-agent env's episodes are the same
    share, _ = _run(tmp_path, "share", candidate_share=0.75)
    assert share["timing"]["episodes_cached"] == 2
    env = other["policies"][0]["checkpoints"][0]["metrics"]["environments"]["open4"]
    assert env["lineup"]["npcs"][0]["uri"] == "builtin://random"


def test_bad_line_ups_are_one_line_usage_errors(tmp_path: Path):
    with pytest.raises(UsageError, match="at least 2 agents"):
        _run(tmp_path, "solo_only", suite="smoke", env="tiny_room")
    with pytest.raises(UsageError, match="co-player builtin://nope"):
        _run(tmp_path, "unknown", npcs=("builtin://nope",))
    with pytest.raises(ValidationError, match="needs co-players"):
        EvalConfig(policy_uris=("builtin://noop",), candidate_share=0.5)


def test_npc_variable_keeps_proportions_with_their_uri():
    config = EvalConfig(policy_uris=("builtin://noop",), npcs="builtin://random,proportion=2,builtin://noop")
    assert config.npcs == ("builtin://random,proportion=2", "builtin://noop")


@pytest.mark.slow
def test_same_report_for_one_and_two_workers(tmp_path: Path, ray_session):
    def metrics(workers: int, shard_size: int) -> list:
        report, _ = _run(
            tmp_path,
            f"w{workers}",
            execution="ray",
            num_workers=workers,
            shard_size=shard_size,
            reuse_results=False,
        )
        return [c["metrics"] for p in report["policies"] for c in p["checkpoints"]]

    assert metrics(1, 4) == metrics(2, 1)


@pytest.mark.slow
@pytest.mark.browser
def test_page_shows_the_line_up_and_the_player_names_each_agents_policy(tmp_path: Path, browser_page):
    report, run_dir = _run(tmp_path, "page")
    page = browser_page.page
    page.goto((run_dir / "report.html").as_uri(), wait_until="load")
    page.wait_for_function("() => document.getElementById('heatmap')?.data !== undefined")
    lineups = page.inner_text("#lineups")
    open4 = report["policies"][0]["checkpoints"][0]["metrics"]["environments"]["open4"]
    assert "2 candidate + 2 builtin://noop" in lineups
    assert f"{open4['score']:.3f}" in lineups and f"{open4['all_score']:.3f}" in lineups
    x, y = cell_centre(page, 0, 0)  # navigator on open4
    page.mouse.click(x, y)
    page.wait_for_function("() => window.scorecard.player.state().ready")
    players = page.inner_text("[data-testid=replay-players]")
    assert players.count("builtin://noop") == 2 and players.count("builtin://navigator") == 2, players
    browser_page.screenshot("mixed_lineup_player", "#player")
    browser_page.assert_clean()
