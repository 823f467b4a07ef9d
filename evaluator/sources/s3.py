"""`s3://bucket/key` (one checkpoint) and `s3://bucket/prefix/` (every checkpoint under it).

Under a prefix, the checkpoints are the objects whose keys end in a checkpoint suffix, and the policy bundles:
"directories" `<dir>/` holding a `policy_spec.json` or `cogames.toml` key, each one checkpoint fetched as a
deterministic zip of every object under it (the same bytes, hence digest, as the same directory on disk).
Metta's layout (`<run>:v<epoch>.zip`, `<run>:v<epoch>/`) is checkpoint `<run>`, version `v<epoch>`, ordered
by epoch; other checkpoints are natural-sorted by key with versions `v1..vN`; mixes are refused (the rules are
in evaluator/sources/selection.py). Keys with a hidden component below the prefix and `trainer_state.pt` are
never checkpoints. `s3://bucket/key` with no object at `key` is read as the prefix `key/`, so
`s3://bucket/dir/run:v30` names that one bundle, as `s3://bucket/dir/run:v30/` does.
"""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import ClientError

from evaluator.clients.s3 import S3Location, client, download, parse_s3_uri, s3_errors
from evaluator.sources import Candidate, SourceSettings
from evaluator.sources.files import (
    CHECKPOINT_SUFFIXES,
    SPEC_FILENAMES,
    checkpoint_name,
    epoch_of,
    is_hidden_or_state,
    natural_key,
    zip_members,
)
from evaluator.sources.selection import by_epoch
from sim.errors import UsageError

_MISSING = ("404", "NoSuchKey", "NotFound")


def candidates(uri: str, settings: SourceSettings) -> list[Candidate]:
    location = parse_s3_uri(uri)
    s3 = client()
    keys: list[str] = []
    if location.key and not location.key.endswith("/"):
        if _object_exists(s3, location):
            return [_file_candidate(s3, location, position=1)]
        location = S3Location(location.bucket, location.key + "/")
        keys = _list(s3, location)
        if not keys:
            raise UsageError(f"S3 object {uri} does not exist")
    keys = keys or _list(s3, location)
    bundles = _bundles(keys, location.key)
    files = [
        k
        for k in keys
        if k.endswith(CHECKPOINT_SUFFIXES) and _visible(k, location.key) and not any(map(k.startswith, bundles))
    ]
    members = sorted([*(root for root, inside in bundles.items() if inside is not None), *files], key=natural_key)
    if not members:
        raise UsageError(
            f"no checkpoint objects under {uri} (expected keys ending in {', '.join(CHECKPOINT_SUFFIXES)} "
            f"or policy directories with {SPEC_FILENAMES[0]})"
        )
    found = [_member_candidate(s3, location.bucket, key, bundles.get(key), i) for i, key in enumerate(members, 1)]
    labels = [_basename(key) or location.bucket for key in members]
    return by_epoch(found, [epoch_of(label) for label in labels], labels, uri)


def uri_version(uri: str) -> str | None:
    """The version a key names: `v30` of Metta's `run:v30/`, `run:v30` or `run:v30.zip`; a plain key names none."""
    epoch = epoch_of(_basename(uri.removeprefix("s3://")))
    return f"v{epoch[1]}" if epoch else None


def _list(s3, location: S3Location) -> list[str]:
    with s3_errors(location.uri):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.key)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _object_exists(s3, location: S3Location) -> bool:
    """False for a missing object (the key may then name a "directory"); other failures are UsageErrors."""
    with s3_errors(location.uri):
        try:
            s3.head_object(Bucket=location.bucket, Key=location.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise
    return True


def _bundles(keys: list[str], prefix: str) -> dict[str, list[str] | None]:
    """Bundle root (`<dir>/`, or `prefix` itself) -> the keys under it, outermost roots only. A hidden root
    maps to None: neither it nor anything under it is a checkpoint."""
    roots = sorted({k[: len(k) - len(_basename(k))] for k in keys if _basename(k) in SPEC_FILENAMES}, key=len)
    bundles: dict[str, list[str] | None] = {}
    for root in roots:
        if root.startswith(prefix) and not any(map(root.startswith, bundles)):
            inside = [k for k in keys if k.startswith(root) and not k.endswith("/")]
            bundles[root] = inside if root == prefix or _visible(root, prefix) else None
    return bundles


def _visible(key: str, prefix: str) -> bool:
    """No hidden component below `prefix` (an upload in progress, tooling state), and no optimizer state."""
    parts = key[len(prefix) :].rstrip("/").split("/")
    return not any(part.startswith(".") for part in parts) and not is_hidden_or_state(parts[-1])


def _basename(key: str) -> str:
    return key.rstrip("/").rsplit("/", 1)[-1]


def _member_candidate(s3, bucket: str, key: str, inside: list[str] | None, position: int) -> Candidate:
    if inside is None:
        return _file_candidate(s3, S3Location(bucket, key), position)
    return _bundle_candidate(s3, bucket, key, inside, position)


def _file_candidate(s3, location: S3Location, position: int) -> Candidate:
    def fetch() -> bytes:
        return _read(s3, location)

    return _named(_basename(location.key), location.uri, position, fetch)


def _bundle_candidate(s3, bucket: str, root: str, keys: list[str], position: int) -> Candidate:
    """One checkpoint for the bundle at `root`: its objects, downloaded one by one into a deterministic zip."""

    def fetch() -> bytes:
        members = ((key[len(root) :], lambda key=key: _read(s3, S3Location(bucket, key))) for key in keys)
        return zip_members(members)

    return _named(_basename(root) or bucket, f"s3://{bucket}/{root}", position, fetch)


def _read(s3, location: S3Location) -> bytes:
    return download(s3, location)


def _named(label: str, uri: str, position: int, fetch: Callable[[], bytes]) -> Candidate:
    epoch = epoch_of(label)
    name, version = (epoch[0], f"v{epoch[1]}") if epoch else (checkpoint_name(label), f"v{position}")
    return Candidate(name=name, uri=uri, version=version, fetch=fetch)
