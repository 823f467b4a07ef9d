"""Suite registry: names map to lazy builders; a path to a YAML/JSON file is a suite too.

Unknown names fail with a suggestion and the list of known suites (lm-evaluation-harness's habit).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.envs import EnvSpec
from sim.errors import SuiteError, did_you_mean


class Suite(BaseModel):
    """A named, seeded list of environments. Scores are reported as `<suite>/score` and
    `<suite>/<env>/score`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    seed: int = 0
    description: str = ""
    envs: tuple[EnvSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_env_names(self) -> Suite:
        names = [env.name for env in self.envs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"suite {self.name!r} repeats environment names {duplicates}")
        return self

    def select(self, pattern: str | None) -> Suite:
        """Keep the environments whose names match the glob `pattern` (None keeps all)."""
        if not pattern:
            return self
        kept = tuple(env for env in self.envs if fnmatch.fnmatchcase(env.name, pattern))
        if not kept:
            names = ", ".join(env.name for env in self.envs)
            raise SuiteError(f"--env {pattern!r} matches no environment of suite {self.name!r}; environments: {names}")
        return self.model_copy(update={"envs": kept})

    def scored(self) -> Suite:
        """The environments the suite score averages: every one but line-up variants (`EnvSpec.variant_of`)."""
        base = tuple(env for env in self.envs if env.variant_of is None)
        return self if len(base) == len(self.envs) or not base else self.model_copy(update={"envs": base})

    def with_episodes(self, episodes: int | None) -> Suite:
        """Override every environment's episode count (None keeps the suite's own counts)."""
        if episodes is None:
            return self
        envs = tuple(env.model_copy(update={"episodes": episodes}) for env in self.envs)
        return self.model_copy(update={"envs": envs})


def _navigation() -> Suite:
    from sim.suites.navigation import navigation_suite

    return navigation_suite()


def _smoke() -> Suite:
    from sim.suites.smoke import smoke_suite

    return smoke_suite()


def _multi_agent() -> Suite:
    from sim.suites.multi_agent import multi_agent_suite

    return multi_agent_suite()


SUITES: dict[str, Callable[[], Suite]] = {"navigation": _navigation, "smoke": _smoke, "multi_agent": _multi_agent}


def get_suite(name_or_path: str, *, trust_remote_code: bool = False) -> Suite:
    """A registered suite by name, or a suite file (`.yaml`, `.yml`, `.json`) by path: a suite, or a game config
    (a cogames-style mission; a `.py` file's `get_config()` only with `trust_remote_code`)."""
    if name_or_path in SUITES:
        return SUITES[name_or_path]()
    if Path(name_or_path).suffix.lower() in {".yaml", ".yml", ".json", ".py"} or "/" in name_or_path:
        from sim.suites.files import load_suite_file

        return load_suite_file(Path(name_or_path), trust_remote_code=trust_remote_code)
    hint = did_you_mean(name_or_path, SUITES)
    raise SuiteError(
        f"unknown suite {name_or_path!r}{hint}; known suites: {', '.join(sorted(SUITES))}, "
        "or pass a suite file path (.yaml/.json)"
    )
