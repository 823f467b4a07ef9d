"""OUTPUT_URI s3://bucket/prefix: upload the run directory under `prefix/<run_name>/`, report.json last.

boto3's managed transfer does multipart uploads for large files and aborts a multipart upload that
fails; botocore's retry config covers transient errors. If any file fails, the objects already uploaded
are deleted, so the results are complete or absent.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from evaluator.clients.s3 import client, parse_s3_uri, s3_errors
from evaluator.outputs import OutputError
from sim.errors import EvaluatorError


def upload_run(run_dir: Path, output_uri: str) -> list[str]:
    location = parse_s3_uri(output_uri.rstrip("/") + "/")
    prefix = f"{location.key}{run_dir.name}/"
    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    files.sort(key=lambda p: p.name == "report.json")  # the report marks a complete upload: it goes last
    s3 = client()
    uploaded: list[str] = []
    try:
        for path in files:
            key = prefix + path.relative_to(run_dir).as_posix()
            with s3_errors(f"s3://{location.bucket}/{key}"):
                s3.upload_file(str(path), location.bucket, key)
            uploaded.append(key)
    except EvaluatorError as exc:  # denied, missing bucket, S3 unreachable: nothing half-delivered
        _delete(s3, location.bucket, uploaded)
        raise OutputError(f"upload to {output_uri} failed: {exc}") from None
    return uploaded


def _delete(s3, bucket: str, keys: list[str]) -> None:
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        # Best effort: the upload already failed, and that failure is what we report.
        with contextlib.suppress(Exception):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
