"""wandb:// policies and OUTPUT_URI with the real wandb client against our fake W&B backend on 127.0.0.1.

The fake fails the test on any request it does not know (tests/support/fake_wandb.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from evaluator.cli import app
from evaluator.config import EvalConfig
from evaluator.driver import evaluate
from evaluator.sources import SourceSettings, resolve
from evaluator.sources.wandb import parse_wandb_uri
from sim.errors import UsageError
from tests.conftest import state_dict_bytes, tiny_model
from tests.support.fake_wandb import FakeWandb

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


@pytest.mark.parametrize(
    ("uri", "key", "message"),
    [
        ("wandb://run/missing:v0", None, "W&B request for wandb://run/missing:v0 failed: .*not found"),
        ("wandb://run/missing", None, "W&B request for wandb://run/missing failed: .*not found"),
        ("wandb://run/nav_run:v0", "bad-key-" + "0" * 32, "W&B rejected the API key"),
    ],
)
def test_wandb_errors_are_one_line(fake_wandb: FakeWandb, tmp_path: Path, uri: str, key: str | None, message: str):
    seed_run(fake_wandb, versions=1)
    with pytest.raises(UsageError, match=message) as info:
        resolve(uri, settings=settings(fake_wandb, tmp_path, key))
    assert "\n" not in str(info.value)
    if key:
        assert key not in str(info.value)


def test_no_key_and_server_down(fake_wandb: FakeWandb, tmp_path: Path):
    seed_run(fake_wandb, versions=1)
    with pytest.raises(UsageError, match="needs W&B credentials: set WANDB_API_KEY"):
        resolve("wandb://run/nav_run", settings=SourceSettings(data_dir=tmp_path))
    fake_wandb.down = True
    with pytest.raises(UsageError, match="W&B"):
        resolve("wandb://run/nav_run", settings=settings(fake_wandb, tmp_path))


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
    table = run.table("evaluation")
    assert table["columns"][:5] == ["policy_uri", "checkpoint", "version", "digest", "env"]
    assert len(table["data"]) == 2 * 2
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
    assert bad_key.exit_code == 2
    written = b"".join(p.read_bytes() for p in (tmp_path / "d").rglob("*") if p.is_file() and "cache" not in p.parts)
    table = pq.read_table(next((tmp_path / "d").rglob("episodes.parquet"))).to_pylist()
    for secret in [*secrets, "wrong-" + "1" * 34]:
        for text in (ok.stdout, ok.stderr, bad_key.stdout, bad_key.stderr, json.dumps(table)):
            assert secret not in text
        assert secret.encode() not in written
