"""Metta's checkpoint layout (`<run>:v<epoch>/` bundles, `<run>:v<epoch>.zip`) in a directory, under an S3
prefix (moto on loopback) and in a W&B collection (the fake W&B backend): checkpoint `<run>`, version
`v<epoch>`, ordered by epoch, and the selectors working on epochs. Listing only: loading bundles is tested
elsewhere."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from safetensors.torch import save as safetensors_bytes

from evaluator.sources import SourceSettings, resolve
from evaluator.sources.files import zip_directory
from evaluator.sources.selection import metta_epoch
from evaluator.sources.wandb import candidates as wandb_candidates
from sim.errors import UsageError
from tests.conftest import SMOKE_INIT, state_dict_bytes, tiny_model
from tests.support.fake_wandb import FakeWandb

ENTITY, PROJECT = "metta-ai", "metta-research"


def bundle_files(epoch: int) -> dict[str, bytes]:
    """A small real policy bundle, as Metta's `write_checkpoint_bundle` lays it out (weights differ per epoch)."""
    model, _ = tiny_model(epoch)
    spec = {"class_path": "sim.models.TokenGridMLP", "data_path": "weights.safetensors", "init_kwargs": SMOKE_INIT}
    return {"policy_spec.json": json.dumps(spec).encode(), "weights.safetensors": safetensors_bytes(model.state_dict())}


def write_bundle(directory: Path, epoch: int) -> Path:
    directory.mkdir(parents=True)
    for name, body in bundle_files(epoch).items():
        (directory / name).write_bytes(body)
    return directory


def bundle_zip(epoch: int) -> bytes:
    """`<run>:v<epoch>.zip` as Metta uploads it (fixed timestamps, so the same bytes every call)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, body in bundle_files(epoch).items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0)), body)
    return buffer.getvalue()


@pytest.fixture
def metta_dir(tmp_path: Path) -> Path:
    """Metta's checkpoint directory: bundles `run:v120`, `run:v60`, a downloaded `run:v30.zip`, its optimizer
    state, and an upload in progress; created out of order."""
    root = tmp_path / "checkpoints"
    write_bundle(root / "run:v120", 120)
    write_bundle(root / "run:v60", 60)
    (root / "run:v30.zip").write_bytes(bundle_zip(30))
    (root / "trainer_state.pt").write_bytes(b"optimizer state, not a policy")
    (root / ".run:v90.k3j2.zip").write_bytes(b"half written")
    return root


def listed(uri: str, selector: str = "all", settings: SourceSettings | None = None) -> list[tuple[str, str]]:
    return [(c.name, c.version) for c in resolve(uri, selector, settings)]


def test_metta_names():
    assert metta_epoch("run:v30") == ("run", 30)
    assert metta_epoch("run:v30.zip") == ("run", 30)
    assert metta_epoch("team:exp:v7") == ("team:exp", 7)
    for other in ("run", "run:v", "run:vx", ":v3", "run_v30", "run:v30.tar", "ckpt_10"):
        assert metta_epoch(other) is None, other


def test_directory_is_ordered_by_epoch(metta_dir: Path):
    assert sorted(p.name for p in metta_dir.iterdir())[1:4] == ["run:v120", "run:v30.zip", "run:v60"]
    checkpoints = resolve(str(metta_dir), "all")
    assert [(c.name, c.version) for c in checkpoints] == [("run", "v30"), ("run", "v60"), ("run", "v120")]
    assert checkpoints[0].data == (metta_dir / "run:v30.zip").read_bytes()
    assert checkpoints[2].data == zip_directory(metta_dir / "run:v120")
    assert checkpoints[2].uri == (metta_dir / "run:v120").resolve().as_uri()
    assert listed(metta_dir.as_uri(), "latest") == [("run", "v120")]
    assert listed(str(metta_dir), "last:2") == [("run", "v60"), ("run", "v120")]
    assert listed(str(metta_dir), "every:2") == [("run", "v30"), ("run", "v120")]
    assert listed(str(metta_dir), "v60,v30") == [("run", "v30"), ("run", "v60")]
    with pytest.raises(UsageError, match=r"has no checkpoint v45; available: v30, v60, v120$"):
        resolve(str(metta_dir), "v45")


def test_path_at_one_metta_checkpoint(metta_dir: Path):
    assert listed(str(metta_dir / "run:v60"), "latest") == [("run", "v60")]
    assert listed((metta_dir / "run:v30.zip").as_uri(), "latest") == [("run", "v30")]
    assert listed(str(metta_dir / "run:v60"), "v60") == [("run", "v60")]
    with pytest.raises(UsageError, match=r"names version v60, which --checkpoints all would override"):
        listed(str(metta_dir / "run:v60"), "all")


def test_directory_without_epochs_keeps_natural_order(tmp_path: Path):
    write_bundle(tmp_path / "ckpt_10", 2)
    write_bundle(tmp_path / "ckpt_2", 1)
    (tmp_path / "trainer_state.pt").write_bytes(b"x")
    assert listed(str(tmp_path)) == [("ckpt_2", "v1"), ("ckpt_10", "v2")]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (
            {"run:v30": 30, "model.pt": None},
            r"mixes Metta checkpoints named <run>:v<epoch> \(run:v30\) with others \(model.pt\)",
        ),
        ({"a:v30": 30, "b:v60": 60}, r"holds checkpoints of 2 runs \(a, b\); `latest` across runs is ambiguous"),
        ({"run:v30": 30, "run:v30.zip": 30}, r"run:v30 and run:v30.zip are both epoch 30 of run; keep one"),
    ],
)
def test_ambiguous_directories_are_refused(tmp_path: Path, layout: dict[str, int | None], message: str):
    for name, epoch in layout.items():
        if name.endswith(".zip"):
            (tmp_path / name).write_bytes(bundle_zip(epoch))
        elif name.endswith(".pt"):
            model, kwargs = tiny_model(0)
            (tmp_path / name).write_bytes(state_dict_bytes(model, kwargs))
        else:
            write_bundle(tmp_path / name, epoch)
    with pytest.raises(UsageError, match=message) as info:
        resolve(str(tmp_path), "all")
    assert "\n" not in str(info.value)


def put_metta_prefix(s3, prefix: str = "metta/run/") -> None:
    """Metta's remote layout (`<run>:v<epoch>.zip`) plus one bundle uploaded as a "directory"."""
    s3.put_object(Bucket="policies", Key=f"{prefix}run:v120.zip", Body=bundle_zip(120))
    s3.put_object(Bucket="policies", Key=f"{prefix}run:v60.zip", Body=bundle_zip(60))
    for name, body in bundle_files(30).items():
        s3.put_object(Bucket="policies", Key=f"{prefix}run:v30/{name}", Body=body)
    s3.put_object(Bucket="policies", Key=f"{prefix}run:v30/extra/state.pt", Body=b"part of the bundle")
    s3.put_object(Bucket="policies", Key=f"{prefix}.staging/run:v90.zip", Body=b"hidden")
    s3.put_object(Bucket="policies", Key=f"{prefix}trainer_state.pt", Body=b"optimizer state")


