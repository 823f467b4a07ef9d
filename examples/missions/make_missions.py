"""Writes the example mission files: cogames-style missions, each a whole `MettaGridConfig` as mettagrid dumps it.

    .venv/bin/python examples/missions/make_missions.py      # rewrites arena_mission.yaml beside this file

Evaluate one as a suite of that single game:

    policy-evaluator run -p builtin://navigator --suite examples/missions/arena_mission.yaml --npc builtin://random
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sim.suites.multi_agent import combat_arena

HERE = Path(__file__).resolve().parent


def main() -> None:
    config = combat_arena(4, size=15, hearts=3, walls=10, max_steps=150)
    config.label = "arena_mission"
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=True)
    header = "# mettagrid's combat arena with heart sources, 4 agents: written by make_missions.py (do not edit).\n"
    (HERE / "arena_mission.yaml").write_text(header + text)


if __name__ == "__main__":
    main()
