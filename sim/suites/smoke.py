"""`smoke`: two tiny, fast environments for tests and quick checks (a few ms per episode)."""

from sim.envs import AsciiMap, EnvSpec, RandomMap
from sim.suites import Suite


def smoke_suite() -> Suite:
    return Suite(
        name="smoke",
        seed=0,
        description="Two tiny environments: a goal in sight, and a small random room with two agents.",
        envs=(
            EnvSpec(
                name="tiny_room",
                map=AsciiMap(rows=("#######", "#@...n#", "#.....#", "#..n..#", "#######")),
                max_steps=20,
                num_agents=1,
                episodes=2,
            ),
            EnvSpec(
                name="tiny_random",
                map=RandomMap(width=9, height=9, walls=6, goals=2),
                max_steps=25,
                num_agents=2,
                episodes=2,
            ),
        ),
    )
