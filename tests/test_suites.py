import json
from pathlib import Path

import pytest

from sim.envs import AsciiMap, MazeMap
from sim.errors import SuiteError
from sim.suites import get_suite
from sim.suites.files import load_suite_file


def test_unknown_suite_suggests_and_lists():
    with pytest.raises(SuiteError, match=r"unknown suite 'navigaton' \(did you mean 'navigation'\?\).*smoke"):
        get_suite("navigaton")


def test_select_and_episode_override():
    suite = get_suite("smoke")
    assert [e.name for e in suite.select("tiny_r*").envs] == ["tiny_room", "tiny_random"]
    assert [e.name for e in suite.select("*room").envs] == ["tiny_room"]
    assert {e.episodes for e in suite.with_episodes(7).envs} == {7}
    with pytest.raises(SuiteError, match="matches no environment"):
        suite.select("nope*")


METTA_MAP = "#######\n#@..n.#\n#.._..#\n#m....#\n#######\n"
METTAGRID_YAML_MAP = """\
map_data: |-
  #####
  #@.n#
  #####
char_to_map_name:
  n: generator_red
"""


def write_suite(tmp_path: Path, body: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_suite_file_with_metta_ascii_and_mettagrid_yaml_maps(tmp_path: Path):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "room.map").write_text(METTA_MAP)
    (tmp_path / "maps" / "yaml_room.yaml").write_text(METTAGRID_YAML_MAP)
    path = write_suite(
        tmp_path,
        """
name: mine
seed: 3
envs:
  - {name: room, map_file: maps/room.map, max_steps: 30}
  - {name: yaml_room, map_file: maps/yaml_room.yaml, max_steps: 10, episodes: 2}
  - {name: maze, map: {kind: maze, width: 9, height: 9}, max_steps: 50}
""",
    )
    suite = get_suite(str(path))
    assert suite.name == "mine" and suite.seed == 3
    room, yaml_room, maze = suite.envs
    assert isinstance(room.map, AsciiMap) and room.map.rows == tuple(METTA_MAP.split())
    assert room.num_agents == 1
    assert yaml_room.map.rows == ("#####", "#@.n#", "#####") and yaml_room.episodes == 2
    assert isinstance(maze.map, MazeMap)


def test_json_suite_file(tmp_path: Path):
    body = {"envs": [{"name": "r", "map": {"kind": "random", "width": 9, "height": 9}, "max_steps": 9}]}
    suite = load_suite_file(write_suite(tmp_path, json.dumps(body), "s.json"))
    assert suite.name == "s" and suite.envs[0].name == "r"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("envs: [ {name: a", "is not valid YAML"),
        ("envs:\n  - {name: a, map_file: x.map, max_steps: 5, colour: red}", r"envs\.0\.colour: Extra inputs"),
        ("envs:\n  - {name: a, map_file: missing.map, max_steps: 5}", "map file .*missing.map does not exist"),
        ("envs:\n  - {name: a, map_file: noagent.map, max_steps: 5}", "has no agent"),
        ("envs:\n  - {name: a, max_steps: 5}", "exactly one of `map`, `map_file`, `game` or `builder`"),
        ("envs:\n  - {name: a, map_file: room.map}", r"envs\.0\.max_steps: Field required"),
        ("envs: []", "envs: List should have at least 1 item"),
    ],
)
def test_bad_suite_files_give_one_line_errors(tmp_path: Path, body: str, message: str):
    (tmp_path / "room.map").write_text(METTA_MAP)
    (tmp_path / "noagent.map").write_text("####\n#.n#\n####\n")
    with pytest.raises(SuiteError, match=message) as info:
        load_suite_file(write_suite(tmp_path, body))
    assert "\n" not in str(info.value)


def test_missing_suite_file():
    with pytest.raises(SuiteError, match="does not exist"):
        get_suite("no/such/suite.yaml")
