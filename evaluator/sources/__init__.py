"""Policy URI -> checkpoints. One module per scheme; the registry maps schemes to lazy resolvers.

Later schemes (wandb://, s3://) plug in here with the same signature: `resolve(uri) -> [Checkpoint]`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
from dataclasses import dataclass, field

from sim.errors import UsageError


@dataclass(frozen=True)
class Checkpoint:
    """One evaluable checkpoint. `data` is the complete file (or zipped spec directory); builtins have none."""

    name: str
    uri: str
    version: str
    digest: str
    data: bytes = field(default=b"", repr=False)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


SCHEMES: dict[str, str] = {"file": "evaluator.sources.files", "builtin": "evaluator.sources.builtin"}
"""scheme -> module with `resolve(uri: str) -> list[Checkpoint]`."""


def resolve(policy_uri: str) -> list[Checkpoint]:
    """Checkpoints of a policy URI, in natural (training) order. A URI without a scheme is a path."""
    scheme = policy_uri.split("://", 1)[0] if "://" in policy_uri else "file"
    if scheme not in SCHEMES:
        suggestion = difflib.get_close_matches(scheme, list(SCHEMES), n=1)
        hint = f" (did you mean {suggestion[0]}://?)" if suggestion else ""
        raise UsageError(
            f"unknown policy URI scheme {scheme!r} in {policy_uri!r}{hint}; supported: "
            + ", ".join(f"{s}://" for s in sorted(SCHEMES))
        )
    return importlib.import_module(SCHEMES[scheme]).resolve(policy_uri)
