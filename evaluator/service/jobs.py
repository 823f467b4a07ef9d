"""The service's calls out: Ray's job API (submit, status, logs) and W&B (pinning an alias to a version).
Every function here blocks; the app runs them in its thread pool.

Exactly one job per artifact version: the submission id is derived from the pinned version
(`webhook.submission_id`), and Ray writes a job's record put-if-absent in the GCS, so of any number of
submissions with one id, from any number of replicas at once, one creates the job and the others are refused
(Ray 2.60 answers HTTP 500 with a traceback ending in "Job with submission_id ... already exists"). We do not
parse that answer: after a refused submission, a job existing under our id is the success condition; otherwise
the refusal is an error.

A job that exits 3 (`ExitCode.OUTAGE`: W&B, S3 or the cluster itself could not be reached) is resubmitted
once, as `<job id>-retry` (again put-if-absent, so replicas racing to resubmit make one job): by the app's
periodic check (`resubmit_outages`), and by GET /jobs/{id} of the failed job, which then shows the retry.
Any other failure is final: the input or the checkpoint is at fault, and running it again fails again.

Imports stay light (no evaluator.cli.app, no torch, no mettagrid): the service only reads what jobs print, and
names the variables a job reads from their declarations (`evaluator.options`, declarations only).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Literal

import requests
from pydantic import BaseModel, ConfigDict
from ray.exceptions import AuthenticationError
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

from evaluator.markers import last_marked
from evaluator.options import Checkpoints, PolicyUris, RunName, SweepCheckpoints, envvar
from evaluator.outputs import OutputKind, delivered_url, output_kind
from evaluator.reduce.report import Report
from evaluator.run.sweep_results import SweepResult, SweptCheckpoint
from evaluator.secrets import redact_text, redact_url
from evaluator.service.settings import ServiceSettings
from evaluator.service.webhook import ArtifactVersion, Delivery, submission_id
from evaluator.sources import path_of
from sim.errors import EvaluatorError, ExitCode, ServiceUnavailable, UsageError, first_line

logger = logging.getLogger(__name__)

_NETWORK_ERRORS = (ConnectionError, requests.exceptions.RequestException, AuthenticationError)
SOURCE = "wandb-webhook"
"""The `source` in the metadata of every job the service submits: what `resubmit_outages` looks at."""
RETRY_SUFFIX = "-retry"


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
    retry_of: str | None = None
    """Set when this job is the resubmission of `retry_of`, which exited 3 (an outage)."""


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
            "source": SOURCE,
            "artifact": str(artifact),
            "policy_uri": policy_uri,
            "run_name": job_id,
            "event_type": delivery.event_type,
            "event_author": delivery.event_author,
            "artifact_id": delivery.artifact_id,
            "alias": delivery.alias,
        }
        # The URI names the version: the selection must be `latest` (any other would be refused as an override).
        env = {**self._settings.job_env, envvar(PolicyUris): policy_uri, envvar(RunName): job_id}
        env |= {envvar(Checkpoints): "latest", envvar(SweepCheckpoints): "latest"}
        metadata = {key: value for key, value in metadata.items() if value is not None}
        created = self._submit_once(job_id, self._settings.job_entrypoint, {"env_vars": env}, metadata)
        return Submission(job_id, policy_uri, created=created)

    def _submit_once(self, job_id: str, entrypoint: str, runtime_env: dict, metadata: dict[str, str]) -> bool:
        """Submit under `job_id`; False when a job with that id exists already (Ray refused a second one)."""
        client = self._connect()
        try:
            client.submit_job(entrypoint=entrypoint, submission_id=job_id, runtime_env=runtime_env, metadata=metadata)
            return True
        except _NETWORK_ERRORS as exc:
            raise ClusterUnavailable(_unreachable(self._settings.ray_address, exc)) from None
        except RuntimeError as exc:
            if self._exists(client, job_id):
                return False
            raise SubmitRefused(f"Ray refused the job {job_id}: {first_line(exc)}") from None

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

    def resubmit_outages(self) -> list[str]:
        """Resubmit, once each, the service's jobs that exited 3 (an outage); the ids of the retries created."""
        client = self._connect()
        try:
            jobs = client.list_jobs()
        except (*_NETWORK_ERRORS, RuntimeError) as exc:
            raise ClusterUnavailable(_unreachable(self._settings.ray_address, exc)) from None
        return [job.submission_id + RETRY_SUFFIX for job in jobs if self._retry(job) and self._resubmit(job)]

    def _retry(self, info: JobDetails) -> bool:
        """Whether `info` is one of our jobs that ended in an outage and is not itself a retry."""
        metadata = info.metadata or {}
        outage = info.status == JobStatus.FAILED and info.driver_exit_code == ExitCode.OUTAGE
        return outage and metadata.get("source") == SOURCE and "retry_of" not in metadata

    def _resubmit(self, info: JobDetails) -> bool:
        """The job again, as `<id>-retry`, with its entrypoint, runtime_env and metadata; False if it exists."""
        metadata = {**(info.metadata or {}), "retry_of": info.submission_id}
        retry_id = info.submission_id + RETRY_SUFFIX
        created = self._submit_once(retry_id, info.entrypoint, info.runtime_env or {}, metadata)
        if created:
            logger.warning("job %s ended in an outage (exit 3): resubmitted as %s", info.submission_id, retry_id)
        return created

    def view(self, job_id: str) -> JobView:
        """Ray's status of the job and, once it ended, its report. A job that exited 3 is resubmitted (once),
        and the view is the retry's."""
        client = self._connect()
        try:
            info = client.get_job_info(job_id)
        except _NETWORK_ERRORS as exc:
            raise ClusterUnavailable(_unreachable(self._settings.ray_address, exc)) from None
        except RuntimeError as exc:
            if "404" in str(exc):
                raise JobNotFound(job_id) from None
            raise ClusterUnavailable(f"Ray could not tell the job's status: {first_line(exc)}") from None
        if self._retry(info):
            self._resubmit(info)
            return self.view(job_id + RETRY_SUFFIX)
        metadata = info.metadata or {}
        view = {
            "job_id": job_id,
            "status": JobStatus(info.status).value,
            "message": info.message,
            "artifact": metadata.get("artifact"),
            "policy_uri": metadata.get("policy_uri"),
            "retry_of": metadata.get("retry_of"),
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
            from evaluator.clients.s3 import client, download, parse_s3_uri

            return Report.model_validate_json(download(client(), parse_s3_uri(location)))
        except (OSError, ValueError, EvaluatorError) as exc:
            logger.info("no delivered report at %s (%s); reading the job's logs", location, first_line(exc))
            return None


def from_logs(logs: str) -> dict[str, object]:
    """The JSON between the last pair of markers: a sweep's result, a run's report, or an error."""
    marked = last_marked(logs)
    if marked is None:
        return {"error": "the job printed no result between the markers"}
    try:
        document = json.loads(marked)
        if "checkpoints" in document and "report" in document:
            result = SweepResult.model_validate(document)
            return {"report": result.report, "checkpoints": result.checkpoints, "report_source": "logs"}
        if "policies" in document:
            return {"report": Report.model_validate(document), "report_source": "logs"}
        return {"error": str(document.get("error", "unknown error"))}
    except (ValueError, AttributeError) as exc:  # not JSON, or not one of our documents
        return {"error": f"the job's result between the markers cannot be read: {first_line(exc)}"}


def pin(artifact: ArtifactVersion, api_key: str | None) -> ArtifactVersion:
    """`artifact` with an alias (`:best`) replaced by the version it points at now (`:v7`)."""
    if artifact.pinned:
        return artifact
    if not api_key:
        raise ArtifactNotFound(f"{artifact} names an alias; the service needs WANDB_API_KEY to pin it to a version")
    from evaluator.clients.wandb import KeyRejected, api, wandb_errors

    try:
        client = api(api_key, str(artifact))
        with wandb_errors(str(artifact)):
            version = client.artifact(str(artifact)).version
    except (ServiceUnavailable, KeyRejected) as exc:  # W&B down, or our key: not the delivery's fault (503)
        raise WandbUnavailable(f"W&B could not pin {artifact}: {exc}") from None
    except UsageError as exc:
        raise ArtifactNotFound(f"W&B has no artifact version {artifact}: {exc}") from None
    return artifact.model_copy(update={"version": version})


def _unreachable(address: str, exc: BaseException) -> str:
    """Served (503 bodies, /readyz) and logged: the address and the client's message without their secrets."""
    return f"the Ray cluster at {redact_url(address)} cannot be reached: {redact_text(first_line(exc))}"
