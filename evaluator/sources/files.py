"""`file://` URIs and plain paths: one checkpoint file, a mettagrid policy directory, or a directory
whose checkpoint files (and policy directories) are the checkpoints, in natural sort order."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from mettagrid.policy.submission import POLICY_MANIFEST_FILENAME, POLICY_SPEC_FILENAME

from evaluator.sources import Candidate, SourceSettings
from sim.errors import UsageError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".zip", ".ts", ".jit", ".torchscript")


def candidates(uri: str, settings: SourceSettings) -> list[Candidate]:
    path = path_of(uri)
    if not path.exists():
        raise UsageError(f"policy path {path} does not exist; pass an existing checkpoint file or directory")
    if path.is_file() or is_policy_dir(path):
        return [_candidate(path, uri, version="v1")]
    members = sorted(
        (p for p in path.iterdir() if (p.is_file() and p.name.endswith(CHECKPOINT_SUFFIXES)) or is_policy_dir(p)),
        key=lambda p: natural_key(p.name),
    )
    if not members:
        kind = "is empty" if not any(path.iterdir()) else "holds no checkpoint files"
        raise UsageError(
            f"policy directory {path} {kind}; expected files ending in {', '.join(CHECKPOINT_SUFFIXES)} "
            f"or policy directories with {POLICY_SPEC_FILENAME}"
        )
    return [_candidate(p, p.resolve().as_uri(), version=f"v{i}") for i, p in enumerate(members, start=1)]


def path_of(uri: str) -> Path:
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        return Path(unquote(parsed.netloc + parsed.path)).expanduser()
    return Path(uri).expanduser()


def natural_key(name: str) -> list[object]:
    """`ckpt_2` before `ckpt_10`: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def is_policy_dir(path: Path) -> bool:
    return path.is_dir() and ((path / POLICY_SPEC_FILENAME).is_file() or (path / POLICY_MANIFEST_FILENAME).is_file())


def checkpoint_name(filename: str) -> str:
    for suffix in CHECKPOINT_SUFFIXES:
        filename = filename.removesuffix(suffix)
    return filename


def _candidate(path: Path, uri: str, version: str) -> Candidate:
    def fetch() -> bytes:
        return zip_directory(path) if path.is_dir() else path.read_bytes()

    return Candidate(name=checkpoint_name(path.name), uri=uri, version=version, fetch=fetch)


def zip_directory(root: Path, exclude: tuple[str, ...] = ()) -> bytes:
    """A deterministic zip of a policy directory (sorted members, fixed timestamps), so that its digest
    only changes when its content does."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        members = (p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.name not in exclude)
        for member in sorted(members):
            info = zipfile.ZipInfo(member.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.read_bytes())
    return buffer.getvalue()
