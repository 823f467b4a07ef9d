"""`wandb://` policy URIs: W&B model artifacts.

Forms (the mapping is ours; wandb's client neither knows `wandb://` nor accepts 4-part paths):
- `wandb://<entity>/<project>/model/<run_name>[:<version>]` (the seed's form): artifact
  `<entity>/<project>/<run_name>` of type `model`;
- `wandb://<entity>/<project>/<artifact>[:<version>]`;
- `wandb://run/<run_name>[:<version>]`: WANDB_ENTITY / WANDB_PROJECT from the settings.
`<version>` is `vN` or any alias. With a version, that one checkpoint is evaluated (and `--checkpoints` other
than `latest` is refused: it would be ignored); without, the collection's versions (`api.artifacts(type,
name)`) go through `--checkpoints`. Each version is downloaded once into a content-addressed cache under
DATA_DIR and checked with `verify()` (download alone does not catch corrupted bytes).

Metta's checkpoints: Metta logs each checkpoint as a `model` artifact whose metadata holds its `epoch` (and
`run_name`): `metta/rl/checkpoint_manager.py` + `metta/rl/wandb.py` (collection `<run>`, file `model.pt`,
metadata `run_name, epoch, agent_step, total_time, score`) and later `metta/rl/training/uploader.py`
(collection `policy-<epoch>`, metadata `epoch, agent_step[, final, score, avg_reward]`). A version with an
`epoch` in its metadata, or else whose single file or directory is named `<run>:v<epoch>` (read from the
manifest, no download), is checkpoint `<run>` (the metadata's `run_name`, the file's run, or the
collection), version `v<epoch>`, and the collection is ordered by epoch; its URI keeps the artifact version
(`wandb://e/p/name:v3`). Listing reads metadata for free; manifests are fetched only for versions without an
`epoch`, and only if the newest of them is Metta-named, so a plain collection costs one manifest. Collections
without epochs keep their artifact versions `v0..vN`; mixes, several runs and repeated epochs are refused
(evaluator/sources/selection.py).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from evaluator.clients.wandb import api, require_key, wandb_errors
from evaluator.sources import Candidate, SourceSettings
from evaluator.sources.files import CHECKPOINT_SUFFIXES, SPEC_FILENAMES, epoch_of, is_policy_dir, zip_directory
from evaluator.sources.selection import EpochOf, by_epoch
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


def uri_version(uri: str) -> str | None:
    """The version or alias after the artifact's name (`v3`, `latest`, `best`), if the URI has one."""
    return parse_wandb_uri(uri, SourceSettings()).version


def candidates(uri: str, settings: SourceSettings) -> list[Candidate]:
    ref = parse_wandb_uri(uri, settings)
    client = api(require_key(settings.wandb_api_key, uri), uri)
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
        epochs = artifact_epochs(artifacts)
    found = [_candidate(artifact, ref, settings, epoch) for artifact, epoch in zip(artifacts, epochs, strict=True)]
    labels = [f"{ref.name}:{artifact.version}" for artifact in artifacts]
    return by_epoch(found, epochs, labels, f"W&B artifact collection {ref.collection}")


def artifact_epochs(artifacts: list) -> list[EpochOf | None]:
    """(run, epoch) of each version, oldest first: from its metadata, else from its manifest's names. Manifests
    cost a request each, so they are read only if the newest version lacking metadata is Metta-named."""
    epochs: list[EpochOf | None] = [metadata_epoch(a) for a in artifacts]
    unknown = [i for i, epoch in enumerate(epochs) if epoch is None]
    if unknown and (newest := manifest_epoch(artifacts[unknown[-1]])) is not None:
        epochs[unknown[-1]] = newest
        for i in unknown[:-1]:
            epochs[i] = manifest_epoch(artifacts[i])
    return epochs


def metadata_epoch(artifact) -> EpochOf | None:
    """Metta's upload metadata: `epoch` (an int), and `run_name` when it says (else the collection's name)."""
    metadata = artifact.metadata or {}
    epoch, run = metadata.get("epoch"), metadata.get("run_name")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        return None
    return (run if isinstance(run, str) and run else artifact.name.split(":")[0], epoch)


def manifest_epoch(artifact) -> EpochOf | None:
    """The epoch of an artifact holding one file `<run>:v<epoch>[.zip]` or one bundle directory so named."""
    paths = list(artifact.manifest.entries)
    tops = {path.split("/", 1)[0] for path in paths}
    if len(tops) != 1:
        return None
    [top] = tops
    is_file = paths == [top]
    is_bundle = any(f"{top}/{name}" in paths for name in SPEC_FILENAMES)
    return epoch_of(top) if is_file or is_bundle else None


def _candidate(artifact, ref: ArtifactRef, settings: SourceSettings, epoch: EpochOf | None) -> Candidate:
    uri = f"wandb://{ref.collection}:{artifact.version}"
    name, version = (epoch[0], f"v{epoch[1]}") if epoch else (ref.name, artifact.version)
    return Candidate(name=name, uri=uri, version=version, fetch=lambda: _fetch(artifact, uri, settings))


def _fetch(artifact, uri: str, settings: SourceSettings) -> bytes:
    """Download into `cache/wandb/<artifact digest>/` once; later runs reuse the verified copy. A download that
    fails (a file gone, the connection cut off after the client's retries) or fails `verify()` leaves nothing
    behind and raises, failing this checkpoint alone."""
    root = settings.download_cache_dir / artifact.digest
    if not (root / ".verified").exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=".download-"))
        try:
            _download_verified(artifact, staging, uri)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        (staging / ".verified").touch()
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    return checkpoint_bytes(root, uri)


def _download_verified(artifact, staging: Path, uri: str) -> None:
    with wandb_errors(uri):
        artifact.download(root=str(staging), skip_cache=True)
    try:
        artifact.verify(root=str(staging))
    except ValueError as exc:
        raise PolicyError(f"{uri} failed verification ({exc}); the download is corrupt") from None


def checkpoint_bytes(root: Path, uri: str) -> bytes:
    """The artifact's checkpoint: a policy directory (zipped; at the root, or the root's only entry, as in a
    `<run>:v<epoch>/` bundle), or its single checkpoint file."""
    entries = [p for p in root.iterdir() if p.name != ".verified"]
    for bundle in [root] + (entries if len(entries) == 1 else []):
        if is_policy_dir(bundle):
            return zip_directory(bundle, exclude=(".verified",))
    files = [p for p in root.rglob("*") if p.is_file() and p.name != ".verified"]
    checkpoints = [p for p in files if p.name.endswith(CHECKPOINT_SUFFIXES)] or files
    if len(checkpoints) != 1:
        names = ", ".join(sorted(p.name for p in checkpoints)) or "none"
        raise PolicyError(f"{uri} should hold one checkpoint file, found: {names}")
    return checkpoints[0].read_bytes()