def test_s3_prefix_is_ordered_by_epoch_and_bundles_are_zipped(s3, tmp_path: Path):
    put_metta_prefix(s3)
    checkpoints = resolve("s3://policies/metta/run/", "all")
    assert [(c.name, c.version) for c in checkpoints] == [("run", "v30"), ("run", "v60"), ("run", "v120")]
    assert [c.uri for c in checkpoints] == [
        "s3://policies/metta/run/run:v30/",
        "s3://policies/metta/run/run:v60.zip",
        "s3://policies/metta/run/run:v120.zip",
    ]
    local = write_bundle(tmp_path / "run:v30", 30)
    (local / "extra").mkdir()
    (local / "extra" / "state.pt").write_bytes(b"part of the bundle")
    assert checkpoints[0].data == zip_directory(local), "a bundle has one digest, wherever it is stored"
    assert checkpoints[2].data == bundle_zip(120)
    assert listed("s3://policies/metta/run/", "last:2") == [("run", "v60"), ("run", "v120")]
    assert listed("s3://policies/metta/run/", "every:2") == [("run", "v30"), ("run", "v120")]
    assert listed("s3://policies/metta/run/", "v30,v60") == [("run", "v30"), ("run", "v60")]
    with pytest.raises(UsageError, match="no checkpoint v45; available: v30, v60, v120"):
        resolve("s3://policies/metta/run/", "v45")


def test_s3_uri_at_one_metta_checkpoint(s3):
    put_metta_prefix(s3)
    assert listed("s3://policies/metta/run/run:v60.zip", "latest") == [("run", "v60")]
    [bundle] = resolve("s3://policies/metta/run/run:v30")
    assert (bundle.name, bundle.version, bundle.uri) == ("run", "v30", "s3://policies/metta/run/run:v30/")
    [again] = resolve("s3://policies/metta/run/run:v30/")
    assert again.digest == bundle.digest
    with pytest.raises(UsageError, match="S3 object s3://policies/metta/run/run:v45 does not exist"):
        resolve("s3://policies/metta/run/run:v45")


