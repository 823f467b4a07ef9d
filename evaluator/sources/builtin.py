"""`builtin://<name>`: the scripted baselines and mettagrid's registered policies."""

from __future__ import annotations

import difflib

from evaluator.sources import Candidate, SourceSettings
from sim.errors import UsageError
from sim.policies import BUILTIN_SCHEME, builtin_names


def candidates(uri: str, settings: SourceSettings) -> list[Candidate]:
    name = uri[len(BUILTIN_SCHEME) :]
    known = builtin_names()
    if name not in known:
        suggestion = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean builtin://{suggestion[0]}?)" if suggestion else ""
        raise UsageError(f"unknown builtin policy {uri!r}{hint}; known: {', '.join(known)}")
    return [Candidate(name=name, uri=uri, version="builtin", fetch=lambda: uri.encode())]
