"""Environment specs, and the mettagrid configs built from them.

An `EnvSpec` is data (frozen, hashable, serialisable) so that it can travel inside a Ray work unit and
be hashed into a cache key; `build_config` turns it into a mettagrid `MettaGridConfig` for one episode
seed. Every navigation environment shares one object set, action set and observation shape, so one
policy (and one batched forward) serves all of them.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import numpy as np
from mettagrid.builder.envs import make_navigation
from mettagrid.config.handler_config import Handler
from mettagrid.config.mettagrid_config import (
    ChangeVibeActionConfig,
    GridObjectConfig,
    InventoryConfig,
    MettaGridConfig,
)
from mettagrid.config.mutation.resource_mutation import withdraw
from mettagrid.map_builder.ascii import AsciiMapBuilder
from mettagrid.map_builder.maze import MazePrimMapBuilder
from mettagrid.map_builder.random_map import RandomMapBuilder
from pydantic import BaseModel, ConfigDict, Field, model_validator

HEART_SOURCES: tuple[str, ...] = ("generator_red", "mine_red")
"""Objects that hand an agent one heart (reward 1 under `make_navigation`'s reward) when it walks into them."""

INERT_OBJECTS: tuple[str, ...] = ("hub",)

MAP_LEGEND: dict[str, str] = {"n": "generator_red", "m": "mine_red", "_": "hub"}
"""Metta's navigation map characters on top of mettagrid's global `#` wall, `.` empty, `@` agent."""

NAME_TO_CHAR: dict[str, str] = {
    "wall": "#",
    "empty": ".",
    "agent.agent": "@",
    **{name: char for char, name in MAP_LEGEND.items()},
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AsciiMap(_Frozen):
    """A fixed map in mettagrid's ASCII format (rows of equal length)."""

    kind: Literal["ascii"] = "ascii"
    rows: tuple[str, ...]

    @model_validator(mode="after")
    def _check(self) -> AsciiMap:
        if not self.rows:
            raise ValueError("ASCII map is empty")
        width = len(self.rows[0])
        for i, row in enumerate(self.rows):
            if len(row) != width:
                raise ValueError(f"ASCII map row {i} has length {len(row)}, expected {width}")
            unknown = set(row) - set(NAME_TO_CHAR.values())
            if unknown:
                known = "".join(sorted(NAME_TO_CHAR.values()))
                raise ValueError(f"ASCII map row {i} has unknown characters {sorted(unknown)}; known: {known}")
        if self.agent_count == 0:
            raise ValueError("ASCII map has no agent ('@')")
        return self

    @property
    def agent_count(self) -> int:
        return sum(row.count("@") for row in self.rows)


class RandomMap(_Frozen):
    """Walls and heart sources scattered uniformly (mettagrid's `RandomMapBuilder`), seeded per episode."""

    kind: Literal["random"] = "random"
    width: int = Field(ge=5, le=256)
    height: int = Field(ge=5, le=256)
    walls: int = Field(default=0, ge=0)
    goals: int = Field(default=1, ge=1)


class MazeMap(_Frozen):
    """A perfect maze (mettagrid's `MazePrimMapBuilder`), seeded per episode; the goal sits at `end`.

    The agent starts at the top-left cell; the heart source replaces the maze's end marker.
    """

    kind: Literal["maze"] = "maze"
    width: int = Field(ge=5, le=255)
    height: int = Field(ge=5, le=255)
    branching: float = Field(default=0.0, ge=0.0, le=1.0)
    end: Literal["far", "center"] = "far"


MapSpec = Annotated[AsciiMap | RandomMap | MazeMap, Field(discriminator="kind")]


class EnvSpec(_Frozen):
    """One evaluation environment: a map, an episode length, agents and how many episodes to run."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    map: MapSpec
    max_steps: int = Field(ge=1, le=100_000)
    num_agents: int = Field(default=1, ge=1, le=64)
    episodes: int = Field(default=5, ge=1, le=10_000)

    @model_validator(mode="after")
    def _agents_match_map(self) -> EnvSpec:
        if isinstance(self.map, AsciiMap) and self.map.agent_count != self.num_agents:
            raise ValueError(
                f"env {self.name!r}: map has {self.map.agent_count} agents ('@') but num_agents={self.num_agents}"
            )
        if isinstance(self.map, MazeMap) and self.num_agents != 1:
            raise ValueError(f"env {self.name!r}: maze maps hold exactly one agent")
        return self

    def spec_hash(self) -> str:
        """Stable digest of everything that determines an episode's outcome (used in cache keys)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def episode_seed(suite_seed: int, env_name: str, episode: int) -> int:
    """Seed of episode `episode` of env `env_name`: depends on nothing else, so results never depend on
    how episodes were split across workers."""
    digest = hashlib.blake2b(f"{suite_seed}/{env_name}/{episode}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF


def navigation_game(num_agents: int, max_steps: int) -> MettaGridConfig:
    """`make_navigation` plus our heart sources and inert hub; vibes off so actions are noop + 4 moves."""
    cfg = make_navigation(num_agents)
    cfg.game.max_steps = max_steps
    cfg.game.actions.change_vibe = ChangeVibeActionConfig(enabled=False)
    for name in HEART_SOURCES:
        cfg.game.objects[name] = GridObjectConfig(
            name=name,
            inventory=InventoryConfig(initial={"heart": 1}),
            on_use_handler=Handler(mutations=[withdraw({"heart": 1}, remove_when_empty=True)]),
        )
    for name in INERT_OBJECTS:
        cfg.game.objects[name] = GridObjectConfig(name=name)
    return cfg


def build_config(spec: EnvSpec, seed: int) -> MettaGridConfig:
    """The mettagrid config of one episode. Generated maps take the episode seed, so the same seed always
    gives the same map whatever ran before in the process (see DESIGN.md's determinism trap)."""
    cfg = navigation_game(spec.num_agents, spec.max_steps)
    rows = _map_rows(spec, seed)
    if rows is None:
        assert isinstance(spec.map, RandomMap)
        cfg.game.map_builder = RandomMapBuilder.Config(
            width=spec.map.width,
            height=spec.map.height,
            agents=spec.num_agents,
            border_width=1,
            objects={"wall": spec.map.walls, "generator_red": spec.map.goals},
            seed=seed,
        )
    else:
        cfg.game.map_builder = AsciiMapBuilder.Config(map_data=list(rows), char_to_map_name=MAP_LEGEND)
    return cfg


def _map_rows(spec: EnvSpec, seed: int) -> tuple[str, ...] | None:
    if isinstance(spec.map, AsciiMap):
        return spec.map.rows
    if isinstance(spec.map, MazeMap):
        return maze_rows(spec.map, seed)
    return None


def maze_rows(maze: MazeMap, seed: int) -> tuple[str, ...]:
    """Render a seeded Prim maze as ASCII rows with a wall border, agent top-left, goal at the end cell."""
    width = maze.width if maze.width % 2 else maze.width - 1
    height = maze.height if maze.height % 2 else maze.height - 1
    end = (width - 1, height - 1) if maze.end == "far" else (width // 2 // 2 * 2, height // 2 // 2 * 2)
    builder = MazePrimMapBuilder.Config(
        width=width, height=height, start_pos=(0, 0), end_pos=end, branching=maze.branching, seed=seed
    ).create()
    grid = np.asarray(builder.build().grid)
    grid = np.where(grid == "hub", "generator_red", grid)
    ring = np.concatenate([grid[0], grid[-1], grid[:, 0], grid[:, -1]])
    if not (ring == "wall").all():
        bordered = np.full((grid.shape[0] + 2, grid.shape[1] + 2), "wall", dtype=grid.dtype)
        bordered[1:-1, 1:-1] = grid
        grid = bordered
    return tuple("".join(NAME_TO_CHAR[cell] for cell in row) for row in grid)
