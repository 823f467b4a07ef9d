"""`wandb://` policy URIs: W&B model artifacts.

Forms (the mapping is ours; wandb's client neither knows `wandb://` nor accepts 4-part paths):
- `wandb://<entity>/<project>/model/<run_name>[:<version>]` (the seed's form): artifact
  `<entity>/<project>/<run_name>` of type `model`;
- `wandb://<entity>/<project>/<artifact>[:<version>]`;
- `wandb://run/<run_name>[:<version>]`: WANDB_ENTITY / WANDB_PROJECT from the settings.
`<version>` is `vN` or any alias. With a version, that one checkpoint is evaluated; without, the
collection's versions (`api.artifacts(type, name)`, ordered by version number) go through
`--checkpoints`. Each version is downloaded once into a content-addressed cache under DATA_DIR and
checked with `verify()` (download alone does not catch corrupted bytes).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from evaluator.sources import Candidate, SourceSettings
from evaluator.sources.files import CHECKPOINT_SUFFIXES, is_policy_dir, zip_directory
from evaluator.wandb_client import api, require_key, wandb_errors
from sim.errors import PolicyError, UsageError

FORMS = (
    "wandb://<entity>/<project>/model/<run_name>[:<version>], wandb://<entity>/<project>/<artifact>[:<version>] "
    "or wandb://run/<run_name>[:<version>]"
)
_NAME = r"[A-Za-z0-9_.\-]+"
_VERSION = r"(?::(?P<version>[A-Za-z0-9_.\-]+))?"
_RUN_FORM = re.compile(rf"^run/(?P<name>{_NAME}){_VERSION}$")
_MODEL_FORM = re.compile(rf"^(?P<entity>{_NAME})/(?P<project>{_NAME})/model/(?P<name>{_NAME}){_VERSION}$")
_ARTIFACT_FORM = re.compile(rf"^(?P<entity>{_NAME})/(?P<project>{_NAME})/(?P<name>{_NAME}){_VERSION}$")


@dataclass(frozen=True)
class ArtifactRef:
    entity: str
    project: str
    name: str
    version: str | None
    type: str | None

    @property
    def collection(self) -> str:
        return f"{self.entity}/{self.project}/{self.name}"


def parse_wandb_uri(uri: str, settings: SourceSettings) -> ArtifactRef:
    rest = uri.removeprefix("wandb://")
    if match := _RUN_FORM.match(rest):
        return ArtifactRef(settings.wandb_entity, settings.wandb_project, match["name"], match["version"], "model")
    if match := _MODEL_FORM.match(rest):
        return ArtifactRef(match["entity"], match["project"], match["name"], match["version"], "model")
    if match := _ARTIFACT_FORM.match(rest):
        return ArtifactRef(match["entity"], match["project"], match["name"], match["version"], None)
    raise UsageError(f"malformed W&B URI {uri!r}; expected {FORMS}")


def candidates(uri: str, settings: SourceSettings) -> list[Candidate]:
    ref = parse_wandb_uri(uri, settings)
    client = api(require_key(settings.wandb_api_key, uri))
    with wandb_errors(uri):
        if ref.version:
            artifacts = [client.artifact(f"{ref.collection}:{ref.version}", type=ref.type)]
        else:
            # Resolving `latest` first proves the collection exists (listing a missing one fails obscurely)
            # and tells its type for the 3-part form.
            artifact_type = client.artifact(f"{ref.collection}:latest", type=ref.type).type
            listed = client.artifacts(artifact_type, ref.collection)
            artifacts = sorted(listed, key=lambda a: int(a.version.removeprefix("v")))
    if not artifacts:
        raise UsageError(f"W&B artifact collection {ref.collection} has no versions")
    return [_candidate(artifact, ref, settings) for artifact in artifacts]


def _candidate(artifact, ref: ArtifactRef, settings: SourceSettings) -> Candidate:
    uri = f"wandb://{ref.collection}:{artifact.version}"
    return Candidate(name=ref.name, uri=uri, version=artifact.version, fetch=lambda: _fetch(artifact, uri, settings))


def _fetch(artifact, uri: str, settings: SourceSettings) -> bytes:
    """Download into `cache/wandb/<artifact digest>/` once; later runs reuse the verified copy."""
    root = settings.cache_dir / "wandb" / artifact.digest
    if not (root / ".verified").exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=".download-"))
        try:
            with wandb_errors(uri):
                artifact.download(root=str(staging), skip_cache=True)
            artifact.verify(root=str(staging))
        except ValueError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise PolicyError(f"{uri} failed verification ({exc}); the download is corrupt") from None
        (staging / ".verified").touch()
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    return checkpoint_bytes(root, uri)


def checkpoint_bytes(root: Path, uri: str) -> bytes:
    """The artifact's checkpoint: a policy directory (zipped), or its single checkpoint file."""
    if is_policy_dir(root):
        return zip_directory(root, exclude=(".verified",))
    files = [p for p in root.rglob("*") if p.is_file() and p.name != ".verified"]
    checkpoints = [p for p in files if p.name.endswith(CHECKPOINT_SUFFIXES)] or files
    if len(checkpoints) != 1:
        names = ", ".join(sorted(p.name for p in checkpoints)) or "none"
        raise PolicyError(f"{uri} should hold one checkpoint file, found: {names}")
    return checkpoints[0].read_bytes()
