import pytest
from mettagrid.simulator.simulator import Simulation
from pydantic import ValidationError

from sim.envs import AsciiMap, EnvSpec, MazeMap, RandomMap, build_config, episode_seed, maze_rows


def test_episode_seed_depends_only_on_suite_seed_env_and_index():
    assert episode_seed(0, "a", 1) == episode_seed(0, "a", 1)
    seeds = {episode_seed(0, "a", 1), episode_seed(1, "a", 1), episode_seed(0, "b", 1), episode_seed(0, "a", 2)}
    assert len(seeds) == 4
    assert all(0 <= s < 2**31 for s in seeds)


def test_ascii_map_validation_names_the_problem():
    with pytest.raises(ValidationError, match="no agent"):
        AsciiMap(rows=("###", "#.#", "###"))
    with pytest.raises(ValidationError, match="row 1 has length 2"):
        AsciiMap(rows=("###", "#@", "###"))
    with pytest.raises(ValidationError, match="unknown characters"):
        AsciiMap(rows=("###", "#@X", "###"))
    with pytest.raises(ValidationError, match="num_agents=2"):
        EnvSpec(name="x", map=AsciiMap(rows=("#@#",)), max_steps=5, num_agents=2)


def _grid(spec: EnvSpec, seed: int) -> str:
    sim = Simulation(build_config(spec, seed), seed=seed)
    objects = sorted((o["type_name"], o["r"], o["c"]) for o in sim.grid_objects().values())
    sim.close()
    return repr(objects)


def test_generated_maps_depend_on_the_episode_seed_only():
    spec = EnvSpec(name="r", map=RandomMap(width=12, height=12, walls=20, goals=3), max_steps=10)
    assert _grid(spec, 5) == _grid(spec, 5)
    assert _grid(spec, 5) != _grid(spec, 6)


def test_maze_has_agent_goal_and_closed_border():
    rows = maze_rows(MazeMap(width=15, height=11), seed=3)
    assert sum(r.count("@") for r in rows) == 1 and sum(r.count("n") for r in rows) == 1
    assert set(rows[0]) == {"#"} and set(rows[-1]) == {"#"}
    assert maze_rows(MazeMap(width=15, height=11), seed=3) == rows


def test_heart_source_gives_reward_one():
    spec = EnvSpec(name="t", map=AsciiMap(rows=("#####", "#@n.#", "#####")), max_steps=5)
    sim = Simulation(build_config(spec, 1), seed=1)
    sim._c_sim.actions()[:] = sim.action_ids["move_east"]
    sim.step()
    assert sim.episode_rewards.tolist() == [1.0]
    assert sim.action_names == ["noop", "move_north", "move_south", "move_west", "move_east"]


def test_spec_hash_changes_with_content():
    a = EnvSpec(name="a", map=RandomMap(width=9, height=9), max_steps=10)
    assert a.spec_hash() == EnvSpec(name="a", map=RandomMap(width=9, height=9), max_steps=10).spec_hash()
    assert a.spec_hash() != a.model_copy(update={"max_steps": 11}).spec_hash()
