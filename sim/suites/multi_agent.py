"""`multi_agent`: environments where agents meet. Heart sources are scarce (fewer than agents, each hands out one
heart and vanishes), so agents race each other for them; the `arena_combat*` environments are mettagrid's own
combat arena (`make_arena(combat=True)`) with heart sources added as its reward (the builder's arena has walls
only), eight move directions and combat that fires: moving into another agent spends a laser and either breaks
its armor (the first hit) or takes one of its hearts.

Why the combat is spelled out as move handlers: in mettagrid 0.26.22 the builder's `attack` action only fires
for an agent whose vibe is listed in `attack.vibes` (the builder lists none, and vibe changes are not in the
actions we drive), and `AttackMutation` is not converted to the engine. The move handler chain (filters and
resource mutations, which the engine runs) is what does fire, so the arena's attack is written there.

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
from mettagrid.config.filter import TargetIsUsableFilter, TargetLocEmptyFilter
from mettagrid.config.handler_config import (
    Handler,
    actorHas,
    isA,
    targetHas,
    updateActor,
    updateTarget,
    withdraw,
)
from mettagrid.config.mettagrid_config import MettaGridConfig
from mettagrid.config.mutation import RelocateMutation, UseTargetMutation
from mettagrid.config.mutation.stats_mutation import logActorAgentStat
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
    """mettagrid's combat arena with our heart sources (one heart each) and diagonal moves; agents start armed.

    Each move tries, in order: strike an agent (a laser spent; its armor breaks first, then each strike takes a
    heart, so the reward moves from the struck agent to the striker), step onto an empty cell, use the object
    there (a heart source). Strikes are counted in the agents' stats (`combat.blocked`, `combat.hit`).
    """
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
    config.game.actions.move.handlers = combat_moves()
    config.game.agent.inventory.initial = {"laser": 5, "armor": 1}
    config.game.max_steps = max_steps
    return config


def combat_moves() -> list[Handler]:
    """The move handler chain of the combat arena: strike, else step, else use (the engine's first match)."""
    armed_at_agent = [isA("agent"), actorHas({"laser": 1})]
    return [
        Handler(
            name="strike_armor",
            filters=[*armed_at_agent, targetHas({"armor": 1})],
            mutations=[updateActor({"laser": -1}), updateTarget({"armor": -1}), logActorAgentStat("combat.blocked")],
        ),
        Handler(
            name="strike_heart",
            filters=[*armed_at_agent, targetHas({"heart": 1})],
            mutations=[updateActor({"laser": -1}), withdraw({"heart": 1}), logActorAgentStat("combat.hit")],
        ),
        Handler(name="step", filters=[TargetLocEmptyFilter()], mutations=[RelocateMutation()]),
        Handler(name="use", filters=[TargetIsUsableFilter()], mutations=[UseTargetMutation()]),
    ]


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
