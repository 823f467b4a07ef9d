"""`multi_agent`: environments where agents meet. Heart sources are scarce (fewer than agents, each hands out one
heart and vanishes), so agents race each other for them; the `arena_combat*` environments are mettagrid's own
combat arena (`make_arena(combat=True)`: attack enabled, a laser spent per attack, armor defends) with heart
sources added as its reward (the builder's arena has walls only) and eight move directions.

Two kinds of interface on purpose:
- `hearts_*` keep the navigation interface exactly (`navigation_game`: the same objects, observation features
  and the five actions noop + 4 moves), so navigation-trained checkpoints (examples/policies) play them;
- `arena_combat*` have nine actions (diagonal moves) and the arena's objects: a navigation-trained network cannot
  play them, and that (checkpoint, environment) fails with its one-line reason while the others play on. The
  scripted baselines (`builtin://navigator`, `random`, `noop`) play both kinds.
"""

from __future__ import annotations

from mettagrid.builder.envs import make_arena
from mettagrid.config.action_config import Directions
from mettagrid.config.mettagrid_config import MettaGridConfig
from mettagrid.map_builder.random_map import RandomMapBuilder

from sim.envs import AsciiMap, EnvSpec, RandomMap, game_json, navigation_game
from sim.suites import Suite

RACE_ROWS = (
    "###########",
    "#@...n...@#",
    "#.###.###.#",
    "#.........#",
    "#.###.###.#",
    "#@...n...@#",
    "###########",
)
"""Four agents in the corners, two hearts between them."""


def combat_arena(num_agents: int, size: int, hearts: int, walls: int, max_steps: int) -> MettaGridConfig:
    """mettagrid's combat arena with our heart sources (one heart each) and diagonal moves; agents start armed."""
    config = make_arena(
        num_agents,
        combat=True,
        map_builder=RandomMapBuilder.Config(
            width=size,
            height=size,
            agents=num_agents,
            border_width=1,
            objects={"wall": walls, "generator_red": hearts},
        ),
    )
    sources = navigation_game(num_agents, max_steps).game.objects
    config.game.objects["generator_red"] = sources["generator_red"]
    config.game.actions.move.allowed_directions = list(Directions)
    config.game.agent.inventory.initial = {"laser": 5, "armor": 1}
    config.game.max_steps = max_steps
    return config


def multi_agent_suite() -> Suite:
    return Suite(
        name="multi_agent",
        description="agents racing for scarce hearts, and mettagrid's combat arena with hearts",
        envs=(
            EnvSpec(
                name="hearts_open4",
                map=RandomMap(width=15, height=15, goals=3),
                num_agents=4,
                max_steps=120,
                episodes=6,
            ),
            EnvSpec(
                name="hearts_walls8",
                map=RandomMap(width=21, height=21, walls=30, goals=4),
                num_agents=8,
                max_steps=150,
                episodes=4,
            ),
            EnvSpec(name="hearts_race4", map=AsciiMap(rows=RACE_ROWS), num_agents=4, max_steps=60, episodes=6),
            EnvSpec(
                name="arena_combat4",
                game=game_json(combat_arena(4, size=15, hearts=3, walls=10, max_steps=150)),
                num_agents=4,
                max_steps=150,
                episodes=6,
            ),
            EnvSpec(
                name="arena_combat8",
                game=game_json(combat_arena(8, size=21, hearts=5, walls=20, max_steps=150)),
                num_agents=8,
                max_steps=150,
                episodes=4,
            ),
        ),
    )
