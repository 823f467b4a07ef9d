"""The fake W&B backend (tests/support/fake_wandb.py) against the real wandb 0.31 client.

These tests pin down what the real client sends and raises, so the fake stays honest: if a wandb upgrade
changes the wire protocol, the fixture's ``fake.unknown == []`` check fails here first.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import requests
import wandb
import wandb.errors

from tests.support.fake_wandb import FakeWandb, b64_md5, reset_wandb

ENTITY, PROJECT = "ent", "proj"


def _api(fake: FakeWandb, api_key: str | None = None) -> wandb.Api:
    return wandb.Api(api_key=api_key or fake.api_key, overrides={"base_url": fake.base_url}, timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seed_policy(fake: FakeWandb) -> None:
    fake.add_artifact_version(ENTITY, PROJECT, "policy", files={"model.pt": b"v0 weights"}, aliases=["latest", "best"])
    fake.add_artifact_version(
        ENTITY, PROJECT, "policy", files={"model.pt": b"v1 weights", "config/arch.json": b'{"hidden": 16}'}
    )


# ------------------------------------------------------------------ flow 1: artifact download
@pytest.mark.parametrize(
    ("alias", "version", "files"),
    [
        ("latest", "v1", {"model.pt": b"v1 weights", "config/arch.json": b'{"hidden": 16}'}),
        ("v1", "v1", {"model.pt": b"v1 weights", "config/arch.json": b'{"hidden": 16}'}),
        ("v0", "v0", {"model.pt": b"v0 weights"}),
        ("best", "v0", {"model.pt": b"v0 weights"}),
    ],
)
def test_download_by_alias_and_version(
    fake_wandb: FakeWandb, tmp_path: Path, alias: str, version: str, files: dict[str, bytes]
) -> None:
    _seed_policy(fake_wandb)
    art = _api(fake_wandb).artifact(f"{ENTITY}/{PROJECT}/policy:{alias}", type="model")
    assert art.version == version
    assert art.type == "model"
    assert art.qualified_name == f"{ENTITY}/{PROJECT}/policy:{alias}"  # the name keeps the alias asked for
    assert ("best" in art.aliases) == (version == "v0")
    assert ("latest" in art.aliases) == (version == "v1")
    assert {name: entry.digest for name, entry in art.manifest.entries.items()} == {
        name: b64_md5(body) for name, body in files.items()
    }

    path = Path(art.download(root=str(tmp_path / "dl")))

    assert {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()} == files
    art.verify(root=str(path))
    assert [r for r in fake_wandb.requests if r.startswith("graphql:")] == [
        "graphql:Viewer",  # wandb.Api() verifies the key
        "graphql:GetDefaultEntity",  # asked even for a path with an entity, when WANDB_ENTITY is unset
        "graphql:ServerFeaturesQuery",
        "graphql:ArtifactMembershipByName",
        "graphql:FetchArtifactManifest",  # -> directUrl of the manifest, fetched by Python requests
        "graphql:GetArtifactMembershipFileUrls",  # -> directUrl of each file, fetched by Python requests
    ]
    assert sum(r.startswith("GET /_fake/blob/") for r in fake_wandb.requests) == 1 + len(files)


@pytest.mark.parametrize("skip_cache", [False, True])
def test_corrupted_download_is_caught_by_verify_not_by_download(
    fake_wandb: FakeWandb, tmp_path: Path, skip_cache: bool
) -> None:
    art_v0 = fake_wandb.add_artifact_version(ENTITY, PROJECT, "policy", files={"model.pt": b"true weights"})
    fake_wandb.corrupt_file(art_v0, "model.pt")
    art = _api(fake_wandb).artifact(f"{ENTITY}/{PROJECT}/policy:latest", type="model")

    path = art.download(root=str(tmp_path / "dl"), skip_cache=skip_cache)  # download() does not check digests

    assert (Path(path) / "model.pt").read_bytes() != b"true weights"
    with pytest.raises(ValueError, match="Digest mismatch for file: model.pt"):
        art.verify(root=path)


# ------------------------------------------------------------------ flow 2: listing versions
def test_list_versions_paginates(fake_wandb: FakeWandb) -> None:
    for i in range(7):
        fake_wandb.add_artifact_version(ENTITY, PROJECT, "policy", files={"model.pt": f"w{i}".encode()})
    fake_wandb.add_artifact_version(ENTITY, PROJECT, "other", files={"model.pt": b"x"})

    api = wandb.Api()  # WANDB_BASE_URL and WANDB_API_KEY from the fixture's environment
    arts = list(api.artifacts(type_name="model", name=f"{ENTITY}/{PROJECT}/policy", per_page=3))

    assert [a.version for a in arts] == [f"v{i}" for i in range(6, -1, -1)]  # newest first
    assert [a.aliases for a in arts] == [["latest"]] + [[]] * 6
    assert {a.name for a in arts} == {f"policy:v{i}" for i in range(7)}
    assert fake_wandb.requests.count("graphql:ProjectArtifacts") == 3


def test_default_entity(fake_wandb: FakeWandb) -> None:
    fake_wandb.add_artifact_version(fake_wandb.entity, PROJECT, "policy", files={"model.pt": b"w"})
    art = wandb.Api().artifact(f"{PROJECT}/policy:latest")  # no entity: asks the server (GetDefaultEntity)
    assert (art.entity, art.version) == (fake_wandb.entity, "v0")
    assert "graphql:GetDefaultEntity" in fake_wandb.requests


# ------------------------------------------------------------------ flow 3: errors
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("policy:latest", "artifact membership 'policy:latest' not found in 'ent/proj'"),  # no such collection
        ("policy:v3", "artifact membership 'policy:v3' not found in 'ent/proj'"),  # no such version
        ("nope/policy:latest", "project 'nope' not found under entity 'ent'"),
    ],
)
def test_missing_artifact_raises_comm_error(fake_wandb: FakeWandb, name: str, message: str) -> None:
    fake_wandb.add_artifact_version(ENTITY, PROJECT, "other", files={"a": b"a"})
    fake_wandb.add_artifact_version(ENTITY, PROJECT, "policy", files={"a": b"a"}) if name == "policy:v3" else None
    path = f"{ENTITY}/{name}" if name.startswith("nope/") else f"{ENTITY}/{PROJECT}/{name}"
    api = _api(fake_wandb)

    with pytest.raises(wandb.errors.CommError, match=message):
        api.artifact(path, type="model")


def test_wrong_type_raises_comm_error(fake_wandb: FakeWandb) -> None:
    fake_wandb.add_artifact_version(ENTITY, PROJECT, "policy", files={"a": b"a"}, type="dataset")
    with pytest.raises(wandb.errors.CommError, match="type 'model' specified but this artifact is of type 'dataset'"):
        _api(fake_wandb).artifact(f"{ENTITY}/{PROJECT}/policy:latest", type="model")


def test_listing_missing_collection_raises_value_error(fake_wandb: FakeWandb) -> None:
    api = _api(fake_wandb)
    with pytest.raises(ValueError, match="Unable to parse 'Artifacts' response data"):
        list(api.artifacts(type_name="model", name=f"{ENTITY}/{PROJECT}/policy"))


def test_bad_key_raises_authentication_error(fake_wandb: FakeWandb) -> None:
    start = time.monotonic()
    with pytest.raises(wandb.errors.AuthenticationError, match="user is not logged in"):
        _api(fake_wandb, api_key="b" * 40)
    assert time.monotonic() - start < 5
    assert fake_wandb.auth_failures == ["graphql:Viewer"]


def test_bad_key_in_wandb_init_raises_comm_error(fake_wandb: FakeWandb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "b" * 40)
    with pytest.raises(wandb.errors.CommError, match="user is not logged in"):
        wandb.init(entity=ENTITY, project=PROJECT, job_type="policy_evaluation")
    assert fake_wandb.auth_failures == ["graphql:UpsertBucket"]
    assert fake_wandb.runs == {}


def test_no_key_raises_usage_error(fake_wandb: FakeWandb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY")
    with pytest.raises(wandb.errors.UsageError, match="No API key configured"):
        wandb.Api()
    with pytest.raises(wandb.errors.UsageError, match="No API key configured"):
        wandb.init(entity=ENTITY, project=PROJECT)
    assert fake_wandb.requests == []


def test_server_down_fails_fast(fake_wandb: FakeWandb, monkeypatch: pytest.MonkeyPatch) -> None:
    down = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(wandb.errors.AuthenticationError, match="connection refused"):
        wandb.Api(api_key=fake_wandb.api_key, overrides={"base_url": down}, timeout=10)
    api_seconds = time.monotonic() - start

    monkeypatch.setenv("WANDB_BASE_URL", down)
    reset_wandb()
    start = time.monotonic()
    with pytest.raises(wandb.errors.CommError, match="connection refused"):
        wandb.init(entity=ENTITY, project=PROJECT, id="downrun", resume="allow")
    init_seconds = time.monotonic() - start

    # One retry after ~1 s (the fixture's WANDB_X_GRAPHQL_RETRY_* settings) plus the wandb-core start.
    assert api_seconds < 5, api_seconds
    assert init_seconds < 5, init_seconds


def test_server_errors_fail_fast(fake_wandb: FakeWandb) -> None:
    _seed_policy(fake_wandb)
    api = _api(fake_wandb)
    fake_wandb.down = True  # every request answered 503
    start = time.monotonic()
    with pytest.raises(wandb.errors.CommError, match="HTTP 503"):
        api.artifact(f"{ENTITY}/{PROJECT}/policy:latest")
    assert time.monotonic() - start < 5
    assert fake_wandb.requests[-2:] == ["POST /graphql (down)"] * 2  # one retry


# ------------------------------------------------------------------ flow 4: logging a run
def _log_eval_run(tmp_path: Path, run_id: str | None, reward: float) -> tuple[wandb.Artifact, float, float]:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"reward_avg": reward}))
    start = time.monotonic()
    run = wandb.init(
        entity=ENTITY,
        project=PROJECT,
        job_type="policy_evaluation",
        id=run_id,
        resume="allow",
        name="nightly-eval",
        config={"suite": "navigation", "episodes": 4},
        settings=wandb.Settings(api_key=os.environ["WANDB_API_KEY"], silent=True, console="off", save_code=False),
    )
    init_seconds = time.monotonic() - start
    policy = run.use_artifact(f"{ENTITY}/{PROJECT}/policy:latest", type="model")
    policy.download(root=str(tmp_path / "policy"))
    run.summary.update({"navigation/score": 0.5, "navigation/emptyspace/score": 0.25, "reward_avg": reward})
    run.log({"results": wandb.Table(columns=["env", "score"], data=[["emptyspace", 0.25], ["maze", 0.75]])})
    art = wandb.Artifact(f"eval_results_{run.id}", type="evaluation_results")
    art.add_file(str(report))
    run.log_artifact(art)
    art.wait()  # committed before finish
    run.finish()
    return art, init_seconds, time.monotonic() - start


def test_log_run_summary_table_and_artifact(fake_wandb: FakeWandb, tmp_path: Path) -> None:
    policy = fake_wandb.add_artifact_version(ENTITY, PROJECT, "policy", files={"model.pt": b"w"})
    art, init_seconds, total_seconds = _log_eval_run(tmp_path, "evalrun1", reward=1.5)
    print(f"wandb.init {init_seconds:.2f} s, whole run {total_seconds:.2f} s")

    run = fake_wandb.runs[(ENTITY, PROJECT, "evalrun1")]
    assert run.job_type == "policy_evaluation" and run.display_name == "nightly-eval"
    assert run.config == {"suite": "navigation", "episodes": 4}
    summary = {k: v for k, v in run.summary.items() if not k.startswith("_")}
    assert summary["navigation/score"] == 0.5
    assert summary["navigation/emptyspace/score"] == 0.25
    assert summary["reward_avg"] == 1.5
    assert summary["results"]["_type"] == "table-file"
    assert run.table("results") == {"columns": ["env", "score"], "data": [["emptyspace", 0.25], ["maze", 0.75]]}
    assert run.complete and run.exitcode == 0 and run.state == "finished"
    assert run.history[0]["_step"] == 0 and "results" in run.history[0]

    assert art.version == "v0" and art.state == "COMMITTED"
    (logged,) = [a for a in fake_wandb.artifacts if a.type == "evaluation_results"]
    assert logged.name == "eval_results_evalrun1" and logged.run_id == "evalrun1"
    assert logged.version == "v0" and logged.state == "COMMITTED" and "latest" in logged.aliases
    assert json.loads(logged.files["report.json"]) == {"reward_avg": 1.5}
    assert logged in run.logged_artifacts
    assert run.used_artifacts == [policy]  # run.use_artifact() -> UseArtifact
    # wandb also logs each Table as an artifact of type run_table.
    assert {a.type for a in fake_wandb.artifacts} == {"evaluation_results", "run_table"}

    # What the fake received can be read back with the real client.
    fetched = _api(fake_wandb).artifact(f"{ENTITY}/{PROJECT}/eval_results_evalrun1:latest", type="evaluation_results")
    path = fetched.download(root=str(tmp_path / "dl"))
    fetched.verify(root=path)
    assert json.loads((Path(path) / "report.json").read_text()) == {"reward_avg": 1.5}


def test_resumed_run_and_second_artifact_version(fake_wandb: FakeWandb, tmp_path: Path) -> None:
    fake_wandb.add_artifact_version(ENTITY, PROJECT, "policy", files={"model.pt": b"w"})
    _log_eval_run(tmp_path, "evalrun2", reward=1.0)
    reset_wandb()
    _log_eval_run(tmp_path, "evalrun2", reward=2.0)

    run = fake_wandb.runs[(ENTITY, PROJECT, "evalrun2")]
    assert run.summary["reward_avg"] == 2.0
    versions = fake_wandb.collections[(ENTITY, PROJECT, "eval_results_evalrun2")]
    assert [(a.version, a.aliases) for a in versions] == [("v0", []), ("v1", ["latest"])]
    assert json.loads(versions[1].files["report.json"]) == {"reward_avg": 2.0}


def test_identical_artifact_is_deduplicated(fake_wandb: FakeWandb, tmp_path: Path) -> None:
    for run_id in ("runa", "runb"):
        run = wandb.init(project=PROJECT, id=run_id, job_type="policy_evaluation")
        art = wandb.Artifact("shared_report", type="evaluation_results")
        with art.new_file("report.json") as f:
            f.write('{"same": true}')
        run.log_artifact(art)
        art.wait()
        run.finish()
        assert art.version == "v0"

    (only,) = fake_wandb.collections[(fake_wandb.entity, PROJECT, "shared_report")]
    assert only.run_id == "runa" and only.aliases == ["latest"]
    assert fake_wandb.runs[(fake_wandb.entity, PROJECT, "runb")].logged_artifacts == []


def test_generated_run_id(fake_wandb: FakeWandb, tmp_path: Path) -> None:
    fake_wandb.add_artifact_version(ENTITY, PROJECT, "policy", files={"model.pt": b"w"})
    _log_eval_run(tmp_path, None, reward=0.0)
    ((entity, project, run_id),) = fake_wandb.runs
    assert (entity, project) == (ENTITY, PROJECT) and len(run_id) == 8


# ------------------------------------------------------------------ the fake itself
def test_unknown_requests_are_recorded_and_refused(fake_wandb: FakeWandb) -> None:
    auth = ("api", fake_wandb.api_key)
    unknown_op = requests.post(
        f"{fake_wandb.base_url}/graphql", json={"query": "query Nope { nope }", "operationName": "Nope"}, auth=auth
    )
    unknown_path = requests.get(f"{fake_wandb.base_url}/api/v1/nothing", auth=auth)
    wrong_key = requests.post(
        f"{fake_wandb.base_url}/graphql", json={"query": "query Viewer { viewer { id } }"}, auth=("api", "x" * 40)
    )

    assert (unknown_op.status_code, unknown_path.status_code, wrong_key.status_code) == (400, 400, 401)
    assert fake_wandb.unknown == ["graphql:Nope", "GET /api/v1/nothing"]
    assert fake_wandb.auth_failures == ["graphql:Viewer"]
    fake_wandb.unknown.clear()  # or the fixture's teardown fails the test


def test_env_is_isolated(fake_wandb: FakeWandb, tmp_path: Path) -> None:
    env = fake_wandb.env(tmp_path)
    assert env["WANDB_BASE_URL"] == fake_wandb.base_url and env["WANDB_API_KEY"] == fake_wandb.api_key
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        assert Path(env[var]).is_relative_to(tmp_path) and Path(env[var]).is_dir()
