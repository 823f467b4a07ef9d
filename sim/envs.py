"""Environment specs, and the mettagrid configs built from them.

An `EnvSpec` is data (frozen, hashable, serialisable) so that it can travel inside a Ray work unit and
be hashed into a cache key; `build_config` turns it into a mettagrid `MettaGridConfig` for one episode
seed. Every navigation environment shares one object set, action set and observation shape, so one
policy (and one batched forward) serves all of them.

Metta's navigation evals lay each map out several times (`instances`, one agent per copy) and score a heart
at 0.333 (`heart_reward`); both are `EnvSpec` fields whose defaults (`instances=None`: the map as drawn,
`heart_reward=1.0`) build exactly the configs, and hash to exactly the digests, they did before the fields
existed.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Annotated, Any, Literal

import numpy as np
from mettagrid.builder.envs import make_navigation
from mettagrid.config.game_value import InventoryValue
from mettagrid.config.handler_config import AnyHandler, Handler
from mettagrid.config.mettagrid_config import (
    ChangeVibeActionConfig,
    GridObjectConfig,
    InventoryConfig,
    MettaGridConfig,
)
from mettagrid.config.mutation.resource_mutation import withdraw
from mettagrid.config.reward_config import reward
from mettagrid.map_builder.ascii import AsciiMapBuilder
from mettagrid.map_builder.map_builder import MapBuilderConfig
from mettagrid.map_builder.maze import MazePrimMapBuilder
from mettagrid.map_builder.random_map import RandomMapBuilder
from mettagrid.mapgen.mapgen import MapGen
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from sim.lineup import CoPlayer, policy_shares, seat_counts

HEART_SOURCES: tuple[str, ...] = ("generator_red", "mine_red")
"""Objects that hand an agent one heart (reward `EnvSpec.heart_reward`, 1 by default) when it walks into them."""

HEART_SOURCE_ALIASES: dict[str, str] = {"assembler": "generator_red", "altar": "generator_red"}
"""Metta's heart sources, read as our `generator_red` when a map file is read.

Metta's navigation maps hand out hearts from `assembler`s (earlier `altar`s). Declaring those as object
types of their own would add a tag, and mettagrid numbers tags alphabetically (`agent`, `assembler`,
`generator_red`, ...), so every existing object's tag id would shift: the observations of every existing
environment would change and the example checkpoints, trained on today's ids, would see other inputs.
An assembler in a navigation eval does exactly what `generator_red` does here (an agent walks into it and
gets a heart), so reading it as `generator_red` keeps the object set, and every observation, unchanged."""

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


METTA_BORDER_WIDTH = 6
"""Walls around the whole map in Metta's navigation evals (MapGen `border_width`)."""
METTA_INSTANCE_BORDER_WIDTH = 3
"""Walls between two copies of the map in Metta's navigation evals (MapGen `instance_border_width`)."""

_HASHED_ONLY_WHEN_SET = (
    "instances",
    "border_width",
    "instance_border_width",
    "heart_reward",
    "npcs",
    "candidate_share",
    "variant_of",
    "game",
)
"""Fields added after results were cached: left out of `spec_hash` while at their defaults."""


