"""Checkpoint selection (`--checkpoints`, env CHECKPOINTS): which of a policy's checkpoints to evaluate, and
the training order and version names that selection works on.

Forms: `latest` (default), `all`, `last:N`, `every:K` (every K-th counting back from the latest, so the
latest is always in), or explicit versions `v3,v7`. Candidates arrive in training order with their versions.

**Training order.** Metta names its checkpoints `<run>:v<epoch>`: a policy-bundle directory (holding
`policy_spec.json` or `cogames.toml`) or a `<run>:v<epoch>.zip` (what its trainer uploads; any checkpoint
suffix counts, `run:v30.pt` too). A checkpoint so named, in a directory or under an S3 prefix, or a W&B
artifact version whose metadata says its `epoch` (Metta's uploads do) or whose single file / directory is so
named, is checkpoint `<run>`, version `v<epoch>`, and such checkpoints are ordered by epoch, so `latest` is
the highest epoch, `last:N` / `every:K` count epochs-ordered checkpoints and `v30,v60` name epochs.
Checkpoints without an epoch keep their natural order (natural sort of file names and S3 keys, with versions
`v1..vN`; W&B artifact versions `v0..vN`).

A source whose checkpoints the epoch rule cannot order unambiguously is refused with a UsageError, never
guessed at (`latest` must mean the checkpoint trained last):
- Metta-named checkpoints mixed with others (e.g. `run:v30/` next to `model.pt`): nothing tells where the
  others fall in training, and their positional versions could collide with epochs;
- checkpoints of several runs (`a:v30`, `b:v60`): `latest` or `last:N` across unrelated trainings is
  meaningless, and equal epochs collide; evaluate each run as its own policy URI;
- one epoch twice (`run:v30/` and `run:v30.zip`; W&B versions with the same `epoch`): pin one.
Files that are never checkpoints are skipped before the rule applies: hidden names (`.run:v30.x.zip`, a
Metta upload in progress) and Metta's optimizer state `trainer_state.pt`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from sim.errors import UsageError

if TYPE_CHECKING:
    from evaluator.sources import Candidate

T = TypeVar("T")

_FORM = re.compile(r"^(latest|all|last:[1-9]\d*|every:[1-9]\d*|v\d+(,v\d+)*)$")
_METTA_NAME = re.compile(r"^(?P<run>.+):v(?P<epoch>\d+)$")
EpochOf = tuple[str, int]
"""(run, epoch) of a Metta-named checkpoint."""


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


def metta_epoch(name: str, suffixes: Sequence[str] = (".zip",)) -> EpochOf | None:
    """`run:v30` or `run:v30.zip` -> ("run", 30); None for any other name. `suffixes` are stripped first."""
    for suffix in suffixes:
        name = name.removesuffix(suffix)
    match = _METTA_NAME.match(name)
    return (match["run"], int(match["epoch"])) if match else None


def by_epoch(
    found: list[Candidate], epochs: Sequence[EpochOf | None], labels: Sequence[str], source: str
) -> list[Candidate]:
    """`found` (natural order, natural versions) in training order: unchanged when no checkpoint has an epoch,
    else sorted by epoch with versions `v<epoch>`; an ambiguous mix is a UsageError (see the module docstring).
    `labels[i]` names `found[i]` in messages (its file name, key or artifact version)."""
    named = [i for i, epoch in enumerate(epochs) if epoch is not None]
    if not named:
        return found
    others = [labels[i] for i, epoch in enumerate(epochs) if epoch is None]
    if others:
        raise UsageError(
            f"{source} mixes Metta checkpoints named <run>:v<epoch> ({_few(labels[i] for i in named)}) with "
            f"others ({_few(others)}), so their training order is unknown; give one kind per policy URI, or "
            "point at one checkpoint"
        )
    runs = sorted({epochs[i][0] for i in named})
    if len(runs) > 1:
        raise UsageError(
            f"{source} holds checkpoints of {len(runs)} runs ({_few(runs)}); `latest` across runs is ambiguous: "
            "give each run's checkpoints as its own policy URI"
        )
    seen: dict[int, str] = {}
    for i in named:
        epoch = epochs[i][1]
        if epoch in seen:
            raise UsageError(
                f"{source}: {seen[epoch]} and {labels[i]} are both epoch {epoch} of {runs[0]}; keep one, or point "
                "at the one to evaluate"
            )
        seen[epoch] = labels[i]
    order = sorted(named, key=lambda i: epochs[i][1])
    return [replace(found[i], version=f"v{epochs[i][1]}") for i in order]


def _few(names: Iterable[str], limit: int = 4) -> str:
    """Names for a one-line message: the first `limit`, then a count."""
    items = list(names)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
