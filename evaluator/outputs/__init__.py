"""OUTPUT_URI: where a finished run is delivered besides DATA_DIR.

- a path or `file://`: the run directory copied there (staged under a temp name, then renamed);
- `s3://bucket/prefix`: every file uploaded under `prefix/<run_name>/`, report.json last;
- `wandb://entity/project[/run_id]`: a W&B run (job type `policy_evaluation`) with Metta's summary keys,
  a table of per-environment results and report.json as an `evaluation_results` artifact.
Delivery is complete or absent: a failure raises `OutputError`, which the driver records in the report
and turns into exit code 1. `preflight_run` is what every run checks before any work (evaluate and sweep
alike). Light on purpose: the webhook service reads delivered reports with `output_kind` and `delivered_url`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from evaluator.sources import SourceSettings, path_of, scheme_of
from sim.errors import EvaluatorError, UsageError

if TYPE_CHECKING:
    from evaluator.config import Storage
    from evaluator.reduce.report import Report


class OutputError(EvaluatorError):
    """Delivering the results failed (nothing half-delivered is left behind where we can help it)."""


class OutputKind(StrEnum):
    FILE = "file"
    S3 = "s3"
    WANDB = "wandb"


def output_kind(output_uri: str) -> OutputKind:
    scheme = scheme_of(output_uri)
    if scheme not in OutputKind.__members__.values():
        raise UsageError(
            f"OUTPUT_URI scheme {scheme}:// is not supported; use a path, file://, s3://bucket/prefix "
            "or wandb://entity/project[/run_id]"
        )
    return OutputKind(scheme)


def preflight_run(storage: Storage, settings: SourceSettings) -> None:
    """What a run checks before it lists, claims or evaluates anything, so that no work is lost to a bad
    destination: DATA_DIR is writable and OUTPUT_URI can take the results."""
    from evaluator.reduce.run_directory import check_writable

    check_writable(storage.data_dir)
    if storage.output_uri:
        preflight(storage.output_uri, settings)


def preflight(output_uri: str, settings: SourceSettings) -> None:
    """Refuse an OUTPUT_URI that cannot work before any evaluation runs (hours of work would be lost)."""
    kind = output_kind(output_uri)
    if kind is OutputKind.S3:
        from evaluator.clients.s3 import client, parse_s3_uri, s3_errors

        location = parse_s3_uri(output_uri)
        with s3_errors(f"s3://{location.bucket}"):
            client().head_bucket(Bucket=location.bucket)
    elif kind is OutputKind.WANDB:
        from evaluator.clients.wandb import require_key
        from evaluator.outputs.wandb import parse_output_uri

        parse_output_uri(output_uri)
        require_key(settings.wandb_api_key, output_uri)


def delivered_url(output_uri: str, run_name: str, relative: str) -> str | None:
    """Where a file of the run directory ends up once delivered (None: it stays local only)."""
    kind = output_kind(output_uri)
    if kind is OutputKind.S3:
        return f"{output_uri.rstrip('/')}/{run_name}/{relative}"
    if kind is OutputKind.FILE:
        return (path_of(output_uri) / run_name / relative).resolve().as_uri()
    return None


def with_delivered_replay_urls(report: Report, run_dir: Path, output_uri: str) -> Report:
    """Point replay URLs at the delivered copies, so a report read anywhere links to reachable replays."""
    local_prefix = run_dir.resolve().as_uri() + "/"
    policies = []
    for policy in report.policies:
        checkpoints = []
        for checkpoint in policy.checkpoints:

            def delivered(url: str) -> str:
                if url.startswith(local_prefix):
                    return delivered_url(output_uri, run_dir.name, url.removeprefix(local_prefix)) or url
                return url

            update = {
                "replay_url": checkpoint.replay_url and delivered(checkpoint.replay_url),
                "replays": {env: delivered(url) for env, url in checkpoint.replays.items()},
            }
            checkpoints.append(checkpoint.model_copy(update=update))
        policies.append(policy.model_copy(update={"checkpoints": checkpoints}))
    return report.model_copy(update={"policies": policies})


def deliver(run_dir: Path, report: Report, output_uri: str, settings: SourceSettings) -> None:
    kind = output_kind(output_uri)
    if kind is OutputKind.FILE:
        from evaluator.outputs.files import copy_run

        copy_run(run_dir, output_uri)
    elif kind is OutputKind.S3:
        from evaluator.outputs.s3 import upload_run

        upload_run(run_dir, output_uri)
    else:
        from evaluator.outputs.wandb import log_run

        log_run(run_dir, report, output_uri, settings)
