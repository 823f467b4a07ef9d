"""`navigation`: our own maps for Metta's navigation eval families; heart sources (`n`, `m`) are the goals.

Metta family -> env (hand-drawn maps live in `maps/<name>.map`):
- emptyspace within sight: `emptyspace_withinsight`, three goals within the agent's view radius (6)
- emptyspace out of sight: `emptyspace_outofsight`, agent in a corner of a wide room, goals far away
- emptyspace sparse: `emptyspace_sparse`, a 64x64 room with 24 goals scattered at random
- walls: `walls` (random walls), and `walls_4agents`, the multi-agent env (four agents share 16 goals)
- obstacles: `obstacles`, wall blocks and an inert hub between the agent and the goals
- cylinder: `cylinder`, goal inside a long tube that is open only at its far ends
- corridors: `corridors`, dead-end corridors off a hallway, goals at some ends
- labyrinth: `labyrinth` (a perfect maze, goal in the far corner) and `labyrinth_braided` (loops, goal
  near the centre)
- radial mazes: `radial_maze`, eight arms from a hub, a goal at each arm's end
- memory: `memory`, a T-junction whose goal waits behind the far turn of one arm
- wander-out: `wander_out`, start in a small closed room with one exit, goals outside

Goals start out of sight everywhere but `emptyspace_withinsight`. max_steps leave the `navigator`
baseline room to finish; episode counts keep one policy's run of the whole suite near 10 s of CPU.
"""

from __future__ import annotations

from pathlib import Path

from sim.envs import AsciiMap, EnvSpec, MapSpec, MazeMap, RandomMap
from sim.suites import Suite
from sim.suites.files import read_map_file

MAPS_DIR = Path(__file__).parent / "maps"


def navigation_suite() -> Suite:
    envs = (
        _env("emptyspace_withinsight", _room(11, 11, agents=[(5, 5)], goals=[(2, 4), (8, 6), (5, 1)]), 45, 50),
        _env("emptyspace_outofsight", _room(13, 31, agents=[(1, 1)], goals=[(11, 18), (2, 24)]), 120, 40),
        _env("emptyspace_sparse", RandomMap(width=64, height=64, goals=24), 300, 30),
        _env("walls", RandomMap(width=25, height=25, walls=150, goals=6), 200, 40),
        _env("obstacles", _map_file("obstacles"), 200, 40),
        _env("cylinder", _map_file("cylinder"), 100, 40),
        _env("corridors", _map_file("corridors"), 200, 40),
        _env("labyrinth", MazeMap(width=21, height=21), 500, 20),
        _env("labyrinth_braided", MazeMap(width=25, height=25, branching=0.2, end="center"), 400, 20),
        _env("radial_maze", _radial_maze(arm=9), 300, 24),
        _env("memory", _map_file("memory"), 120, 40),
        _env("wander_out", _map_file("wander_out"), 200, 40),
        _env("walls_4agents", RandomMap(width=30, height=30, walls=200, goals=16), 200, 20, agents=4),
    )
    return Suite(
        name="navigation",
        seed=0,
        description="Metta's navigation families on our own maps: empty rooms, walls, obstacles, cylinder, "
        "corridors, mazes, a radial maze, memory, wander-out and a four-agent room.",
        envs=envs,
    )


def _env(name: str, env_map: MapSpec, max_steps: int, episodes: int, agents: int = 1) -> EnvSpec:
    return EnvSpec(name=name, map=env_map, max_steps=max_steps, num_agents=agents, episodes=episodes)


def _map_file(name: str) -> AsciiMap:
    return read_map_file(MAPS_DIR / f"{name}.map")


def _room(height: int, width: int, agents: list[tuple[int, int]], goals: list[tuple[int, int]]) -> AsciiMap:
    """A walled empty room of `height` x `width` cells (walls included); positions are (row, column)."""
    grid = [["#"] * width] + [["#"] + ["."] * (width - 2) + ["#"] for _ in range(height - 2)] + [["#"] * width]
    for char, cells in (("@", agents), ("n", goals)):
        for row, col in cells:
            grid[row][col] = char
    return AsciiMap(rows=tuple("".join(row) for row in grid))


def _radial_maze(arm: int) -> AsciiMap:
    """Eight one-cell-wide arms of `arm` cells from a central hub (diagonal arms as staircases), a goal at
    the end of each arm and the agent on the hub."""
    size = 2 * arm + 3
    centre = arm + 1
    grid = [["#"] * size for _ in range(size)]
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            for step in range(arm + 1):
                row, col = centre + step * dr, centre + step * dc
                grid[row][col] = "."
                if dr and dc and step:
                    grid[row][col - dc] = "."  # the staircase's sideways step keeps the arm 4-connected
            if dr or dc:
                grid[centre + arm * dr][centre + arm * dc] = "n"
    grid[centre][centre] = "@"
    return AsciiMap(rows=tuple("".join(row) for row in grid))
