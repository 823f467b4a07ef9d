"""`builtin://<name>`: the scripted baselines and mettagrid's registered policies."""

from __future__ import annotations

from evaluator.sources import Candidate, SourceSettings
from sim.errors import UsageError, did_you_mean
from sim.policies import BUILTIN_SCHEME, builtin_names


def candidates(uri: str, settings: SourceSettings) -> list[Candidate]:
    name = uri[len(BUILTIN_SCHEME) :]
    known = builtin_names()
    if name not in known:
        hint = did_you_mean(name, known, lambda close: f"{BUILTIN_SCHEME}{close}")
        raise UsageError(f"unknown builtin policy {uri!r}{hint}; known: {', '.join(known)}")
    return [Candidate(name=name, uri=uri, version="builtin", fetch=lambda: uri.encode())]


def uri_version(uri: str) -> str | None:
    """A baseline has no versions to select among, so its URI names none."""
    return None
