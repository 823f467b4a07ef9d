"""Suites from YAML/JSON files, with maps in mettagrid's ASCII format.

```yaml
name: my_suite            # optional, defaults to the file's stem
seed: 0
heart_reward: 1.0         # optional suite defaults for the four layout/reward fields below
envs:
  - name: corridors
    map_file: maps/corridors.map     # relative to this file
    max_steps: 200
    episodes: 5                      # num_agents defaults to the number of '@' in the map
  - name: maze
    map: {kind: maze, width: 21, height: 21}
    max_steps: 400
  - name: corridors_x4               # Metta's navigation-eval layout
    map_file: maps/corridors.map
    max_steps: 200
    instances: 4                     # the map laid out 4 times (2x2), one copy's agents each
    border_width: 6                  # walls around the whole map (default 6, Metta's)
    instance_border_width: 3         # walls between copies (default 3, Metta's)
    heart_reward: 0.333              # reward per heart (default 1.0; Metta scores 0.333)
```

An env may instead be a whole mettagrid game (its interface, objects and rewards its own):

```yaml
  - name: arena
    game: games/arena.yaml           # a MettaGridConfig as model_dump() writes it (.yaml/.json), relative to this
    episodes: 4                      # file; max_steps defaults to the game's. `game: x.py` runs x.get_config():
  - name: arena_builder              # only with --trust-remote-code
    builder: arena                   # mettagrid.builder.envs.make_arena | make_assembly_lines | make_navigation
    builder_args: {num_agents: 4, combat: true}
    max_steps: 150
  - name: duo                        # any env: co-players of its own (they win over --npc)
    map: {kind: random, width: 11, height: 11, goals: 3}
    num_agents: 4
    max_steps: 60
    npcs: [{uri: "builtin://random", proportion: 1}]
    candidate_share: 0.5
```

A file that is itself a game config (a cogames-style mission: a top-level `game:`, no `envs:`) is a suite of that
one game, named after the file.

`instances`, `border_width`, `instance_border_width` and `heart_reward` may also sit at the top of the
file as defaults for every env; an env's own value wins. With `instances: N` the map goes through
mettagrid's MapGen as in Metta's navigation evals and `num_agents` defaults to N x the map's agents.

A map file is either plain ASCII rows (Metta's `.map` files) or mettagrid's `AsciiMapBuilder` YAML
(`map_data:` plus `char_to_map_name:`, `#`/`.`/`@` implied). Objects: `wall`, `empty`, `agent.agent`,
the heart sources `generator_red`, `mine_red`, `assembler` and `altar`, and the inert `hub`. Plain maps
use `#` `.` `@`, `n` generator_red, `m` mine_red, `a` assembler/altar, `_` hub. Metta's assemblers and
altars are read as `generator_red` (why: `sim.envs.HEART_SOURCE_ALIASES`). `_` stays the inert hub, as in
mettagrid 0.26.22's own char map and our maps; an old plain map whose `_` is an altar needs `a` instead,
or a YAML legend (`_: altar`).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from mettagrid.builder.envs import make_arena, make_assembly_lines, make_navigation
from mettagrid.config.mettagrid_config import MettaGridConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim.envs import HEART_SOURCE_ALIASES, NAME_TO_CHAR, AsciiMap, EnvSpec, MapSpec, game_json, validated_game
from sim.errors import SuiteError, did_you_mean, first_line, validation_line
from sim.lineup import CoPlayer
from sim.suites import Suite

PLAIN_MAP_CHARS: dict[str, str] = {**{char: name for name, char in NAME_TO_CHAR.items()}, "a": "assembler"}
"""What each character of a plain ASCII map means. `a` was mettagrid's own letter for the altar before
`_` took over, and `_` now means `hub` in mettagrid 0.26.22's char map and in our maps, so it stays
inert here."""

LAYOUT_FIELDS: tuple[str, ...] = ("instances", "border_width", "instance_border_width", "heart_reward")
"""EnvSpec fields a suite file may set once at the top for every env (an env's own value wins)."""


class _Layout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: int | None = None
    border_width: int | None = None
    instance_border_width: int | None = None
    heart_reward: float | None = None


class _CoPlayerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str
    proportion: float = 1.0


class _EnvEntry(_Layout):
    name: str
    map: MapSpec | None = None
    map_file: str | None = None
    game: str | None = None
    builder: str | None = None
    builder_args: dict[str, Any] = Field(default_factory=dict)
    max_steps: int | None = None
    num_agents: int | None = None
    episodes: int = 5
    npcs: list[_CoPlayerEntry] = Field(default_factory=list)
    candidate_share: float | None = None


class _SuiteFile(_Layout):
    name: str | None = None
    seed: int = 0
    description: str = ""
    envs: list[_EnvEntry] = Field(min_length=1)


def load_suite_file(path: Path, *, trust_remote_code: bool = False) -> Suite:
    """Parse and validate a suite file; every problem becomes one SuiteError line naming file and field. A file that
    is itself a game config (a cogames-style mission: a `MettaGridConfig` dump with a top-level `game`, no `envs`)
    is a suite of that one game, named after the file."""
    if not path.is_file():
        raise SuiteError(f"suite file {path} does not exist; pass a registered suite name or an existing file")
    if path.suffix.lower() == ".py":
        game = load_game_file(path, trust_remote_code=trust_remote_code)
        return _mission_suite(path, game)
    parsed = _parse(path)
    if isinstance(parsed, dict) and "game" in parsed and "envs" not in parsed:
        return _mission_suite(path, _validated_game(parsed, path))
    try:
        raw = _SuiteFile.model_validate(parsed)
        envs = tuple(
            _env_spec(i, entry, raw, path, trust_remote_code=trust_remote_code) for i, entry in enumerate(raw.envs)
        )
        return Suite(name=raw.name or path.stem, seed=raw.seed, description=raw.description, envs=envs)
    except ValidationError as exc:
        raise SuiteError(f"suite file {path}: {validation_line(exc)}") from None


def _parse(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()
        raise SuiteError(f"suite file {path} is not valid {path.suffix[1:].upper()}: {' '.join(first[:3])}") from None


def _env_spec(
    index: int, entry: _EnvEntry, suite: _SuiteFile, path: Path, *, trust_remote_code: bool = False
) -> EnvSpec:
    """The EnvSpec of one entry, suite defaults filled in; its errors name the entry (or the suite default)."""
    given = [key for key in ("map", "map_file", "game", "builder") if getattr(entry, key) is not None]
    if len(given) != 1:
        raise SuiteError(
            f"suite file {path}: environment {entry.name!r}: give exactly one of `map`, `map_file`, `game` or "
            f"`builder` (got {', '.join(given) or 'none'})"
        )
    lineup = {
        "npcs": tuple(CoPlayer(uri=npc.uri, proportion=npc.proportion) for npc in entry.npcs),
        "candidate_share": entry.candidate_share,
    }
    if entry.game is not None or entry.builder is not None:
        if entry.game is not None:
            game = load_game_file(path.parent / entry.game, trust_remote_code=trust_remote_code)
        else:
            game = build_game(entry.builder, entry.builder_args, f"suite file {path}: environment {entry.name!r}")
        fields = {"name": entry.name, "game": game_json(game), "num_agents": game.game.num_agents}
        fields |= {"max_steps": entry.max_steps or game.game.max_steps, "episodes": entry.episodes, **lineup}
        fields |= {name: getattr(entry, name) for name in LAYOUT_FIELDS if getattr(entry, name) is not None}
        return _validated_env(fields, index, entry, path)
    if entry.max_steps is None:
        raise SuiteError(f"suite file {path}: envs.{index}.max_steps: Field required")
    env_map = entry.map if entry.map is not None else read_map_file(path.parent / entry.map_file)
    layout = {name: _layout_value(name, entry, suite) for name in LAYOUT_FIELDS}
    layout = {name: value for name, value in layout.items() if value is not None}
    num_agents = entry.num_agents
    if num_agents is None:
        per_copy = env_map.agent_count if isinstance(env_map, AsciiMap) else 1
        num_agents = per_copy * (layout.get("instances") or 1)
    fields = {"name": entry.name, "map": env_map, "max_steps": entry.max_steps, "num_agents": num_agents}
    fields |= {"episodes": entry.episodes, **layout, **lineup}
    return _validated_env(fields, index, entry, path)


def _validated_env(fields: dict[str, Any], index: int, entry: _EnvEntry, path: Path) -> EnvSpec:
    try:
        return EnvSpec(**fields)
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        field = str(loc[0]) if loc else ""
        from_suite = field in LAYOUT_FIELDS and getattr(entry, field) is None
        where = field if from_suite else ".".join(part for part in (f"envs.{index}", field) if part)
        raise SuiteError(f"suite file {path}: {where}: {validation_line(exc, located=False)}") from None


def _mission_suite(path: Path, game: MettaGridConfig) -> Suite:
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", path.stem) or "mission"
    try:
        env = EnvSpec(
            name=name,
            game=game_json(game),
            num_agents=game.game.num_agents,
            max_steps=game.game.max_steps,
        )
    except ValidationError as exc:
        raise SuiteError(f"mission file {path}: {validation_line(exc)}") from None
    return Suite(name=name, envs=(env,))


def _validated_game(data: Any, path: Path) -> MettaGridConfig:
    """A game config as mettagrid's own model reads it (`MettaGridConfig(**data)`)."""
    if not isinstance(data, dict):
        raise SuiteError(f"game file {path} holds {type(data).__name__}, not a MettaGridConfig mapping")
    try:
        return validated_game(data)
    except ValidationError as exc:
        raise SuiteError(f"game file {path} is not a MettaGridConfig: {validation_line(exc)}") from None


def load_game_file(path: Path, *, trust_remote_code: bool = False) -> MettaGridConfig:
    """A whole game: a `MettaGridConfig` dump (`.yaml`, `.yml`, `.json`), or a `.py` file's `get_config()` (it runs
    code: only with --trust-remote-code)."""
    if not path.is_file():
        raise SuiteError(f"game file {path} does not exist")
    if path.suffix.lower() == ".py":
        if not trust_remote_code:
            raise SuiteError(f"game file {path} is Python (get_config() runs its code): pass --trust-remote-code")
        return _game_from_python(path)
    if path.suffix.lower() not in {".yaml", ".yml", ".json"}:
        raise SuiteError(f"game file {path}: expected .yaml, .yml, .json or .py")
    return _validated_game(_parse(path), path)


def _game_from_python(path: Path) -> MettaGridConfig:
    spec = importlib.util.spec_from_file_location(f"_game_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise SuiteError(f"game file {path} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise SuiteError(f"game file {path} has no get_config() function")
        game = get_config()
    except SuiteError:
        raise
    except Exception as exc:
        raise SuiteError(f"game file {path}: get_config() failed: {first_line(exc)}") from None
    if not isinstance(game, MettaGridConfig):
        raise SuiteError(f"game file {path}: get_config() returned {type(game).__name__}, not a MettaGridConfig")
    return game


BUILDERS: dict[str, Callable[..., MettaGridConfig]] = {
    "arena": make_arena,
    "assembly_lines": make_assembly_lines,
    "navigation": make_navigation,
}
"""`builder:` names: mettagrid's own game builders (`mettagrid.builder.envs.make_*`), called with `builder_args`."""


def build_game(builder: str, args: dict[str, Any], where: str) -> MettaGridConfig:
    if builder not in BUILDERS:
        raise SuiteError(
            f"{where}: unknown builder {builder!r}{did_you_mean(builder, BUILDERS)}; known: {', '.join(BUILDERS)}"
        )
    try:
        return BUILDERS[builder](**args)
    except Exception as exc:
        raise SuiteError(f"{where}: builder {builder}({', '.join(args)}) failed: {first_line(exc)}") from None


def _layout_value(name: str, entry: _EnvEntry, suite: _SuiteFile) -> Any:
    own = getattr(entry, name)
    return own if own is not None else getattr(suite, name)


def read_map_file(path: Path) -> AsciiMap:
    """Read a plain ASCII map or a mettagrid `AsciiMapBuilder` YAML file into an `AsciiMap` in our legend."""
    if not path.is_file():
        raise SuiteError(f"map file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    rows = _mettagrid_yaml_rows(text, path)
    if rows is None:
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        rows = _canonical_rows(lines, PLAIN_MAP_CHARS, path)
    try:
        return AsciiMap(rows=rows)
    except ValidationError as exc:
        raise SuiteError(f"map file {path}: {validation_line(exc)}") from None


def _mettagrid_yaml_rows(text: str, path: Path) -> tuple[str, ...] | None:
    """Rows of a mettagrid YAML map, re-lettered to our legend; None when the file is plain ASCII."""
    if "map_data" not in text:
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict) or "map_data" not in data:
        return None
    lines = data["map_data"]
    lines = lines.splitlines() if isinstance(lines, str) else ["".join(row) for row in lines]
    # `char_to_name_map` is the key of mettagrid's legacy-map converter; `char_to_map_name` the builder's.
    own = data.get("char_to_map_name") or data.get("char_to_name_map") or {}
    legend = {"#": "wall", ".": "empty", "@": "agent.agent", **{str(k): str(v) for k, v in dict(own).items()}}
    return _canonical_rows([line for line in lines if line], legend, path)


def _canonical_rows(lines: list[str], legend: dict[str, str], path: Path) -> tuple[str, ...]:
    """`lines` re-lettered to our legend (`sim.envs.NAME_TO_CHAR`): each character through `legend` to an
    object name, Metta's heart sources (`assembler`, `altar`) to `generator_red`."""
    used = sorted({char for line in lines for char in line})
    missing = [char for char in used if char not in legend]
    if missing:
        known = ", ".join(f"{char!r} {name}" for char, name in legend.items())
        raise SuiteError(f"map file {path} has characters {missing} that mean nothing; known: {known}")
    names = {char: HEART_SOURCE_ALIASES.get(legend[char], legend[char]) for char in used}
    unknown = sorted({legend[char] for char, name in names.items() if name not in NAME_TO_CHAR})
    if unknown:
        supported = sorted([*NAME_TO_CHAR, *HEART_SOURCE_ALIASES])
        raise SuiteError(f"map file {path} uses objects {unknown}; supported: {supported}")
    table = str.maketrans({char: NAME_TO_CHAR[name] for char, name in names.items()})
    return tuple(line.translate(table) for line in lines)
