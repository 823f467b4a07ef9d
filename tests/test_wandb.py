"""wandb:// policies and OUTPUT_URI with the real wandb client against our fake W&B backend on 127.0.0.1.

The fake fails the test on any request it does not know (tests/support/fake_wandb.py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from evaluator.cli.app import app
from evaluator.clients.wandb import KeyRejected, api, wandb_errors
from evaluator.config import EvalConfig
from evaluator.run.driver import evaluate
from evaluator.sources import SourceSettings, resolve
from evaluator.sources.wandb import parse_wandb_uri
from sim.errors import ServiceUnavailable, UsageError
from tests.conftest import state_dict_bytes, tiny_model
from tests.support.fake_wandb import DROP, FakeWandb, reset_wandb
from tests.support.ray_head import free_ports

ENTITY, PROJECT = "metta-ai", "metta-research"


def seed_run(fake: FakeWandb, name: str = "nav_run", versions: int = 3) -> list:
    versions_made = []
    for seed in range(versions):
        model, kwargs = tiny_model(seed)
        aliases = ["latest"] + (["best"] if seed == 1 else [])
        files = {"model.pt": state_dict_bytes(model, kwargs)}
        versions_made.append(fake.add_artifact_version(ENTITY, PROJECT, name, files=files, aliases=aliases))
    return versions_made


def settings(fake: FakeWandb, tmp_path: Path, key: str | None = None) -> SourceSettings:
    return SourceSettings(data_dir=tmp_path / "data", wandb_api_key=key or fake.api_key)


def file_gets(fake: FakeWandb) -> int:
    return sum(1 for r in fake.requests if r.startswith("GET") and "manifest" not in r)


def test_uri_forms():
    defaults = SourceSettings(wandb_entity="ent", wandb_project="proj")
    assert parse_wandb_uri("wandb://e/p/model/run:v3", defaults).collection == "e/p/run"
    assert parse_wandb_uri("wandb://e/p/model/run:v3", defaults).type == "model"
    assert parse_wandb_uri("wandb://e/p/art:best", defaults).version == "best"
    ref = parse_wandb_uri("wandb://run/my_run", defaults)
    assert (ref.collection, ref.version, ref.type) == ("ent/proj/my_run", None, "model")
    for bad in ("wandb://e", "wandb://e/p/model/run/x:v1", "wandb://e/p/a:b:c", "wandb://run/"):
        with pytest.raises(UsageError, match="malformed W&B URI"):
            parse_wandb_uri(bad, defaults)


def test_download_by_alias_and_version_once_into_the_cache(fake_wandb: FakeWandb, tmp_path: Path):
    made = seed_run(fake_wandb)
    by_alias = resolve(f"wandb://{ENTITY}/{PROJECT}/model/nav_run:best", settings=settings(fake_wandb, tmp_path))
    [checkpoint] = by_alias
    assert (checkpoint.version, checkpoint.uri) == ("v1", f"wandb://{ENTITY}/{PROJECT}/nav_run:v1")
    assert checkpoint.data == made[1].files["model.pt"] and checkpoint.error is None
    downloads = file_gets(fake_wandb)
    [again] = resolve("wandb://run/nav_run:v1", settings=settings(fake_wandb, tmp_path))
    assert again.digest == checkpoint.digest
    assert file_gets(fake_wandb) == downloads, "a cached, verified version must not be downloaded again"


def test_all_versions_of_the_collection(fake_wandb: FakeWandb, tmp_path: Path):
    seed_run(fake_wandb)
    found = resolve("wandb://run/nav_run", "all", settings(fake_wandb, tmp_path))
    assert [c.version for c in found] == ["v0", "v1", "v2"]
    [latest] = resolve(f"wandb://{ENTITY}/{PROJECT}/nav_run", settings=settings(fake_wandb, tmp_path))
    assert latest.version == "v2"


def test_corrupted_download_fails_that_checkpoint_only(fake_wandb: FakeWandb, tmp_path: Path):
    made = seed_run(fake_wandb)
    fake_wandb.corrupt_file(made[0], "model.pt")
    first, second, third = resolve("wandb://run/nav_run", "all", settings(fake_wandb, tmp_path))
    assert "failed verification" in first.error and "Digest mismatch" in first.error
    assert second.error is None and third.error is None
    assert not list((tmp_path / "data" / "cache" / "wandb").glob(f"{made[0].digest}*"))


def test_download_failures_fail_their_checkpoint_only(fake_wandb: FakeWandb, tmp_path: Path):
    """A file gone from W&B's storage (404 from the presigned URL and from the server's own fallback) and a
    download cut off halfway fail their versions; the third version is fetched; nothing half-written stays."""
    made = seed_run(fake_wandb)
    fake_wandb.fail_file(made[0], "model.pt", 404)
    fake_wandb.fail_file(made[1], "model.pt", DROP)
    gone, cut, fine = resolve("wandb://run/nav_run", "all", settings(fake_wandb, tmp_path))
    assert gone.error == (
        f"W&B storage has no file for wandb://{ENTITY}/{PROJECT}/nav_run:v0 (HTTP 404); the artifact's files are gone"
    )
    assert cut.error.startswith(f"the connection to W&B failed while accessing wandb://{ENTITY}/{PROJECT}/nav_run:v1:")
    assert "Connection broken" in cut.error
    assert fine.error is None and fine.data == made[2].files["model.pt"]
    assert [p.name for p in (tmp_path / "data" / "cache" / "wandb").iterdir()] == [made[2].digest]


@pytest.mark.parametrize(
    ("uri", "key", "error", "message"),
    [
        ("wandb://run/missing:v0", None, UsageError, "W&B request for wandb://run/missing:v0 failed: .*not found"),
        ("wandb://run/missing", None, UsageError, "W&B request for wandb://run/missing failed: .*not found"),
        (
            "wandb://run/nav_run:v0",
            "wrong" + "0" * 35,
            KeyRejected,
            re.escape("W&B rejected the API key while accessing wandb://run/nav_run:v0 (HTTP 401); check WANDB_API_KEY")
            + "$",
        ),
        (
            "wandb://run/nav_run:v0",
            "bad-key-" + "0" * 32,
            KeyRejected,
            re.escape("W&B rejected the API key while accessing wandb://run/nav_run:v0 (API key must have 40+ ")
            + r"characters, has \d+\.\); check WANDB_API_KEY$",
        ),
    ],
)
def test_wandb_errors_are_one_line(
    fake_wandb: FakeWandb, tmp_path: Path, uri: str, key: str | None, error: type, message: str
):
    seed_run(fake_wandb, versions=1)
    with pytest.raises(error, match=message) as info:
        resolve(uri, settings=settings(fake_wandb, tmp_path, key))
    assert "\n" not in str(info.value)
    if key:
        assert key not in str(info.value)


def test_no_key_and_server_failing(fake_wandb: FakeWandb, tmp_path: Path):
    seed_run(fake_wandb, versions=1)
    with pytest.raises(UsageError, match="needs W&B credentials: set WANDB_API_KEY"):
        resolve("wandb://run/nav_run", settings=SourceSettings(data_dir=tmp_path))
    fake_wandb.down = True
    failing = rf"W&B at {fake_wandb.base_url} is failing \(HTTP 503\) while accessing wandb://run/nav_run; retry later"
    with pytest.raises(ServiceUnavailable, match=f"^{failing}$"):
        resolve("wandb://run/nav_run", settings=settings(fake_wandb, tmp_path))


@pytest.mark.parametrize(
    ("base_url", "diagnosis"),
    [
        ("http://127.0.0.1:{port}", "connection refused (nothing listens there); check WANDB_BASE_URL"),
        ("http://no-such-host.invalid", "host not found; check WANDB_BASE_URL"),
    ],
)
def test_an_unreachable_server_is_not_a_rejected_key(
    fake_wandb: FakeWandb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_url: str, diagnosis: str
):
    """The client reports its failed login check as an authentication error even when nothing answered: the
    diagnosis asks the server itself, and says the key is fine (exit 3, not "check WANDB_API_KEY")."""
    (port,) = free_ports(1)
    url = base_url.format(port=port)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    reset_wandb()
    with pytest.raises(ServiceUnavailable) as info:
        resolve("wandb://run/nav_run", settings=settings(fake_wandb, tmp_path))
    assert str(info.value) == f"cannot reach W&B at {url} while accessing wandb://run/nav_run: {diagnosis}" + (
        ", or retry when W&B is up" if "refused" in diagnosis else ""
    )
    assert "WANDB_API_KEY" not in str(info.value)


def test_request_failures_after_login_tell_answers_from_outages(fake_wandb: FakeWandb, tmp_path: Path):
    """wandb-core reports both a refused request and one it gave up retrying with HTTP status 0; the words
    "giving up after" (evaluator.clients.wandb.GAVE_UP) tell them apart, against the real client."""
    seed_run(fake_wandb, versions=1)
    client = api(fake_wandb.api_key)
    fake_wandb.fail_graphql("ArtifactMembershipByName", "permission denied")
    with pytest.raises(UsageError, match="^W&B request for x failed: .*permission denied$"), wandb_errors("x"):
        client.artifact(f"{ENTITY}/{PROJECT}/nav_run:v0")
    fake_wandb.fail_graphql("ArtifactMembershipByName", "internal error", status=500)
    kept_failing = rf"^W&B at {fake_wandb.base_url} kept failing while accessing x: "
    with pytest.raises(ServiceUnavailable, match=kept_failing), wandb_errors("x"):
        client.artifact(f"{ENTITY}/{PROJECT}/nav_run:v0")
    fake_wandb.graphql_failures.clear()
    fake_wandb.down = True
    with pytest.raises(ServiceUnavailable, match=r"is failing \(HTTP 503\) while accessing x"), wandb_errors("x"):
        client.artifact(f"{ENTITY}/{PROJECT}/nav_run:v0")


@pytest.mark.parametrize("selector", ["all", "last:2", "v1"])
def test_a_version_in_the_uri_and_another_selection_are_refused(fake_wandb: FakeWandb, tmp_path: Path, selector):
    seed_run(fake_wandb)
    expected = (
        f"wandb://run/nav_run:latest names version latest, which --checkpoints {selector} would override; drop "
        "the version from the URI to select among its checkpoints, or drop --checkpoints to evaluate latest"
    )
    with pytest.raises(UsageError) as info:
        resolve("wandb://run/nav_run:latest", selector, settings(fake_wandb, tmp_path))
    assert str(info.value) == expected
    assert not [r for r in fake_wandb.requests if "graphql" in r], "refused before asking W&B anything"
    [latest] = resolve("wandb://run/nav_run:latest", "latest", settings(fake_wandb, tmp_path))
    assert latest.version == "v2"


@pytest.mark.usefixtures("ray_session")
def test_wandb_policy_to_wandb_output_end_to_end(fake_wandb: FakeWandb, tmp_path: Path):
    seed_run(fake_wandb)
    config = EvalConfig(
        policy_uris=("wandb://run/nav_run",),
        checkpoints="last:2",
        suite="smoke",
        episodes=1,
        data_dir=tmp_path / "data",
        run_name="wb_eval",
        output_uri=f"wandb://{ENTITY}/{PROJECT}/evalrun1",
        wandb_api_key=fake_wandb.api_key,
    )
    outcome = evaluate(config)
    assert not outcome.failed, outcome.report.output
    run = fake_wandb.runs[(ENTITY, PROJECT, "evalrun1")]
    assert run.job_type == "policy_evaluation" and run.complete and run.exitcode == 0
    metta_keys = {"evaluator/eval_smoke/score", "evaluator/eval_smoke/tiny_room", "evaluator/eval_smoke/tiny_random"}
    metta_keys.add("overview/evaluator/smoke_score")
    seed_keys = {"smoke/score", "smoke/tiny_room", "smoke/tiny_random", "reward_avg"}
    assert seed_keys | metta_keys <= set(run.summary)
    for version in ("v1", "v2"):
        assert {f"nav_run:{version}/{key}" for key in seed_keys | metta_keys} <= set(run.summary)
    latest = outcome.report.policies[0].checkpoints[-1].metrics
    score = pytest.approx(latest.suite_scores["smoke/score"])
    assert run.summary["smoke/score"] == score
    assert run.summary["evaluator/eval_smoke/score"] == run.summary["overview/evaluator/smoke_score"] == score
    assert run.summary["evaluator/eval_smoke/tiny_room"] == pytest.approx(latest.environments["tiny_room"].score)
    cost = outcome.report.cost
    assert run.summary["cost/total_usd"] == pytest.approx(cost.total_usd)
    assert run.summary["cost/node_seconds/local"] == pytest.approx(cost.node_types["local"].node_seconds)
    table = run.table("evaluation")
    assert table["columns"][:5] == ["policy_uri", "checkpoint", "version", "digest", "env"]
    assert len(table["data"]) == 2 * 2
    page = next(body for name, body in run.files.items() if name.startswith("media/html/") and name.endswith(".html"))
    assert page == (tmp_path / "data" / "wb_eval" / "report.html").read_bytes()
    heatmap = next(name for name in run.files if name.startswith("media/plotly/"))
    figure = json.loads(run.files[heatmap])
    assert figure["data"][0]["type"] == "heatmap" and figure["data"][0]["x"] == ["tiny_room", "tiny_random"]
    [artifact] = [a for a in fake_wandb.artifacts if a.type == "evaluation_results"]
    assert json.loads(artifact.files["report.json"])["run_name"] == "wb_eval"


@pytest.mark.usefixtures("ray_session")
def test_secrets_never_leak(fake_wandb: FakeWandb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The W&B key, an AWS secret and the Ray token: absent from stdout, stderr, report, parquet, replays."""
    seed_run(fake_wandb, versions=1)
    aws_secret = "aws-SECRET-value-0123456789"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws_secret)
    secrets = [fake_wandb.api_key, aws_secret, os.environ["RAY_AUTH_TOKEN"]]
    runner = CliRunner()
    args = ["run", "--no-progress", "--suite", "smoke", "--episodes", "1", "--data-dir", str(tmp_path / "d")]
    ok = runner.invoke(app, [*args, "-p", "wandb://run/nav_run", "--output-uri", f"wandb://{ENTITY}/{PROJECT}"])
    bad_key = runner.invoke(app, [*args, "-p", "wandb://run/nav_run"], env={"WANDB_API_KEY": "wrong-" + "1" * 34})
    assert ok.exit_code == 0, ok.stderr
    assert bad_key.exit_code == 2 and "W&B rejected the API key while accessing wandb://run/nav_run" in bad_key.stderr
    written = b"".join(p.read_bytes() for p in (tmp_path / "d").rglob("*") if p.is_file() and "cache" not in p.parts)
    table = pq.read_table(next((tmp_path / "d").rglob("episodes.parquet"))).to_pylist()
    for secret in [*secrets, "wrong-" + "1" * 34]:
        for text in (ok.stdout, ok.stderr, bad_key.stdout, bad_key.stderr, json.dumps(table)):
            assert secret not in text
        assert secret.encode() not in written
