"""The service's calls out: Ray's job API (submit, status, logs) and W&B (pinning an alias to a version).
Every function here blocks; the app runs them in its thread pool.

Exactly one job per artifact version: the submission id is derived from the pinned version
(`webhook.submission_id`), and Ray writes a job's record put-if-absent in the GCS, so of any number of
submissions with one id, from any number of replicas at once, one creates the job and the others are refused
(Ray 2.60 answers HTTP 500 with a traceback ending in "Job with submission_id ... already exists"). We do not
parse that answer: after a refused submission, a job existing under our id is the success condition; otherwise
the refusal is an error.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Literal

import requests
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict
from ray.exceptions import AuthenticationError
from ray.job_submission import JobStatus, JobSubmissionClient

from evaluator.cli import MARKER_END, MARKER_START
from evaluator.outputs import OutputKind, delivered_url, output_kind
from evaluator.report import Report
from evaluator.service.settings import ServiceSettings
from evaluator.service.webhook import ArtifactVersion, Delivery, submission_id
from evaluator.sources.files import path_of
from evaluator.sweep import SweepResult, SweptCheckpoint

logger = logging.getLogger(__name__)

_NETWORK_ERRORS = (ConnectionError, requests.exceptions.RequestException, AuthenticationError)


class ClusterUnavailable(Exception):
    """Ray's job API cannot be reached or refuses our token: 503, and W&B retries."""


class SubmitRefused(Exception):
    """Ray refused the submission and no job exists under its id: our request is wrong (502)."""


class JobNotFound(Exception):
    """No job with that id on the cluster (404)."""


class ArtifactNotFound(Exception):
    """The delivery names an artifact version W&B does not know, or an alias we cannot pin (422)."""


class WandbUnavailable(Exception):
    """W&B could not be asked which version an alias points at (503, retried)."""


@dataclass(frozen=True)
class Submission:
    job_id: str
    policy_uri: str
    created: bool
    """False: an earlier delivery of this version created the job."""


class JobView(BaseModel):
    """GET /jobs/{id}: Ray's status and, once the job ended, what it reported."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    status: str
    message: str | None = None
    artifact: str | None = None
    policy_uri: str | None = None
    report: Report | None = None
    report_source: Literal["output_uri", "logs"] | None = None
    checkpoints: list[SweptCheckpoint] | None = None
    """Each checkpoint's state, when the job was a sweep (the default entrypoint)."""
    error: str | None = None