def test_s3_prefix_of_two_runs_is_refused(s3):
    put_metta_prefix(s3, "mixed/")
    s3.put_object(Bucket="policies", Key="mixed/other:v10.zip", Body=bundle_zip(10))
    with pytest.raises(UsageError, match=r"s3://policies/mixed/ holds checkpoints of 2 runs \(other, run\)"):
        resolve("s3://policies/mixed/")


def wandb_settings(fake: FakeWandb, tmp_path: Path) -> SourceSettings:
    return SourceSettings(data_dir=tmp_path / "data", wandb_api_key=fake.api_key)


def count(fake: FakeWandb, request: str) -> int:
    return sum(1 for r in fake.requests if r == request)


def test_wandb_collection_ordered_by_metadata_epoch(fake_wandb: FakeWandb, tmp_path: Path):
    """Metta's uploads: `model.pt` with `run_name` and `epoch` in the metadata; no manifest is needed."""
    for epoch in (60, 30, 120):  # a resumed run re-uploaded epoch 30 after 60
        model, kwargs = tiny_model(epoch)
        metadata = {"run_name": "nav_run", "epoch": epoch, "agent_step": epoch * 1000, "total_time": 5, "score": 0.5}
        files = {"model.pt": state_dict_bytes(model, kwargs)}
        fake_wandb.add_artifact_version(ENTITY, PROJECT, "nav_run", files=files, metadata=metadata)
    settings = wandb_settings(fake_wandb, tmp_path)
    listing = wandb_candidates("wandb://run/nav_run", settings)
    assert [c.version for c in listing] == ["v30", "v60", "v120"]
    assert count(fake_wandb, "graphql:FetchArtifactManifest") == 0, "listing reads metadata, not manifests"
    found = resolve("wandb://run/nav_run", "all", settings)
    assert [(c.name, c.version) for c in found] == [("nav_run", "v30"), ("nav_run", "v60"), ("nav_run", "v120")]
    assert [c.uri.rsplit(":", 1)[-1] for c in found] == ["v1", "v0", "v2"], "URIs keep the artifact versions"
    assert listed("wandb://run/nav_run", "last:2", settings) == [("nav_run", "v60"), ("nav_run", "v120")]
    assert listed("wandb://run/nav_run:v1", "latest", settings) == [("nav_run", "v30")]
    with pytest.raises(UsageError, match="no checkpoint v45; available: v30, v60, v120"):
        resolve("wandb://run/nav_run", "v45", settings)


def test_wandb_collection_of_metta_named_files(fake_wandb: FakeWandb, tmp_path: Path):
    """Without metadata, the single file or bundle directory named `<run>:v<epoch>` says the epoch."""
    bundle = {f"run:v30/{name}": body for name, body in bundle_files(30).items()}
    fake_wandb.add_artifact_version(ENTITY, PROJECT, "bundles", files={"run:v60.zip": bundle_zip(60)})
    fake_wandb.add_artifact_version(ENTITY, PROJECT, "bundles", files=bundle)
    settings = wandb_settings(fake_wandb, tmp_path)
    found = resolve("wandb://run/bundles", "all", settings)
    assert [(c.name, c.version) for c in found] == [("run", "v30"), ("run", "v60")]
    assert found[0].data == zip_directory(write_bundle(tmp_path / "run:v30", 30))
    assert found[1].data == bundle_zip(60)


def test_wandb_plain_collection_keeps_versions_and_reads_one_manifest(fake_wandb: FakeWandb, tmp_path: Path):
    for seed in range(3):
        model, kwargs = tiny_model(seed)
        fake_wandb.add_artifact_version(ENTITY, PROJECT, "plain", files={"model.pt": state_dict_bytes(model, kwargs)})
    settings = wandb_settings(fake_wandb, tmp_path)
    assert [c.version for c in wandb_candidates("wandb://run/plain", settings)] == ["v0", "v1", "v2"]
    assert count(fake_wandb, "graphql:FetchArtifactManifest") == 1, "only the newest version's manifest"
    fake_wandb.add_artifact_version(ENTITY, PROJECT, "plain", files={"run:v90.zip": bundle_zip(90)})
    with pytest.raises(UsageError, match=r"W&B artifact collection metta-ai/metta-research/plain mixes Metta"):
        resolve("wandb://run/plain", "all", settings)
