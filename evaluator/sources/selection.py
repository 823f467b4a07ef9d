"""Checkpoint selection (`--checkpoints`, env CHECKPOINTS): which of a policy's checkpoints to evaluate.

Forms: `latest` (default), `all`, `last:N`, `every:K` (every K-th counting back from the latest, so the
latest is always in), or explicit versions `v3,v7`. Candidates arrive in training order (natural sort for
files and S3 keys, version number for W&B).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from sim.errors import UsageError

T = TypeVar("T")

_FORM = re.compile(r"^(latest|all|last:[1-9]\d*|every:[1-9]\d*|v\d+(,v\d+)*)$")


def check_selector(selector: str) -> str:
    selector = selector.replace(" ", "")
    if not _FORM.match(selector):
        raise UsageError(
            f"--checkpoints {selector!r} is not one of: latest, all, last:N, every:K, or versions like v3,v7"
        )
    return selector


def select(candidates: Sequence[T], versions: Sequence[str], selector: str, source: str) -> list[T]:
    """The chosen candidates, in training order. `versions[i]` names `candidates[i]`."""
    selector = check_selector(selector)
    if not candidates:
        return []
    if selector == "latest":
        return [candidates[-1]]
    if selector == "all":
        return list(candidates)
    kind, _, number = selector.partition(":")
    if kind == "last":
        return list(candidates[-int(number) :])
    if kind == "every":
        step = int(number)
        return [c for i, c in enumerate(candidates) if (len(candidates) - 1 - i) % step == 0]
    wanted = selector.split(",")
    missing = [v for v in wanted if v not in versions]
    if missing:
        raise UsageError(f"{source} has no checkpoint {', '.join(missing)}; available: {', '.join(versions)}")
    return [c for c, v in zip(candidates, versions, strict=True) if v in wanted]
