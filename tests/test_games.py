"""Game-config environments (issue 23): whole `MettaGridConfig`s from files, mettagrid's builders, mission files,
the `multi_agent` suite, and a policy that cannot play a game failing that environment alone. Real mettagrid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mettagrid.builder.envs import make_navigation

from evaluator.config import EvalConfig
from evaluator.run.driver import evaluate
from sim.baselines import NavigatorPolicy
from sim.envs import EnvSpec, build_config, episode_seed, game_json, parsed_game
from sim.errors import SuiteError
from sim.runner import EpisodeJob, run_episodes
from sim.suites import get_suite
from sim.suites.files import load_suite_file
from sim.suites.multi_agent import combat_arena

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _play(env: EnvSpec, episodes: int = 2) -> list:
    jobs = [EpisodeJob(env, i, episode_seed(0, env.name, i)) for i in range(episodes)]
    return run_episodes(NavigatorPolicy(), jobs)


def _dumped(path: Path, config) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def test_a_game_file_dumped_from_mettagrid_evaluates(tmp_path: Path):
    game = make_navigation(2)
    game.game.max_steps = 30
    _dumped(tmp_path / "nav2.yaml", game)
    (tmp_path / "suite.yaml").write_text("envs:\n  - {name: nav2, game: nav2.yaml, episodes: 2}\n")
    (env,) = load_suite_file(tmp_path / "suite.yaml").envs
    assert env.num_agents == 2 and env.max_steps == 30 and env.map is None
    assert build_config(env, 7).model_dump() == build_config(env, 7).model_dump()  # a fresh copy per episode
    results = _play(env)
    assert [r.steps for r in results] == [30, 30]


def test_builder_arena_evaluates_and_its_spec_hash_covers_the_whole_config(tmp_path: Path):
    (tmp_path / "suite.yaml").write_text(
        "envs:\n  - {name: arena, builder: arena, builder_args: {num_agents: 4, combat: true}, max_steps: 25}\n"
        "  - {name: arena_peace, builder: arena, builder_args: {num_agents: 4, combat: false}, max_steps: 25}\n"
    )
    combat, peace = load_suite_file(tmp_path / "suite.yaml").envs
    assert combat.spec_hash() != peace.spec_hash()
    assert combat.model_copy(update={"max_steps": 26}).spec_hash() != combat.spec_hash()
    assert [r.steps for r in _play(combat)] == [25, 25]


def test_game_envs_are_seeded_by_the_episode_seed():
    env = get_suite("multi_agent").select("arena_combat4").envs[0]

    def grid(seed: int) -> str:
        from mettagrid.simulator.simulator import Simulation

        simulation = Simulation(build_config(env, seed), seed=seed)
        cells = sorted((o["type_name"], o["r"], o["c"]) for o in simulation.grid_objects().values())
        simulation.close()
        return repr(cells)

    assert grid(3) == grid(3) and grid(3) != grid(4)


def test_combat_in_the_arena_fires_after_the_config_is_dumped_and_read_back():
    """Moving into an agent spends a laser: armor breaks first, then each strike takes a heart (and its reward)."""
    from mettagrid.map_builder.ascii import AsciiMapBuilder
    from mettagrid.simulator.simulator import Simulation

    config = combat_arena(2, size=9, hearts=1, walls=0, max_steps=10)
    config.game.map_builder = AsciiMapBuilder.Config(
        map_data=[list("####"), list("#@@#"), list("####")],
        char_to_map_name={"#": "wall", "@": "agent.agent"},
    )
    config.game.agent.inventory.initial = {"laser": 3, "armor": 1, "heart": 2}
    simulation = Simulation(parsed_game(game_json(config)), seed=0)  # the round trip a suite env takes
    striker, struck = simulation.agents()
    rewards = []
    for _ in range(4):
        striker.set_action("move_east")
        struck.set_action("noop")
        simulation.step()
        rewards.append((striker.step_reward, struck.step_reward))
    assert [a.inventory for a in (striker, struck)] == [{"armor": 1, "heart": 4}, {"laser": 3}]
    assert rewards[1:] == [(1.0, -1.0), (1.0, -1.0), (0.0, 0.0)]  # the blocked strike moved no heart
    stats = simulation.episode_stats["agent"][0]
    assert (stats["combat.blocked"], stats["combat.hit"]) == (1.0, 2.0)
    simulation.close()


def test_python_game_files_run_only_with_trust(tmp_path: Path):
    (tmp_path / "mission.py").write_text(
        "from mettagrid.builder.envs import make_navigation\n\n\ndef get_config():\n"
        "    config = make_navigation(2)\n    config.game.max_steps = 20\n    return config\n"
    )
    (tmp_path / "suite.yaml").write_text("envs:\n  - {name: py, game: mission.py}\n")
    with pytest.raises(SuiteError, match="pass --trust-remote-code"):
        load_suite_file(tmp_path / "suite.yaml")
    (env,) = load_suite_file(tmp_path / "suite.yaml", trust_remote_code=True).envs
    assert env.num_agents == 2 and env.max_steps == 20
    assert get_suite(str(tmp_path / "mission.py"), trust_remote_code=True).envs[0].name == "mission"


def test_a_cogames_style_mission_file_is_a_suite_of_one_game():
    suite = get_suite(str(EXAMPLES / "missions" / "arena_mission.yaml"))
    (env,) = suite.envs
    assert suite.name == env.name == "arena_mission" and env.num_agents == 4
    assert json.loads(env.game)["label"] == "arena_mission"
    assert env.game == game_json(combat_arena(4, size=15, hearts=3, walls=10, max_steps=150).model_copy(
        update={"label": "arena_mission"}))  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: g, game: missing.yaml}", "game file .*missing.yaml does not exist"),
        ("{name: g, game: bad.yaml}", "is not a MettaGridConfig"),
        ("{name: g, builder: arena, builder_args: {agents: 4}}", r"builder arena\(agents\) failed"),
        ("{name: g, builder: arenas}", "unknown builder 'arenas'"),
        ("{name: g, builder: arena, map: {kind: maze, width: 9, height: 9}, max_steps: 5}", "exactly one of"),
        ("{name: g, builder: navigation, builder_args: {num_agents: 2}, heart_reward: 0.3}", "navigation maps"),
    ],
)
def test_bad_games_are_one_line_suite_errors(tmp_path: Path, entry: str, message: str):
    (tmp_path / "bad.yaml").write_text("game: {num_agents: many}\n")
    (tmp_path / "suite.yaml").write_text(f"envs:\n  - {entry}\n")
    with pytest.raises(SuiteError, match=message) as raised:
        load_suite_file(tmp_path / "suite.yaml")
    assert "\n" not in str(raised.value)


def test_a_suite_file_gives_an_env_its_own_co_players(tmp_path: Path):
    (tmp_path / "suite.yaml").write_text(
        "envs:\n  - name: duo\n    map: {kind: random, width: 11, height: 11, goals: 3}\n    num_agents: 4\n"
        "    max_steps: 40\n    episodes: 2\n    npcs: [{uri: 'builtin://noop', proportion: 3}]\n"
    )
    outcome = evaluate(EvalConfig(policy_uris=("builtin://navigator",), suite=str(tmp_path / "suite.yaml"),
                                  data_dir=tmp_path, execution="in-process"))  # fmt: skip
    env = outcome.report.policies[0].checkpoints[0].metrics.environments["duo"]
    assert env.lineup.candidate_agents == 1 and env.lineup.npcs[0].agents == 3 and env.npc_score == 0


def test_multi_agent_suite_plays_and_a_navigation_network_fails_only_the_games_it_cannot_play(tmp_path: Path):
    suite = get_suite("multi_agent")
    assert len(suite.envs) >= 4 and all(env.num_agents >= 4 for env in suite.envs)
    config = EvalConfig(
        policy_uris=("builtin://navigator", "builtin://random", str(EXAMPLES / "policies" / "navigator_bc")),
        suite="multi_agent",
        episodes=2,
        data_dir=tmp_path,
        execution="in-process",
    )
    outcome = evaluate(config)
    assert not outcome.failed  # a (checkpoint, env) that cannot be played never fails the run
    navigator, random, network = (p.checkpoints[0] for p in outcome.report.policies)
    hearts = [env.name for env in suite.envs if env.name.startswith("hearts")]
    assert sum(navigator.metrics.environments[e].score for e in hearts) > sum(
        random.metrics.environments[e].score for e in hearts
    )
    assert network.error is None and set(network.env_errors) == {"arena_combat4", "arena_combat8"}
    assert all("expected (1, 9)" in reason and "\n" not in reason for reason in network.env_errors.values())
    assert set(network.metrics.environments) == set(hearts)
    assert network.comparisons == []  # its suite score averages fewer environments
