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

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim.envs import HEART_SOURCE_ALIASES, NAME_TO_CHAR, AsciiMap, EnvSpec, MapSpec
from sim.errors import SuiteError, validation_line
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


class _EnvEntry(_Layout):
    name: str
    map: MapSpec | None = None
    map_file: str | None = None
    max_steps: int
    num_agents: int | None = None
    episodes: int = 5


class _SuiteFile(_Layout):
    name: str | None = None
    seed: int = 0
    description: str = ""
    envs: list[_EnvEntry] = Field(min_length=1)


def load_suite_file(path: Path) -> Suite:
    """Parse and validate a suite file; every problem becomes one SuiteError line naming file and field."""
    if not path.is_file():
        raise SuiteError(f"suite file {path} does not exist; pass a registered suite name or an existing file")
    parsed = _parse(path)
    try:
        raw = _SuiteFile.model_validate(parsed)
        envs = tuple(_env_spec(i, entry, raw, path) for i, entry in enumerate(raw.envs))
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


def _env_spec(index: int, entry: _EnvEntry, suite: _SuiteFile, path: Path) -> EnvSpec:
    """The EnvSpec of one entry, suite defaults filled in; its errors name the entry (or the suite default)."""
    if (entry.map is None) == (entry.map_file is None):
        raise SuiteError(f"environment {entry.name!r}: give exactly one of `map` or `map_file`")
    env_map = entry.map if entry.map is not None else read_map_file(path.parent / entry.map_file)
    layout = {name: _layout_value(name, entry, suite) for name in LAYOUT_FIELDS}
    layout = {name: value for name, value in layout.items() if value is not None}
    num_agents = entry.num_agents
    if num_agents is None:
        per_copy = env_map.agent_count if isinstance(env_map, AsciiMap) else 1
        num_agents = per_copy * (layout.get("instances") or 1)
    try:
        return EnvSpec(
            name=entry.name,
            map=env_map,
            max_steps=entry.max_steps,
            num_agents=num_agents,
            episodes=entry.episodes,
            **layout,
        )
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        field = str(loc[0]) if loc else ""
        from_suite = field in LAYOUT_FIELDS and getattr(entry, field) is None
        where = field if from_suite else ".".join(part for part in (f"envs.{index}", field) if part)
        raise SuiteError(f"suite file {path}: {where}: {validation_line(exc, located=False)}") from None


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
