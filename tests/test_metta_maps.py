"""Metta's maps: assembler/altar heart sources, MapGen instances with borders, heart reward 0.333.

Real mettagrid episodes throughout; the golden digests pin the envs that existed before these fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator.simulator import Simulation

from sim.envs import AsciiMap, EnvSpec, MazeMap, build_config, episode_seed
from sim.errors import SuiteError
from sim.metrics import summarize
from sim.policies import load_policy
from sim.runner import EpisodeJob, run_episodes
from sim.suites import get_suite
from sim.suites.files import load_suite_file, read_map_file

EXAMPLES = Path(__file__).parents[1] / "examples" / "suites"
EVALS_SUITE = EXAMPLES / "metta_navigation_evals.yaml"
OUR_TAGS = ["type:agent", "type:generator_red", "type:hub", "type:mine_red", "type:wall"]

ASSEMBLER_YAML = """\
type: mettagrid.map_builder.ascii.AsciiMapBuilder.Config
map_data: |-
  #######
  #@._n.#
  #m....#
  #######
char_to_map_name:
  _: assembler
  n: assembler
  m: altar
"""

SPEC_HASHES = {
    "navigation/emptyspace_withinsight": "cfa5a75a259774ca",
    "navigation/emptyspace_outofsight": "0490e8ee8453c8d8",
    "navigation/emptyspace_sparse": "8ab82fb2a2ab422c",
    "navigation/walls": "9415ec54c52fdd71",
    "navigation/obstacles": "d55b215a271a991c",
    "navigation/cylinder": "15c2df29052a9d39",
    "navigation/corridors": "e1b9c9d53198651a",
    "navigation/labyrinth": "e3009ac82ef70b53",
    "navigation/labyrinth_braided": "a21c7161f97bd9aa",
    "navigation/radial_maze": "59fcee7805b284f4",
    "navigation/memory": "c6ea896d4475af91",
    "navigation/wander_out": "fcfc8eb76f1e683b",
    "navigation/walls_4agents": "9bf951e8b3b74bae",
    "smoke/tiny_room": "1a2c30222f78a057",
    "smoke/tiny_random": "a05af67a988c6e67",
    "metta_navigation/walls_withinsight": "586c388d579f8c37",
    "metta_navigation/wanderout": "27baab81f4419238",
    "metta_navigation/radial_mini": "1f39dbbbc852f3d0",
    "metta_navigation/cylinder_easy": "72100458af994323",
    "metta_navigation/labyrinth": "35c942177868397d",
    "metta_navigation/walls_sparse": "ed49faaf0879f6ab",
}
"""`spec_hash()` of every shipped env: part of every stored episode's key in the results database, so a change
here silently orphans stored results. Fields added later (instances, borders, heart_reward) count only when
set; the episode count never does (episode i is the same episode in a run of 5 or of 500)."""


def _grid(spec: EnvSpec, seed: int) -> np.ndarray:
    return np.asarray(build_config(spec, seed).game.map_builder.create().build().grid)


def test_yaml_map_with_assemblers_and_altars_loads_as_our_heart_source(tmp_path: Path):
    path = tmp_path / "assemblers.map"
    path.write_text(ASSEMBLER_YAML)
    env_map = read_map_file(path)
    assert env_map.rows == ("#######", "#@.nn.#", "#n....#", "#######")
    spec = EnvSpec(name="yaml", map=env_map, max_steps=10)
    assert PolicyEnvInterface.from_mg_cfg(build_config(spec, 0)).tags == OUR_TAGS  # tag ids unchanged
    sim = Simulation(build_config(spec, 0), seed=0)
    types = sorted(o["type_name"] for o in sim.grid_objects().values() if o["type_name"] != "wall")
    sim.close()
    assert types == ["agent", "generator_red", "generator_red", "generator_red"]


def test_plain_map_reads_a_as_assembler_and_keeps_underscore_the_inert_hub(tmp_path: Path):
    path = tmp_path / "plain.map"
    path.write_text("#######\n#@.a._#\n#######\n")
    assert read_map_file(path).rows == ("#######", "#@.n._#", "#######")


def test_instances_lay_the_map_out_with_metta_borders():
    rows = ("#####", "#@.n#", "#####")
    spec = EnvSpec(name="x4", map=AsciiMap(rows=rows), max_steps=10, num_agents=4, instances=4)
    grid = _grid(spec, 7)
    # 2x2 copies of 3x5, 3 walls between them, 6 around: (6 + 3 + 3 + 3 + 6) x (6 + 5 + 3 + 5 + 6).
    assert grid.shape == (21, 25)
    assert (grid[:6] == "wall").all() and (grid[-6:] == "wall").all()
    assert (grid[:, :6] == "wall").all() and (grid[:, -6:] == "wall").all()
    for top in (6, 12):
        for left in (6, 14):
            assert grid[top + 1, left + 1] == "agent.agent" and grid[top + 1, left + 3] == "generator_red"
    sim = Simulation(build_config(spec, 7), seed=7)
    assert (sim.num_agents, sim.map_height, sim.map_width) == (4, 21, 25)
    sim.close()


def test_instances_of_a_maze_are_seeded_by_the_episode():
    spec = EnvSpec(name="m", map=MazeMap(width=9, height=9), max_steps=10, num_agents=4, instances=4, border_width=2)
    assert (_grid(spec, 3) == _grid(spec, 3)).all()
    assert (_grid(spec, 3) != _grid(spec, 4)).any()
    assert _grid(spec, 3).shape == (2 + 9 + 3 + 9 + 2,) * 2
    assert int((_grid(spec, 3) == "agent.agent").sum()) == 4


def test_heart_reward_scales_the_reward_of_a_heart():
    rows = ("#####", "#@n.#", "#####")
    for heart_reward in (0.333, 1.0):
        spec = EnvSpec(name="t", map=AsciiMap(rows=rows), max_steps=5, heart_reward=heart_reward)
        sim = Simulation(build_config(spec, 1), seed=1)
        sim._c_sim.actions()[:] = sim.action_ids["move_east"]
        sim.step()
        assert sim.episode_rewards.tolist() == pytest.approx([heart_reward], rel=1e-6)
        sim.close()


def test_suite_defaults_apply_and_envs_override_them(tmp_path: Path):
    (tmp_path / "a.map").write_text(ASSEMBLER_YAML)
    body = """\
