"""`ray job submit` for real: a Ray head started for this module only (`ray start --head --block` on free
ports, its own temp dir and auth token, in its own process session), jobs submitted with Ray's own CLI, the
report cut out of `ray job logs` between the markers, the head stopped by the ids of its session's processes.

The working dir: the successful job uploads a minimal `--working-dir` (copies of the three packages, about
0.3 MB) instead of the checkout, whose .venv/ and data/ Ray would skip only through .gitignore; the driver and
the actors then import that uploaded code, as `--working-dir .` would on a remote cluster. The failing job
uploads nothing and runs the installed console script, as jobs do on our image (docs/ray-job-submit.md).
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import pytest

from evaluator.cli.app import MARKER_END, MARKER_START
from tests.support.ray_head import RayHead, running_head

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("evaluator", "actors", "sim")


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory):
    with running_head(tmp_path_factory.mktemp("ray")) as head:
        yield head


@pytest.fixture(scope="module")
def working_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("job")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, directory / package, ignore=shutil.ignore_patterns("__pycache__"))
    return directory


def submit(head: RayHead, submission_id: str, env_vars: dict[str, str], *entrypoint: str, working_dir: Path | None):
    upload = ["--working-dir", str(working_dir)] if working_dir else []
    return head.ray(
        "job",
        "submit",
        "--address",
        head.dashboard_url,
        "--submission-id",
        submission_id,
        *upload,
        "--runtime-env-json",
        json.dumps({"env_vars": env_vars}),
        "--",
        *entrypoint,
        timeout_s=240,
    )


def job_details(head: RayHead, submission_id: str) -> dict:
    """The job as Ray's state API lists it (status, driver_node_id, ...)."""
    listed = head.ray(
        "list", "jobs", "--address", head.dashboard_url, "--filter", f"submission_id={submission_id}", "--detail",
        "--format", "json",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-2000:]
    (job,) = json.loads(listed.stdout)
    return job


def job_logs(head: RayHead, submission_id: str) -> str:
    logs = head.ray("job", "logs", "--address", head.dashboard_url, submission_id)
    assert logs.returncode == 0, logs.stderr[-2000:]
    return logs.stdout


def between_markers(logs: str) -> dict:
    lines = logs.splitlines()
    assert lines.count(MARKER_START) == 1 and lines.count(MARKER_END) == 1, logs[-3000:]
    start, end = lines.index(MARKER_START), lines.index(MARKER_END)
    return json.loads("\n".join(lines[start + 1 : end]))


def test_submitted_job_attaches_to_the_cluster_and_reports(head: RayHead, working_dir: Path, tmp_path: Path):
    submission_id = f"smoke-{secrets.token_hex(4)}"
    data_dir = tmp_path / "data"
    done = submit(
        head,
        submission_id,
        {"DATA_DIR": str(data_dir), "RUN_NAME": "rayjob-smoke"},
        *("python", "-m", "evaluator", "run", "--markers", "-p", "builtin://navigator", "--suite", "smoke"),
        "--no-progress",
        working_dir=working_dir,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    job = job_details(head, submission_id)
    assert job["status"] == "SUCCEEDED"

    report = between_markers(job_logs(head, submission_id))
    assert report["simulation_suite"] == "smoke" and report["run_name"] == "rayjob-smoke"
    (policy,) = report["policies"]
    (checkpoint,) = policy["checkpoints"]
    assert policy["policy_uri"] == "builtin://navigator" and checkpoint["error"] is None
    assert checkpoint["metrics"]["suite_scores"]["smoke/score"] > 0
    # Attached, not a second Ray: every actor ran on the node of the job's driver, which is our head's.
    assert report["workers"] and {w["node_id"] for w in report["workers"]} == {job["driver_node_id"]}
    assert report["timing"]["workers"] == len(report["workers"]) <= head.num_cpus
    # The runtime env's variables reached the CLI: the run was written where DATA_DIR points.
    assert json.loads((data_dir / "rayjob-smoke" / "report.json").read_text()) == report


def test_failing_job_ends_failed_with_the_error_json(head: RayHead, tmp_path: Path):
    submission_id = f"bad-uri-{secrets.token_hex(4)}"
    done = submit(
        head,
        submission_id,
        {"POLICY_URI": "/no/such/file.pt", "DATA_DIR": str(tmp_path)},
        "policy-evaluator",
        "entrypoint",
        working_dir=None,
    )
    assert done.returncode != 0
    assert job_details(head, submission_id)["status"] == "FAILED"
    error = between_markers(job_logs(head, submission_id))
    assert set(error) == {"error", "traceback", "policy_uri", "retryable"} and error["retryable"] is False
    assert error["policy_uri"] == "/no/such/file.pt" and "/no/such/file.pt" in error["error"]
