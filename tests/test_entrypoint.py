"""`policy-evaluator entrypoint`: environment variables only, JSON between the seed's markers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evaluator.cli.app import app
from evaluator.markers import MARKER_END, MARKER_START

pytestmark = pytest.mark.usefixtures("ray_session")
runner = CliRunner()


def between_markers(stdout: str) -> dict:
    lines = stdout.splitlines()
    start, end = lines.index(MARKER_START), lines.index(MARKER_END)
    assert start < end and lines[-1] == MARKER_END
    return json.loads("\n".join(lines[start + 1 : end]))


def entrypoint(env: dict[str, str]):
    base = {name: "" for name in ("POLICY_URI", "SIMULATION_SUITE", "OUTPUT_URI", "CHECKPOINTS", "RUN_NAME")}
    return runner.invoke(app, ["entrypoint"], env={**base, **env})


def test_env_only_run_on_smoke(tmp_path: Path):
    result = entrypoint(
        {"POLICY_URI": "builtin://navigator", "SIMULATION_SUITE": "smoke", "DATA_DIR": str(tmp_path), "RUN_NAME": "ep"}
    )
    assert result.exit_code == 0, result.stderr
    report = between_markers(result.stdout)
    assert report["run_name"] == "ep" and report["simulation_suite"] == "smoke"
    assert (tmp_path / "ep" / "report.json").is_file()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no policy given: pass --policy-uri or set POLICY_URI"),
        ({"POLICY_URI": "builtin://navigator", "SIMULATION_SUITE": "nope"}, "unknown suite 'nope'"),
        ({"POLICY_URI": "/no/such.pt", "SIMULATION_SUITE": "smoke"}, "does not exist"),
        ({"POLICY_URI": "wandb://e/p/model/r:v1", "WANDB_API_KEY": ""}, "needs W&B credentials: set WANDB_API_KEY"),
        ({"POLICY_URI": "builtin://navigator", "CHECKPOINTS": "newest"}, "invalid checkpoints"),
        ({"POLICY_URI": "builtin://navigator", "OUTPUT_URI": "ftp://x"}, "OUTPUT_URI scheme ftp:// is not supported"),
        ({"POLICY_URI": "builtin://navigator", "EPISODES": "ten"}, "Invalid value for '--episodes' (env var"),
        ({"POLICY_URI": "builtin://navigator", "DEVICE": "gpu"}, "Invalid value for '--device' (env var: 'DEVICE')"),
    ],
)
def test_every_failure_prints_error_json_between_markers_and_exits_1(tmp_path: Path, env: dict, message: str):
    result = entrypoint({"DATA_DIR": str(tmp_path), **env})
    assert result.exit_code == 1
    error = between_markers(result.stdout)
    assert message in error["error"] and set(error) == {"error", "traceback", "policy_uri", "retryable"}
    assert error["retryable"] is False
    assert result.stderr.strip().startswith("error: ")


def test_an_outage_exits_3_retryable(tmp_path: Path):
    """S3 unreachable: not the input's fault, so not the seed's exit 1 but 3, which the RayJob's backoff and the
    webhook service retry."""
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "x" * 20}
    result = entrypoint({"DATA_DIR": str(tmp_path), "POLICY_URI": "s3://policies/run/", **env})
    assert result.exit_code == 3, result.stderr
    error = between_markers(result.stdout)
    assert error["retryable"] is True and error["policy_uri"] == "s3://policies/run/"
    assert error["error"].startswith("cannot reach the S3 endpoint for s3://policies/run/ (http://127.0.0.1:9)")


def test_run_markers_flag(tmp_path: Path):
    result = runner.invoke(
        app,
        [
            "run",
            "--markers",
            "--no-progress",
            "-p",
            "builtin://random",
            "--suite",
            "smoke",
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0
    assert between_markers(result.stdout)["policies"][0]["policy_uri"] == "builtin://random"