instances: 4
heart_reward: 0.333
envs:
  - {name: shared, map_file: a.map, max_steps: 10}
  - {name: own, map_file: a.map, max_steps: 10, instances: 2, instance_border_width: 1, heart_reward: 1.0}
  - {name: maze, map: {kind: maze, width: 9, height: 9}, max_steps: 10}
"""
    (tmp_path / "s.yaml").write_text(body)
    shared, own, maze = load_suite_file(tmp_path / "s.yaml").envs
    assert (shared.instances, shared.num_agents, shared.heart_reward, shared.border_width) == (4, 4, 0.333, 6)
    assert (own.instances, own.num_agents, own.heart_reward, own.instance_border_width) == (2, 2, 1.0, 1)
    assert (maze.instances, maze.num_agents) == (4, 4)


def test_spec_hashes_of_shipped_envs_are_unchanged():
    suites = ["navigation", "smoke", str(EXAMPLES / "metta_navigation.yaml")]
    hashes = {f"{suite.name}/{env.name}": env.spec_hash() for suite in map(get_suite, suites) for env in suite.envs}
    assert hashes == SPEC_HASHES
    env = get_suite("smoke").envs[0]
    assert env.model_copy(update={"heart_reward": 1.0, "instances": None}).spec_hash() == env.spec_hash()
    assert env.model_copy(update={"heart_reward": 0.333}).spec_hash() != env.spec_hash()
    assert env.model_copy(update={"episodes": 500}).spec_hash() == env.spec_hash()


def test_example_evals_suite_has_metta_layout_and_navigator_scores_everywhere():
    suite = get_suite(str(EVALS_SUITE))
    assert 4 <= len(suite.envs) <= 6
    for env in suite.envs:
        assert (env.instances, env.border_width, env.instance_border_width) == (4, 6, 3)
        assert env.num_agents == 4 and env.heart_reward == 0.333 and 100 <= env.max_steps <= 1000
    jobs = [
        EpisodeJob(env, i, episode_seed(suite.seed, env.name, i)) for env in suite.envs for i in range(env.episodes)
    ]
    results = run_episodes(load_policy("builtin://navigator", b""), jobs)
    scores = {env.name: summarize([r for r in results if r.env == env.name]).score for env in suite.envs}
    assert all(score > 0 for score in scores.values()), scores


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("envs:\n  - {name: a, map_file: a.map, max_steps: 5, instances: 0}", r"envs\.0\.instances: .*greater than"),
        ("instances: 0\nenvs:\n  - {name: a, map_file: a.map, max_steps: 5}", r"yaml: instances: .*greater than"),
        ("envs:\n  - {name: a, map_file: a.map, max_steps: 5, heart_reward: 0}", r"heart_reward: .*greater than 0"),
        ("envs:\n  - {name: a, map_file: a.map, max_steps: 5, border_width: 2}", "need `instances`"),
        ("envs:\n  - {name: a, map_file: a.map, max_steps: 5, instances: 2, num_agents: 3}", r"x 2 instances"),
        ("envs:\n  - {name: a, map_file: converter.map, max_steps: 5}", r"uses objects \['converter'\]"),
        ("envs:\n  - {name: a, map_file: odd.map, max_steps: 5}", r"characters \['Q'\] that mean nothing"),
    ],
)
def test_bad_metta_values_give_one_line_errors(tmp_path: Path, body: str, message: str):
    (tmp_path / "a.map").write_text(ASSEMBLER_YAML)
    (tmp_path / "converter.map").write_text(ASSEMBLER_YAML.replace("m: altar", "m: converter"))
    (tmp_path / "odd.map").write_text("#####\n#@Qa#\n#####\n")
    (tmp_path / "s.yaml").write_text(body)
    with pytest.raises(SuiteError, match=message) as info:
        load_suite_file(tmp_path / "s.yaml")
    assert "\n" not in str(info.value)
