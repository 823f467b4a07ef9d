"""Policy URI -> checkpoints. One module per scheme; the registry maps schemes to lazy modules.

Each scheme module provides `candidates(uri, settings) -> [Candidate]` in training order, and
`uri_version(uri) -> str | None`, the version the URI itself names (`wandb://e/p/run:v3`, `.../run:v30/`), if
any. `list_candidates` refuses a URI naming a version together with a selection other than `latest` (one
would silently override the other) and applies the selection without downloading anything; `fetch` then
downloads one chosen candidate (the driver streams them: `evaluator.run.checkpoint_feed`), `resolve` does both.

A chosen checkpoint whose bytes cannot be fetched intact fails alone: its object vanished or is denied, a
W&B file is gone, the connection dropped mid-download (after the client's own retries), a download fails
`verify()`; it becomes a checkpoint with an `error` and the others are evaluated. Listing a source, on the
other hand, fails the whole run: a missing bucket or a rejected key is bad usage, an unreachable service an
outage (sim.errors).

Light on purpose (no mettagrid, no torch): the webhook service and the outputs import `path_of` from here.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from evaluator.sources.selection import select
from sim.errors import EvaluatorError, UsageError, did_you_mean


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
    def download_cache_dir(self) -> Path:
        """The download cache: W&B artifact versions, verified, by content digest. Not the results store
        (episode results, `evaluator.store`) nor a worker's policy cache (loaded policies, in memory)."""
        return self.data_dir / "cache" / "wandb"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


SCHEMES: dict[str, str] = {
    "file": "evaluator.sources.files",
    "builtin": "evaluator.sources.builtin",
    "s3": "evaluator.sources.s3",
    "wandb": "evaluator.sources.wandb",
}
"""scheme -> module with `candidates(uri, settings) -> list[Candidate]` and `uri_version(uri)`."""


def scheme_of(uri: str) -> str:
    """`s3` of `s3://b/k`; a URI without a scheme is a path (`file`)."""
    return uri.split("://", 1)[0] if "://" in uri else "file"


def path_of(uri: str) -> Path:
    """The local path of a `file://` URI or a plain path."""
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        return Path(unquote(parsed.netloc + parsed.path)).expanduser()
    return Path(uri).expanduser()


def resolve(policy_uri: str, selector: str = "latest", settings: SourceSettings | None = None) -> list[Checkpoint]:
    """The selected checkpoints of a policy URI, in training order, downloaded."""
    return [fetch(candidate) for candidate in list_candidates(policy_uri, selector, settings)]


def list_candidates(
    policy_uri: str, selector: str = "latest", settings: SourceSettings | None = None
) -> list[Candidate]:
    """The selected checkpoints of a policy URI, in training order, listed but not downloaded (cheap: a
    directory listing, one S3 list, one W&B query)."""
    settings = settings or SourceSettings()
    scheme = scheme_of(policy_uri)
    if scheme not in SCHEMES:
        hint = did_you_mean(scheme, SCHEMES, lambda known: f"{known}://")
        supported = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise UsageError(f"unknown policy URI scheme {scheme!r} in {policy_uri!r}{hint}; supported: {supported}")
    source = importlib.import_module(SCHEMES[scheme])
    check_not_overridden(policy_uri, source.uri_version(policy_uri), selector)
    found = source.candidates(policy_uri, settings)
    return select(found, [c.version for c in found], selector, policy_uri)


def check_not_overridden(policy_uri: str, version: str | None, selector: str) -> None:
    """A URI naming one version and a selection of others contradict each other: refuse, naming both
    (selecting exactly the version the URI names is no contradiction)."""
    if version is not None and selector.replace(" ", "") not in ("latest", version):
        raise UsageError(
            f"{policy_uri} names version {version}, which --checkpoints {selector} would override; drop the "
            f"version from the URI to select among its checkpoints, or drop --checkpoints to evaluate {version}"
        )


def fetch(candidate: Candidate) -> Checkpoint:
    """The candidate's bytes and digest, or, when they cannot be had (any of our errors: gone, denied, cut off,
    corrupt, unreachable), the checkpoint with its `error`: it fails alone."""
    try:
        data = candidate.fetch()
    except EvaluatorError as exc:
        return Checkpoint(candidate.name, candidate.uri, candidate.version, digest="", error=str(exc))
    return Checkpoint(candidate.name, candidate.uri, candidate.version, digest_of(data), data)
