"""Suites from YAML/JSON files, with maps in mettagrid's ASCII format.

```yaml
name: my_suite            # optional, defaults to the file's stem
seed: 0
envs:
  - name: corridors
    map_file: maps/corridors.map     # relative to this file
    max_steps: 200
    episodes: 5                      # num_agents defaults to the number of '@' in the map
  - name: maze
    map: {kind: maze, width: 21, height: 21}
    max_steps: 400
```

A map file is either plain ASCII rows (Metta's `.map` files) or mettagrid's `AsciiMapBuilder` YAML
(`map_data:` plus `char_to_map_name:`); both load unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim.envs import NAME_TO_CHAR, AsciiMap, EnvSpec, MapSpec
from sim.errors import SuiteError
from sim.suites import Suite


class _EnvEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    map: MapSpec | None = None
    map_file: str | None = None
    max_steps: int
    num_agents: int | None = None
    episodes: int = 5


class _SuiteFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
        envs = tuple(_env_spec(entry, path.parent) for entry in raw.envs)
        return Suite(name=raw.name or path.stem, seed=raw.seed, description=raw.description, envs=envs)
    except ValidationError as exc:
        raise SuiteError(f"suite file {path}: {_describe(exc)}") from None


def _parse(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()
        raise SuiteError(f"suite file {path} is not valid {path.suffix[1:].upper()}: {' '.join(first[:3])}") from None


def _env_spec(entry: _EnvEntry, base: Path) -> EnvSpec:
    if (entry.map is None) == (entry.map_file is None):
        raise SuiteError(f"environment {entry.name!r}: give exactly one of `map` or `map_file`")
    env_map = entry.map if entry.map is not None else read_map_file(base / entry.map_file)
    num_agents = entry.num_agents
    if num_agents is None:
        num_agents = env_map.agent_count if isinstance(env_map, AsciiMap) else 1
    return EnvSpec(
        name=entry.name,
        map=env_map,
        max_steps=entry.max_steps,
        num_agents=num_agents,
        episodes=entry.episodes,
    )


def read_map_file(path: Path) -> AsciiMap:
    """Read a plain ASCII map or a mettagrid `AsciiMapBuilder` YAML file into an `AsciiMap`."""
    if not path.is_file():
        raise SuiteError(f"map file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    rows = _mettagrid_yaml_rows(text, path)
    if rows is None:
        rows = tuple(line.rstrip() for line in text.splitlines() if line.strip())
    try:
        return AsciiMap(rows=rows)
    except ValidationError as exc:
        raise SuiteError(f"map file {path}: {_describe(exc)}") from None


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
    legend = {"#": "wall", ".": "empty", "@": "agent.agent", **dict(data.get("char_to_map_name") or {})}
    used = {char for line in lines for char in line}
    unknown = sorted({legend[c] for c in used if c in legend and legend[c] not in NAME_TO_CHAR})
    if unknown:
        raise SuiteError(f"map file {path} uses objects {unknown}; supported: {sorted(NAME_TO_CHAR)}")
    return tuple("".join(NAME_TO_CHAR.get(legend.get(char, char), char) for char in line) for line in lines if line)


def _describe(exc: ValidationError) -> str:
    """pydantic's first error as one line: `envs.0.max_steps: Field required`."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
