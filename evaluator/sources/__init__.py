"""Policy URI -> checkpoints. One module per scheme; the registry maps schemes to lazy modules.

Each scheme module provides `candidates(uri, settings) -> [Candidate]` in training order; `resolve` applies
the checkpoint selection, then fetches only the chosen ones. A candidate whose bytes cannot be fetched
intact (e.g. a W&B file failing `verify()`) becomes a checkpoint with an `error`: it fails alone.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evaluator.sources.selection import select
from sim.errors import PolicyError, UsageError


@dataclass(frozen=True)
class Checkpoint:
    """One evaluable checkpoint. `data` is the complete file (or zipped spec directory); builtins have none."""

    name: str
    uri: str
    version: str
    digest: str
    data: bytes = field(default=b"", repr=False)
    error: str | None = None


@dataclass(frozen=True)
class Candidate:
    """A checkpoint that exists at the source; `fetch` downloads its bytes (only if it is selected)."""

    name: str
    uri: str
    version: str
    fetch: Callable[[], bytes] = field(repr=False)


@dataclass(frozen=True)
class SourceSettings:
    """What sources need besides the URI. Built from EvalConfig by the driver; never read from os.environ."""

    data_dir: Path = Path("data")
    wandb_entity: str = "metta-ai"
    wandb_project: str = "metta-research"
    wandb_api_key: str | None = field(default=None, repr=False)

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


SCHEMES: dict[str, str] = {
    "file": "evaluator.sources.files",
    "builtin": "evaluator.sources.builtin",
    "s3": "evaluator.sources.s3",
    "wandb": "evaluator.sources.wandb",
}
"""scheme -> module with `candidates(uri, settings) -> list[Candidate]`."""


def resolve(policy_uri: str, selector: str = "latest", settings: SourceSettings | None = None) -> list[Checkpoint]:
    """The selected checkpoints of a policy URI, in training order. A URI without a scheme is a path."""
    settings = settings or SourceSettings()
    scheme = policy_uri.split("://", 1)[0] if "://" in policy_uri else "file"
    if scheme not in SCHEMES:
        suggestion = difflib.get_close_matches(scheme, list(SCHEMES), n=1)
        hint = f" (did you mean {suggestion[0]}://?)" if suggestion else ""
        raise UsageError(
            f"unknown policy URI scheme {scheme!r} in {policy_uri!r}{hint}; supported: "
            + ", ".join(f"{s}://" for s in sorted(SCHEMES))
        )
    found = importlib.import_module(SCHEMES[scheme]).candidates(policy_uri, settings)
    chosen = select(found, [c.version for c in found], selector, policy_uri)
    return [_fetch(candidate) for candidate in chosen]


def _fetch(candidate: Candidate) -> Checkpoint:
    try:
        data = candidate.fetch()
    except PolicyError as exc:
        return Checkpoint(candidate.name, candidate.uri, candidate.version, digest="", error=str(exc))
    return Checkpoint(candidate.name, candidate.uri, candidate.version, digest_of(data), data)
