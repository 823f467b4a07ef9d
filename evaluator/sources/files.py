"""`file://` URIs and plain paths: one checkpoint file, a policy directory, or a directory whose checkpoint
files and policy directories are the checkpoints.

Metta's layout (`<run>:v<epoch>/` bundle directories, `<run>:v<epoch>.zip`) is checkpoint `<run>`, version
`v<epoch>`, ordered by epoch, whether the path names the directory holding them or one of them; other
checkpoints are natural-sorted (`ckpt_2` before `ckpt_10`) with versions `v1..vN`. A directory mixing the two,
holding several runs, or one epoch twice is refused: the rules are in evaluator/sources/selection.py.
Hidden files and Metta's `trainer_state.pt` (optimizer state) are never checkpoints.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from mettagrid.policy.submission import POLICY_MANIFEST_FILENAME, POLICY_SPEC_FILENAME

from evaluator.sources import Candidate, SourceSettings, path_of
from evaluator.sources.selection import EpochOf, by_epoch, metta_epoch
from sim.errors import PolicyError, UsageError

__all__ = ["candidates", "path_of", "uri_version"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".zip", ".ts", ".jit", ".torchscript")
SPEC_FILENAMES = (POLICY_SPEC_FILENAME, POLICY_MANIFEST_FILENAME)
"""A directory (or S3 prefix) holding one of these at its root is a policy bundle."""
NOT_CHECKPOINTS = ("trainer_state.pt",)
"""Metta writes its optimizer state next to the checkpoints; it is no policy."""


def candidates(uri: str, settings: SourceSettings) -> list[Candidate]:
    path = path_of(uri)
    if not path.exists():
        raise UsageError(f"policy path {path} does not exist; pass an existing checkpoint file or directory")
    if path.is_file() or is_policy_dir(path):
        return [_candidate(path, uri, position=1)]
    members = sorted((p for p in path.iterdir() if _is_member(p)), key=lambda p: natural_key(p.name))
    if not members:
        kind = "is empty" if not any(path.iterdir()) else "holds no checkpoint files"
        raise UsageError(
            f"policy directory {path} {kind}; expected files ending in {', '.join(CHECKPOINT_SUFFIXES)} "
            f"or policy directories with {POLICY_SPEC_FILENAME}"
        )
    found = [_candidate(p, p.resolve().as_uri(), position=i) for i, p in enumerate(members, start=1)]
    epochs = [epoch_of(p.name) for p in members]
    return by_epoch(found, epochs, [p.name for p in members], f"policy directory {path}")


def _is_member(path: Path) -> bool:
    if is_hidden_or_state(path.name):
        return False
    return (path.is_file() and path.name.endswith(CHECKPOINT_SUFFIXES)) or is_policy_dir(path)


def is_hidden_or_state(name: str) -> bool:
    """Names in a checkpoint listing that are never checkpoints: in-progress uploads, optimizer state."""
    return name.startswith(".") or name in NOT_CHECKPOINTS


def uri_version(uri: str) -> str | None:
    """The version a path names: `v30` of Metta's `run:v30/` or `run:v30.zip`; a plain file names none."""
    epoch = epoch_of(path_of(uri).name)
    return f"v{epoch[1]}" if epoch else None


def natural_key(name: str) -> list[object]:
    """`ckpt_2` before `ckpt_10`: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def is_policy_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in SPEC_FILENAMES)


def checkpoint_name(filename: str) -> str:
    for suffix in CHECKPOINT_SUFFIXES:
        filename = filename.removesuffix(suffix)
    return filename


def epoch_of(name: str) -> EpochOf | None:
    """(run, epoch) of a Metta-named checkpoint (`run:v30`, `run:v30.zip`, or any checkpoint suffix)."""
    return metta_epoch(name, CHECKPOINT_SUFFIXES)


def _candidate(path: Path, uri: str, position: int) -> Candidate:
    def fetch() -> bytes:
        try:
            return zip_directory(path) if path.is_dir() else path.read_bytes()
        except OSError as exc:  # removed or made unreadable since it was listed
            raise PolicyError(f"cannot read {path}: {exc.strerror or exc}") from None

    epoch = epoch_of(path.name)
    name, version = (epoch[0], f"v{epoch[1]}") if epoch else (checkpoint_name(path.name), f"v{position}")
    return Candidate(name=name, uri=uri, version=version, fetch=fetch)


def zip_directory(root: Path, exclude: tuple[str, ...] = ()) -> bytes:
    """A deterministic zip of a policy directory, so that its digest only changes when its content does."""
    files = (p for p in root.rglob("*") if p.is_file() and p.name not in exclude)
    return zip_members((p.relative_to(root).as_posix(), p.read_bytes) for p in files)


def zip_members(members: Iterable[tuple[str, Callable[[], bytes]]]) -> bytes:
    """A deterministic zip of `(posix name, reader)` pairs: sorted by path components, fixed timestamps,
    `__pycache__` left out. A directory zipped here and the same files from S3 get the same bytes, hence the
    same digest (the results store's key); each reader is called once, in order, so only one member's bytes
    are held at a time besides the archive."""
    buffer = io.BytesIO()
    wanted = [(name, read) for name, read in members if "__pycache__" not in name.split("/")]
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, read in sorted(wanted, key=lambda member: member[0].split("/")):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, read())
    return buffer.getvalue()