class RayJobs:
    """One JobSubmissionClient, connected on first use (its constructor calls the cluster) and kept."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._client: JobSubmissionClient | None = None
        self._lock = threading.Lock()

    def _connect(self) -> JobSubmissionClient:
        with self._lock:
            if self._client is None:
                token = self._settings.ray_auth_token
                headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else None
                try:
                    self._client = JobSubmissionClient(self._settings.ray_address, headers=headers)
                except _NETWORK_ERRORS as exc:
                    raise ClusterUnavailable(_unreachable(self._settings.ray_address, exc)) from None
            return self._client

    def submit(self, artifact: ArtifactVersion, delivery: Delivery) -> Submission:
        """The job evaluating `artifact` (pinned): created now, or found from an earlier delivery."""
        job_id = submission_id(artifact)
        policy_uri = self._settings.policy_uri_template.format(**artifact.model_dump())
        metadata = {
            "source": "wandb-webhook",
            "artifact": str(artifact),
            "policy_uri": policy_uri,
            "run_name": job_id,
            "event_type": delivery.event_type,
            "event_author": delivery.event_author,
            "artifact_id": delivery.artifact_id,
            "alias": delivery.alias,
        }
        env = {**self._settings.job_env, "POLICY_URI": policy_uri, "RUN_NAME": job_id}
        client = self._connect()
        try:
            client.submit_job(
                entrypoint=self._settings.job_entrypoint,
                submission_id=job_id,
                runtime_env={"env_vars": env},
                metadata={key: value for key, value in metadata.items() if value is not None},
            )
            return Submission(job_id, policy_uri, created=True)
        except _NETWORK_ERRORS as exc:
            raise ClusterUnavailable(_unreachable(self._settings.ray_address, exc)) from None
        except RuntimeError as exc:
            if self._exists(client, job_id):
                return Submission(job_id, policy_uri, created=False)
            raise SubmitRefused(f"Ray refused the job for {artifact}: {_first_line(exc)}") from None

    def _exists(self, client: JobSubmissionClient, job_id: str) -> bool:
        try:
            client.get_job_info(job_id)
        except _NETWORK_ERRORS as exc:
            raise ClusterUnavailable(_unreachable(self._settings.ray_address, exc)) from None
        except RuntimeError:
            return False
        return True

    def check(self) -> str:
        """The job API's version; raises ClusterUnavailable (the readiness check)."""
        client = self._connect()
        try:
            return client.get_version()
        except (*_NETWORK_ERRORS, RuntimeError, ValueError) as exc:
            raise ClusterUnavailable(_unreachable(self._settings.ray_address, exc)) from None

    def view(self, job_id: str) -> JobView:
        client = self._connect()
        try:
            info = client.get_job_info(job_id)
        except _NETWORK_ERRORS as exc:
            raise ClusterUnavailable(_unreachable(self._settings.ray_address, exc)) from None
        except RuntimeError as exc:
            if "404" in str(exc):
                raise JobNotFound(job_id) from None
            raise ClusterUnavailable(f"Ray could not tell the job's status: {_first_line(exc)}") from None
        metadata = info.metadata or {}
        view = {
            "job_id": job_id,
            "status": JobStatus(info.status).value,
            "message": info.message,
            "artifact": metadata.get("artifact"),
            "policy_uri": metadata.get("policy_uri"),
        }
        if not JobStatus(info.status).is_terminal():
            return JobView(**view)
        report = self._delivered_report(metadata.get("run_name", job_id))
        if report is not None:
            return JobView(**view, report=report, report_source="output_uri")
        try:
            logs = client.get_job_logs(job_id)
        except _NETWORK_ERRORS as exc:
            raise ClusterUnavailable(_unreachable(self._settings.ray_address, exc)) from None
        return JobView(**view, **from_logs(logs))

    def _delivered_report(self, run_name: str) -> Report | None:
        """report.json where the job delivered it (file or s3 OUTPUT_URI); None when absent or unreadable."""
        uri = self._settings.output_uri
        if not uri or output_kind(uri) is OutputKind.WANDB:
            return None
        location = delivered_url(uri, run_name, "report.json")
        try:
            if output_kind(uri) is OutputKind.FILE:
                return Report.model_validate_json(path_of(location).read_bytes())
            from evaluator.s3 import client, parse_s3_uri

            target = parse_s3_uri(location)
            body = client().get_object(Bucket=target.bucket, Key=target.key)["Body"].read()
            return Report.model_validate_json(body)
        except (OSError, ValueError, ClientError, BotoCoreError) as exc:
            logger.info("no delivered report at %s (%s); reading the job's logs", location, _first_line(exc))
            return None


def from_logs(logs: str) -> dict[str, object]:
    """The JSON between the last pair of markers: a sweep's result, a run's report, or an error."""
    lines = logs.splitlines()
    if MARKER_START not in lines or MARKER_END not in lines:
        return {"error": "the job printed no result between the markers"}
    end = len(lines) - 1 - lines[::-1].index(MARKER_END)
    start = max(i for i in range(end) if lines[i] == MARKER_START)
    try:
        document = json.loads("\n".join(lines[start + 1 : end]))
        if "checkpoints" in document and "report" in document:
            result = SweepResult.model_validate(document)
            return {"report": result.report, "checkpoints": result.checkpoints, "report_source": "logs"}
        if "policies" in document:
            return {"report": Report.model_validate(document), "report_source": "logs"}
        return {"error": str(document.get("error", "unknown error"))}
    except (ValueError, AttributeError) as exc:  # not JSON, or not one of our documents
        return {"error": f"the job's result between the markers cannot be read: {_first_line(exc)}"}


def pin(artifact: ArtifactVersion, api_key: str | None) -> ArtifactVersion:
    """`artifact` with an alias (`:best`) replaced by the version it points at now (`:v7`)."""
    if artifact.pinned:
        return artifact
    if not api_key:
        raise ArtifactNotFound(f"{artifact} names an alias; the service needs WANDB_API_KEY to pin it to a version")
    import wandb.errors

    from evaluator.wandb_client import api

    try:
        version = api(api_key).artifact(str(artifact)).version
    except wandb.errors.CommError as exc:
        if "not found" in str(exc):
            raise ArtifactNotFound(f"W&B has no artifact version {artifact}") from None
        raise WandbUnavailable(f"W&B could not pin {artifact}: {_first_line(exc)}") from None
    except (wandb.errors.Error, requests.exceptions.RequestException) as exc:
        raise WandbUnavailable(f"W&B could not pin {artifact}: {_first_line(exc)}") from None
    return artifact.model_copy(update={"version": version})


def _unreachable(address: str, exc: BaseException) -> str:
    return f"the Ray cluster at {address} cannot be reached: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
