"""s3:// policies and OUTPUT_URI against moto's S3 server on 127.0.0.1 (real boto3, real S3 protocol)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from evaluator.config import EvalConfig
from evaluator.outputs import OutputError
from evaluator.outputs.s3 import upload_run
from evaluator.reduce.report import Report
from evaluator.run.driver import evaluate
from evaluator.sources import SourceSettings, fetch, resolve
from evaluator.sources.s3 import candidates
from sim.errors import ServiceUnavailable, UsageError
from tests.support.s3 import SECRET, deny_after


def test_prefix_lists_checkpoints_in_natural_order(s3):
    checkpoints = resolve("s3://policies/run/", "all")
    assert [(c.name, c.version) for c in checkpoints] == [("ckpt_1", "v1"), ("ckpt_2", "v2"), ("ckpt_10", "v3")]
    assert [c.uri for c in checkpoints][-1] == "s3://policies/run/ckpt_10.pt"
    [latest] = resolve("s3://policies/run/")
    assert latest.name == "ckpt_10" and latest.data == checkpoints[-1].data
    [one] = resolve("s3://policies/run/ckpt_2.pt")
    assert one.digest == checkpoints[1].digest


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://nobucket/run/", "S3 bucket of s3://nobucket/run/ does not exist"),
        ("s3://policies/run/ckpt_7.pt", "S3 object s3://policies/run/ckpt_7.pt does not exist"),
        ("s3://policies/empty/", "no checkpoint objects under s3://policies/empty/"),
    ],
)
def test_s3_source_errors_are_one_line(s3, uri: str, message: str):
    with pytest.raises(UsageError, match=message) as info:
        resolve(uri)
    assert "\n" not in str(info.value)


def test_access_denied(s3):
    with deny_after(0), pytest.raises(UsageError, match=r"access to s3://policies/run/ denied \(InvalidAccessKeyId\)"):
        resolve("s3://policies/run/")


def test_endpoint_down_is_an_outage(monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    with pytest.raises(ServiceUnavailable) as info:
        resolve("s3://policies/run/")
    assert str(info.value) == (
        f"cannot reach the S3 endpoint for s3://policies/run/ (http://127.0.0.1:{port}); check "
        "AWS_ENDPOINT_URL, or retry when it is up"
    )


def test_an_object_gone_or_denied_after_listing_fails_that_checkpoint_only(s3):
    """Listed, then deleted (another process pruning old checkpoints) or denied: those checkpoints carry their
    error, the others are fetched."""
    ckpt_1, ckpt_2, ckpt_10 = candidates("s3://policies/run/", SourceSettings())
    s3.delete_object(Bucket="policies", Key="run/ckpt_2.pt")
    fetched = [fetch(c) for c in (ckpt_1, ckpt_2, ckpt_10)]
    assert [c.error for c in fetched] == [None, "S3 object s3://policies/run/ckpt_2.pt does not exist", None]
    assert fetched[0].data and fetched[2].data and fetched[1].digest == ""
    with deny_after(0):
        denied = fetch(ckpt_10)
    assert (
        denied.error
        == "access to s3://policies/run/ckpt_10.pt denied (403); check the AWS credentials and the bucket policy"
    )


@pytest.mark.parametrize(
    "uri", ["s3://policies/runs/nav:v30.zip", "s3://policies/runs/nav:v30", "s3://policies/runs/nav:v30/"]
)
def test_a_key_naming_an_epoch_takes_latest_only(s3, uri: str):
    with pytest.raises(UsageError, match=rf"^{uri} names version v30, which --checkpoints all would override; "):
        resolve(uri, "all")


@pytest.mark.usefixtures("ray_session")
def test_s3_policy_and_s3_output_end_to_end(s3, tmp_path: Path, capsys: pytest.CaptureFixture):
    config = EvalConfig(
        policy_uris=("s3://policies/run/",),
        checkpoints="last:2",
        suite="smoke",
        episodes=1,
        data_dir=tmp_path,
        run_name="s3run",
        output_uri="s3://results/evals",
    )
    outcome = evaluate(config)
    assert not outcome.failed and outcome.report.output.error is None
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="results", Prefix="evals/s3run/")["Contents"]}
    assert {"evals/s3run/report.json", "evals/s3run/report.html", "evals/s3run/episodes.parquet"} <= keys
    uploaded = Report.model_validate_json(s3.get_object(Bucket="results", Key="evals/s3run/report.json")["Body"].read())
    assert [c.name for c in uploaded.policies[0].checkpoints] == ["ckpt_2", "ckpt_10"]
    for checkpoint in uploaded.policies[0].checkpoints:
        assert checkpoint.replay_url.startswith("s3://results/evals/s3run/replays/")
        assert checkpoint.replay_url.removeprefix("s3://results/") in keys
        assert all(url.removeprefix("s3://results/") in keys for url in checkpoint.replays.values())
    page = s3.get_object(Bucket="results", Key="evals/s3run/report.html")["Body"].read().decode()
    assert page.count('"src":"base64:') == 2 * 2, "the delivered page embeds its replays (it is read anywhere)"
    local = (tmp_path / "s3run" / "report.json").read_text()
    assert SECRET not in local and SECRET not in json.dumps(outcome.report.model_dump()) + capsys.readouterr().err


@pytest.mark.usefixtures("ray_session")
def test_failed_upload_is_an_error_and_leaves_nothing(s3, tmp_path: Path):
    config = EvalConfig(
        policy_uris=("builtin://navigator",), suite="smoke", episodes=1, data_dir=tmp_path, output_uri="s3://results/x"
    )
    with deny_after(1):  # the preflight's HeadBucket passes, the first upload is refused
        outcome = evaluate(config)
    assert outcome.failed
    assert "access to s3://results/x/" in outcome.report.output.error
    assert "Contents" not in s3.list_objects_v2(Bucket="results", Prefix="x/")
    saved = Report.model_validate_json((outcome.run_dir / "report.json").read_text())
    assert saved.output.error == outcome.report.output.error


def test_upload_to_missing_bucket(s3, tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.json").write_text("{}")
    with pytest.raises(OutputError, match="upload to s3://gone/p failed: S3 bucket .* does not exist"):
        upload_run(tmp_path / "run", "s3://gone/p")


def test_output_preflight_refuses_missing_bucket_before_evaluating(s3, tmp_path: Path):
    config = EvalConfig(policy_uris=("builtin://navigator",), suite="smoke", data_dir=tmp_path, output_uri="s3://gone")
    with pytest.raises(UsageError, match="S3 bucket of s3://gone does not exist"):
        evaluate(config)
