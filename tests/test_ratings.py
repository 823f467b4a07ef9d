"""Ratings and cross-play (issue 24): openskill over the mixed episodes, the cross-play matrix, reproducibility."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluator.config import EvalConfig
from evaluator.outputs.wandb import summary_metrics
from evaluator.reduce.ratings import Game, cross_play, game_of, rate
from evaluator.reduce.report import Report
from evaluator.run.driver import evaluate
from evaluator.scorecard.listing import leaderboard_page
from evaluator.store.queries import best_checkpoints, leaderboard, run_detail
from sim.errors import UsageError

SUITE = """
name: arena4
envs:
  - name: open4
    map: {kind: random, width: 13, height: 13, goals: 5}
    num_agents: 4
    max_steps: 60
    episodes: 6
  - name: solo
    map: {kind: random, width: 9, height: 9, goals: 1}
    max_steps: 30
    episodes: 2
"""
BASELINES = ("builtin://navigator", "builtin://random", "builtin://noop")
VENV_BIN = Path(sys.executable).parent


def test_a_game_pools_a_policy_seated_twice_and_needs_two_policies():
    game = game_of(("e", 0, 0), ["a", "b", "a"], [[1.0, 3.0], [1.0], [2.0]])
    assert game == Game(("e", 0, 0), ("a", "b"), (2.0, 1.0))
    assert game_of(("e", 0, 0), ["a", "a"], [[1.0], [2.0]]) is None


def test_ratings_follow_the_results_in_a_fixed_order():
    games = [game_of(("e", i, 0), ["strong", "weak"], [[1.0], [0.0]]) for i in range(8)]
    games += [game_of(("e", i, 1), ["weak", "none"], [[0.5], [0.0]]) for i in range(8)]
    ranked = rate(games)
    assert [r.player for r in ranked] == ["strong", "weak", "none"]
    assert all(r.ordinal == pytest.approx(r.mu - 3 * r.sigma) for r in ranked)
    assert rate(list(reversed(games))) == ranked  # applied in `order`, never in arrival order
    tie = rate([game_of(("e", 0, 0), ["a", "b"], [[1.0], [1.0]])])
    assert tie[0].mu == pytest.approx(tie[1].mu)
    assert tie[0].elo == tie[1].elo == 400.0  # elote's starting rating: a tie moves nothing between equals


def test_elo_rates_every_pairing_of_an_episode_with_elote():
    from elote import EloCompetitor

    three = game_of(("e", 0, 0), ["a", "b", "c"], [[2.0], [1.0], [1.0]])
    by_player = {r.player: r.elo for r in rate([three], by="elo")}
    a, b, c = EloCompetitor(), EloCompetitor(), EloCompetitor()
    a.beat(b), a.beat(c), b.tied(c)  # the pairings in line-up order, by the same means
    assert by_player == {"a": a.rating, "b": b.rating, "c": c.rating}
    assert [r.player for r in rate([three], by="elo")][0] == "a"


def test_cross_play_rates_sum_to_one_from_the_same_games():
    games = [game_of(("e", i, 0), ["a", "b"], [[float(i % 3)], [1.0]]) for i in range(9)]
    met = {(m.a, m.b): m for m in cross_play(games)}
    ab, ba = met[("a", "b")], met[("b", "a")]
    assert ab.games == ba.games == 9
    assert ab.win_rate + ba.win_rate + ab.tie_rate == pytest.approx(1.0)
    assert ab.win_rate == ba.loss_rate and ab.tie_rate == ba.tie_rate == pytest.approx(3 / 9)


def _cross_play(tmp_path: Path, name: str, **overrides) -> dict:
    suite = tmp_path / "arena4.yaml"
    suite.write_text(SUITE)
    fields = {
        "policy_uris": BASELINES,
        "suite": str(suite),
        "cross_play": True,
        "data_dir": tmp_path,
        "run_name": name,
        "execution": "in-process",
        "reuse_results": False,
    } | overrides
    outcome = evaluate(EvalConfig(**fields))
    return json.loads((outcome.run_dir / "report.json").read_text())


def test_cross_play_ranks_navigator_above_random_above_noop_and_repeats_exactly(tmp_path: Path):
    report = _cross_play(tmp_path, "first")
    assert [r["name"] for r in report["ratings"]] == ["navigator", "random", "noop"]
    logged = summary_metrics(Report.model_validate(report))
    best = report["ratings"][0]
    assert logged["navigator:builtin/arena4/rating/ordinal"] == best["ordinal"]
    assert logged["navigator:builtin/arena4/rating/mu"] == best["mu"]
    assert logged["navigator:builtin/arena4/rating/elo"] == best["elo"]
    assert report["rating_system"] == "openskill"
    again = _cross_play(tmp_path, "second")
    assert again["ratings"] == report["ratings"] and again["cross_play"] == report["cross_play"]
    cells = {(c["policy"], c["against"]): c for c in report["cross_play"]}
    assert len(cells) == 6  # every ordered pair of the three, never a policy against itself
    for (a, b), cell in cells.items():
        other = cells[(b, a)]
        assert cell["games"] == other["games"] == 2 * 6  # each pair met once as each one's candidate
        assert cell["win_rate"] + other["win_rate"] + cell["tie_rate"] == pytest.approx(1.0)
    envs = report["policies"][0]["checkpoints"][0]["metrics"]["environments"]
    assert list(envs) == ["open4", "solo", "open4.vs.navigator_builtin", "open4.vs.random_builtin",
                          "open4.vs.noop_builtin"]  # fmt: skip


def test_rating_elo_ranks_by_elote_and_results_can_too(tmp_path: Path):
    report = _cross_play(tmp_path, "elo", rating="elo")
    assert report["rating_system"] == "elo"
    assert [r["name"] for r in report["ratings"]] == ["navigator", "random", "noop"]
    elos = [r["elo"] for r in report["ratings"]]
    assert elos == sorted(elos, reverse=True) and elos[0] > 400 > elos[-1]
    best = best_checkpoints(f"sqlite:///{tmp_path / 'results.db'}", by="elo")
    assert [(e.name, e.score) for e in best.best] == [(r["name"], r["elo"]) for r in report["ratings"]]
    printed = subprocess.run(
        [VENV_BIN / "policy-evaluator", "results", "--data-dir", str(tmp_path), "--best", "--by", "elo"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "Elo over the mixed episodes" in printed and printed.index("navigator") < printed.index("random")


def test_adaptive_episodes_size_the_cross_play_pairings_too(tmp_path: Path):
    report = _cross_play(tmp_path, "adaptive", target_ci=0.3, min_episodes=4, max_episodes=12, episodes=None)
    assert report["adaptive"]["target_ci"] == 0.3
    played = []
    for policy in report["policies"]:
        envs = policy["checkpoints"][0]["metrics"]["environments"]
        pairings = {name: env for name, env in envs.items() if ".vs." in name}
        assert len(pairings) == 3 and all(4 <= env["episodes"] <= 12 for env in pairings.values())
        played += [env["episodes"] for env in pairings.values()]
    assert min(played) == 4 and max(played) > 4  # each pairing stopped by its own interval
    assert [r["name"] for r in report["ratings"]][0] == "navigator"


def test_cross_play_needs_two_policies_and_a_multi_agent_env(tmp_path: Path):
    with pytest.raises(UsageError, match="at least 2 policies"):
        _cross_play(tmp_path, "one", policy_uris=("builtin://noop",))
    with pytest.raises(UsageError, match="at least 2 policies"):
        _cross_play(tmp_path, "solo", env="solo")


@pytest.mark.slow
def test_ratings_are_the_same_for_one_and_two_workers(tmp_path: Path, ray_session):
    one = _cross_play(tmp_path, "w1", execution="ray", num_workers=1, shard_size=6)
    two = _cross_play(tmp_path, "w2", execution="ray", num_workers=2, shard_size=1)
    assert one["ratings"] == two["ratings"] and one["cross_play"] == two["cross_play"]


@pytest.mark.slow
@pytest.mark.browser
def test_page_shows_the_cross_play_heatmap_and_the_ratings_table(tmp_path: Path, browser_page):
    report = _cross_play(tmp_path, "page")
    page = browser_page.page
    page.goto((tmp_path / "page" / "report.html").as_uri(), wait_until="load")
    page.wait_for_function("() => document.getElementById('crossplay')?.data !== undefined")
    y, x, z = page.evaluate("() => { const t = document.getElementById('crossplay').data[0]; return [t.y, t.x, t.z]; }")
    cells = {(c["policy"], c["against"]): c["win_rate"] for c in report["cross_play"]}
    assert x == y and set(x) == {"navigator:builtin", "random:builtin", "noop:builtin"}
    for i, a in enumerate(y):
        for j, b in enumerate(x):
            assert z[i][j] == (cells[(a, b)] if a != b else None)
    table = page.inner_text("table.ratings")
    for rating in report["ratings"]:
        assert f"{rating['name']}:{rating['version']}" in table
        assert f"{rating['mu']:.2f}" in table and f"{rating['ordinal']:.2f}" in table
        assert f"{rating['elo']:.1f}" in table
    browser_page.screenshot("cross_play_ratings", "#ratings")
    browser_page.assert_clean()


def test_results_and_the_leaderboard_rank_by_rating(tmp_path: Path):
    report = _cross_play(tmp_path, "rated")
    url = f"sqlite:///{tmp_path / 'results.db'}"
    best = best_checkpoints(url, by="rating")
    assert [(e.name, e.score) for e in best.best] == [(r["name"], r["ordinal"]) for r in report["ratings"]]
    assert best.best[0].mu == report["ratings"][0]["mu"]
    board = leaderboard(url)
    assert [e.name for e in board.ratings["arena4"]] == ["navigator", "random", "noop"]
    assert "rating" in leaderboard_page(board, "")
    printed = subprocess.run(
        [VENV_BIN / "policy-evaluator", "results", "--data-dir", str(tmp_path), "--best", "--by", "rating"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "rating (openskill ordinal" in printed and printed.index("navigator") < printed.index("random")
    detail = run_detail(url, "rated")
    navigator = detail.checkpoints[0]
    assert navigator.rating == {k: report["ratings"][0][k] for k in ("mu", "sigma", "ordinal", "elo", "games")}
    envs = report["policies"][0]["checkpoints"][0]["metrics"]["environments"]
    assert (
        navigator.mixed
        == {
            "environments": {
                name: {key: env[key] for key in ("score", "npc_score", "all_score")}
                for name, env in envs.items()
                if "lineup" in env
            },
            "vor": None,
        }
        and len(navigator.mixed["environments"]) == 3
    )
    shown = subprocess.run(
        [VENV_BIN / "policy-evaluator", "results", "--data-dir", str(tmp_path), "--run", "rated"],
        capture_output=True, text=True, check=True, env=os.environ | {"COLUMNS": "200"},
    ).stdout  # fmt: skip
    assert "mixed line-ups" in shown and "open4.vs.random_builtin" in shown and "npc_score" in shown
    assert "ratings and value over replacement" in shown and f"{report['ratings'][0]['elo']:.1f}" in shown
    refused = subprocess.run(
        [VENV_BIN / "policy-evaluator", "results", "--data-dir", str(tmp_path), "--by", "rating"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 2 and "use it with --best" in refused.stderr
