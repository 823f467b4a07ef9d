"""`s3://bucket/key` (one checkpoint) and `s3://bucket/prefix/` (every checkpoint object under it, in
natural order of their keys)."""

from __future__ import annotations

from evaluator.s3 import S3Location, client, parse_s3_uri, s3_errors
from evaluator.sources import Candidate, SourceSettings
from evaluator.sources.files import CHECKPOINT_SUFFIXES, checkpoint_name, natural_key
from sim.errors import UsageError


def candidates(uri: str, settings: SourceSettings) -> list[Candidate]:
    location = parse_s3_uri(uri)
    s3 = client()
    if location.key and not location.key.endswith("/"):
        with s3_errors(uri):
            s3.head_object(Bucket=location.bucket, Key=location.key)
        return [_candidate(s3, location, "v1")]
    with s3_errors(uri):
        keys = [
            item["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.key)
            for item in page.get("Contents", [])
        ]
    keys = sorted((k for k in keys if k.endswith(CHECKPOINT_SUFFIXES)), key=natural_key)
    if not keys:
        raise UsageError(
            f"no checkpoint objects under {uri} (expected keys ending in {', '.join(CHECKPOINT_SUFFIXES)})"
        )
    return [_candidate(s3, S3Location(location.bucket, key), f"v{i}") for i, key in enumerate(keys, start=1)]


def _candidate(s3, location: S3Location, version: str) -> Candidate:
    def fetch() -> bytes:
        with s3_errors(location.uri):
            return s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()

    name = checkpoint_name(location.key.rsplit("/", 1)[-1])
    return Candidate(name=name, uri=location.uri, version=version, fetch=fetch)