class EnvSpec(_Frozen):
    """One evaluation environment: a map, an episode length, agents and how many episodes to run.

    `instances=N` lays the map out N times (mettagrid's MapGen, as Metta's navigation evals do), walled
    off from each other by `instance_border_width` and from the outside by `border_width`; `num_agents`
    counts the agents of all copies. `heart_reward` is the reward of one heart.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    map: MapSpec | None = None
    """A navigation map (our heart sources, `navigation_game`); or, instead, a whole `game`."""
    max_steps: int = Field(ge=1, le=100_000)
    num_agents: int = Field(default=1, ge=1, le=64)
    episodes: int = Field(default=5, ge=1, le=10_000)
    instances: int | None = Field(default=None, ge=1, le=64)
    border_width: int = Field(default=METTA_BORDER_WIDTH, ge=0, le=32)
    instance_border_width: int = Field(default=METTA_INSTANCE_BORDER_WIDTH, ge=0, le=32)
    heart_reward: float = Field(default=1.0, gt=0, le=1_000, allow_inf_nan=False)
    game: str | None = Field(default=None, repr=False)
    """A whole mettagrid game (a `MettaGridConfig` as canonical JSON: `game_json`) instead of a navigation `map`;
    `max_steps` and the episode seed (its map builder's `seed`) still apply. Its spec hash covers the whole
    config."""
    npcs: tuple[CoPlayer, ...] = Field(default=(), max_length=16)
    """Co-players of the candidate (`sim.lineup`): empty, the candidate plays every agent."""
    candidate_share: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    """The candidate's share of the agents (at least one agent); None: proportion 1 beside the co-players'
    (cogames' default); 0: the co-players play every agent (value over replacement's pool-only episodes)."""
    variant_of: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$")
    """The environment this one is a line-up variant of (`sim.lineup`: value over replacement's seat counts,
    cross-play pairings): it plays that environment's episode seeds, so variants pair episode by episode, and it
    is left out of the suite score."""

    @model_validator(mode="after")
    def _lineup_is_playable(self) -> EnvSpec:
        if self.candidate_share is not None and not self.npcs and self.candidate_share < 1:
            raise ValueError(f"env {self.name!r}: candidate_share {self.candidate_share} needs co-players (npcs)")
        if self.npcs and self.num_agents < 2:
            raise ValueError(f"env {self.name!r}: co-players (npcs) need an env of at least 2 agents")
        if self.candidate_share == 0 and not self.npcs:
            raise ValueError(f"env {self.name!r}: candidate_share 0 needs co-players (npcs) to play every agent")
        if self.npcs and self.candidate_share == 1:
            raise ValueError(f"env {self.name!r}: candidate_share 1 leaves no agent to the co-players (npcs)")
        return self

    @property
    def mixed(self) -> bool:
        """Whether co-players play some of the agents (else the candidate plays them all, as before line-ups)."""
        return bool(self.npcs)

    @property
    def seat_counts(self) -> tuple[int, ...]:
        """Agents per policy of the line-up, candidate first (`sim.lineup.seat_counts`)."""
        shares = policy_shares(self.candidate_share, self.npcs)
        return seat_counts(self.num_agents, shares, candidate_min=0 if self.candidate_share == 0 else 1)

    @property
    def seed_name(self) -> str:
        """The name episode seeds derive from (`episode_seed`): the environment's own, or the one it is a
        variant of."""
        return self.variant_of or self.name

    @model_validator(mode="after")
    def _agents_match_map(self) -> EnvSpec:
        if (self.map is None) == (self.game is None):
            raise ValueError(f"env {self.name!r}: give exactly one of a navigation `map` or a `game` config")
        if self.game is not None:
            return self._game_fits()
        copies = self.instances or 1
        if isinstance(self.map, AsciiMap) and self.map.agent_count * copies != self.num_agents:
            laid_out = f" x {copies} instances" if self.instances else ""
            raise ValueError(
                f"env {self.name!r}: map has {self.map.agent_count} agents ('@'){laid_out} "
                f"but num_agents={self.num_agents}"
            )
        if isinstance(self.map, MazeMap) and self.num_agents != copies:
            raise ValueError(f"env {self.name!r}: maze maps hold exactly one agent per instance")
        if isinstance(self.map, RandomMap) and self.num_agents % copies:
            raise ValueError(f"env {self.name!r}: num_agents={self.num_agents} does not split over {copies} instances")
        borders = (self.border_width, self.instance_border_width)
        if self.instances is None and borders != (METTA_BORDER_WIDTH, METTA_INSTANCE_BORDER_WIDTH):
            raise ValueError(f"env {self.name!r}: border_width and instance_border_width need `instances`")
        return self

    def _game_fits(self) -> EnvSpec:
        navigation_only = [
            name
            for name in ("instances", "heart_reward", "border_width", "instance_border_width")
            if getattr(self, name) != EnvSpec.model_fields[name].default
        ]
        if navigation_only:
            raise ValueError(f"env {self.name!r}: {', '.join(navigation_only)} apply to navigation maps, not a game")
        agents = parsed_game(self.game).game.num_agents
        if agents != self.num_agents:
            raise ValueError(f"env {self.name!r}: the game has {agents} agents but num_agents={self.num_agents}")
        return self

    def spec_hash(self) -> str:
        """Stable digest of everything that determines an episode's outcome (used in cache keys).

        Fields added later count only when set away from their defaults, so the envs that existed before
        keep their digests and their cached results."""
        unset = {name for name in _HASHED_ONLY_WHEN_SET if getattr(self, name) == EnvSpec.model_fields[name].default}
        # How many episodes are played is not part of what any one of them is (episode i keeps its seed); a
        # co-player is its bytes and its proportion, whatever URI named it.
        exclude: dict = dict.fromkeys(unset | {"episodes"}, True)
        if self.npcs:
            exclude["npcs"] = {"__all__": {"uri"}}
        return hashlib.sha256(self.model_dump_json(exclude=exclude).encode()).hexdigest()[:16]


def episode_seed(suite_seed: int, env_name: str, episode: int) -> int:
    """Seed of episode `episode` of env `env_name`: depends on nothing else, so results never depend on
    how episodes were split across workers."""
    digest = hashlib.blake2b(f"{suite_seed}/{env_name}/{episode}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF


def navigation_game(num_agents: int, max_steps: int, heart_reward: float = 1.0) -> MettaGridConfig:
    """`make_navigation` plus our heart sources and inert hub; vibes off so actions are noop + 4 moves.

    `heart_reward` re-weights `make_navigation`'s own heart reward (`reward(InventoryValue("heart"))`),
    the way Metta's navigation recipe scores a heart at 0.333; at 1.0 the config is left untouched."""
    cfg = make_navigation(num_agents)
    cfg.game.max_steps = max_steps
    if heart_reward != 1.0:
        cfg.game.agent.rewards["heart"] = reward(InventoryValue(item="heart"), weight=heart_reward)
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
    if spec.game is not None:
        return game_config(spec, seed)
    cfg = navigation_game(spec.num_agents, spec.max_steps, spec.heart_reward)
    builder = _instance_builder(spec, seed)
    if spec.instances is not None:
        builder = MapGen.Config(
            instance=builder,
            instances=spec.instances,
            border_width=spec.border_width,
            instance_border_width=spec.instance_border_width,
            seed=seed,
        )
    cfg.game.map_builder = builder
    return cfg


def _instance_builder(spec: EnvSpec, seed: int) -> MapBuilderConfig:
    """The builder of one copy of the map (the whole map when `instances` is unset)."""
    rows = _map_rows(spec, seed)
    if rows is not None:
        return AsciiMapBuilder.Config(map_data=list(rows), char_to_map_name=MAP_LEGEND)
    assert isinstance(spec.map, RandomMap)
    return RandomMapBuilder.Config(
        width=spec.map.width,
        height=spec.map.height,
        agents=spec.num_agents // (spec.instances or 1),
        border_width=1,
        objects={"wall": spec.map.walls, "generator_red": spec.map.goals},
        seed=seed,
    )


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


def game_json(config: MettaGridConfig) -> str:
    """The canonical text of a game config (what `EnvSpec.game` holds and its spec hash covers)."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=64)
def parsed_game(text: str) -> MettaGridConfig:
    """The validated config of a game's JSON, parsed once per process (callers copy it before changing it)."""
    return validated_game(json.loads(text))


_MOVE_HANDLERS = TypeAdapter(list[AnyHandler])


def validated_game(data: Any) -> MettaGridConfig:
    """A game config as mettagrid's own model reads it, with the move handler chain typed.

    Why the second step: mettagrid 0.26.22 types `MoveActionConfig.handlers` as `list[Any]`, so a dumped config
    read back holds plain dicts there and the engine's converter fails on them (`'dict' object has no attribute
    'name'`); we read them as mettagrid's own `AnyHandler`, which is what a config built in Python holds.
    """
    config = MettaGridConfig.model_validate(data)
    move = config.game.actions.move
    if move.handlers:
        move.handlers = _MOVE_HANDLERS.validate_python(move.handlers)
    return config


def game_config(spec: EnvSpec, seed: int) -> MettaGridConfig:
    """A game env's config for one episode: a fresh copy, `max_steps` applied, and every map builder on the way
    down (MapGen's instance builders included) seeded with the episode seed wherever it takes one."""
    assert spec.game is not None
    config = parsed_game(spec.game).model_copy(deep=True)
    config.game.max_steps = spec.max_steps
    _seed_builders(config.game.map_builder, seed)
    return config


def _seed_builders(builder: object, seed: int) -> None:
    if builder is None:
        return
    if "seed" in getattr(type(builder), "model_fields", {}):
        builder.seed = seed  # type: ignore[attr-defined]
    for name in ("instance", "root"):
        _seed_builders(getattr(builder, name, None), seed)
