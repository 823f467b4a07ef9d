"""A bundle never runs code it ships without `--trust-remote-code` (issue 21): whatever its file names, as a
directory or a zip, in process and on a Ray worker; and `data_path` never leaves the bundle.

Each bundle's code would write a marker file when imported; the tests prove it was never written, and that
the same bundle with `trust_remote_code` does write it (so the marker is a test that can fail)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest

from evaluator.config import EvalConfig, Execution
from evaluator.run.driver import evaluate
from evaluator.sources import resolve
from sim.bundles import write_bundle
from sim.errors import PolicyError
from sim.policies import load_policy
from tests.conftest import tiny_model

EVIL_MODULE = """
import pathlib
pathlib.Path({marker!r}).touch()
from sim.models import TokenGridMLP as Policy
"""
"""A module that leaves a marker when imported and re-exports a real class: were it imported, the run would
even succeed (the case found on main)."""


def evil_bundle(
    directory: Path, marker: Path, code_file: str = "evilmod.py", class_path: str = "evilmod.Policy"
) -> Path:
    """A working bundle (real weights for TokenGridMLP) whose `class_path` names a module it ships."""
    model, kwargs = tiny_model(1)
    write_bundle(directory, model, kwargs, class_path=class_path)
    target = directory / code_file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(EVIL_MODULE.format(marker=str(marker)))
    if code_file.startswith("evilpkg/"):
        (directory / "evilpkg" / "__init__.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    return directory


def zipped(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("code_file", "class_path"),
    [
        ("evilmod.py", "evilmod.Policy"),  # a top-level module beside the spec (mettagrid looks for directories)
        ("evilpkg/policy.py", "evilpkg.policy.Policy"),  # a package
        ("nested/deeper/evilmod.py", "evilmod.Policy"),  # anywhere in the bundle
        ("evilmod.pyc", "evilmod.Policy"),
        ("evilmod.cpython-311-x86_64-linux-gnu.so", "evilmod.Policy"),
        ("libevil.so.1", "sim.models.TokenGridMLP"),
        ("evil.pth", "sim.models.TokenGridMLP"),
        ("EVILMOD.PY", "sim.models.TokenGridMLP"),
        ("deps.egg", "sim.models.TokenGridMLP"),
    ],
)
@pytest.mark.parametrize("packaging", ["directory", "zip"])
def test_a_bundle_shipping_code_is_refused_before_anything_is_imported(
    tmp_path: Path, code_file: str, class_path: str, packaging: str
):
    marker = tmp_path / "imported"
    bundle = evil_bundle(tmp_path / "evil:v1", marker, code_file, class_path)
    if packaging == "zip":
        (tmp_path / "evil:v1.zip").write_bytes(zipped(bundle))
        bundle = tmp_path / "evil:v1.zip"
    [checkpoint] = resolve(str(bundle))
    shipped = "evilpkg/__init__.py" if code_file.startswith("evilpkg/") else code_file
    with pytest.raises(PolicyError, match=rf"ships code \({re.escape(shipped)}\).*--trust-remote-code"):
        load_policy(checkpoint.uri, checkpoint.data)
    assert not marker.exists()


def test_the_same_bundle_runs_its_code_only_when_trusted(tmp_path: Path):
    marker = tmp_path / "imported"
    [checkpoint] = resolve(str(evil_bundle(tmp_path / "evil:v1", marker)))
    with pytest.raises(PolicyError, match=r"ships code \(evilmod.py\)"):
        load_policy(checkpoint.uri, checkpoint.data)
    assert not marker.exists()
    load_policy(checkpoint.uri, checkpoint.data, trust_remote_code=True)
    assert marker.exists(), "the marker proves the module would have run"


def test_a_class_path_naming_an_uninstalled_module_is_never_looked_up_in_the_bundle(tmp_path: Path):
    """Without code in the bundle, a module is looked up among installed packages only: a missing package."""
    model, kwargs = tiny_model(1)
    [checkpoint] = resolve(str(write_bundle(tmp_path / "b", model, kwargs, class_path="absentmod.Policy")))
    with pytest.raises(PolicyError, match=r"cannot import absentmod.Policy \(package 'absentmod' missing\)"):
        load_policy(checkpoint.uri, checkpoint.data)


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("data_path", ["../outside.safetensors", "../../outside.safetensors", "{abs}"])
def test_data_path_must_stay_inside_the_bundle(tmp_path: Path, data_path: str, trusted: bool):
    model, kwargs = tiny_model(1)
    outside = write_bundle(tmp_path / "outside", model, kwargs) / "weights.safetensors"
    (tmp_path / "outside.safetensors").write_bytes(outside.read_bytes())
    bundle = write_bundle(tmp_path / "b", model, kwargs)
    data_path = data_path.format(abs=outside)
    spec = json.loads((bundle / "policy_spec.json").read_text()) | {"data_path": data_path}
    (bundle / "policy_spec.json").write_text(json.dumps(spec))
    (bundle / "weights.safetensors").unlink()
    [checkpoint] = resolve(str(bundle))
    with pytest.raises(PolicyError, match=r"data_path .* points outside the bundle"):
        load_policy(checkpoint.uri, checkpoint.data, trust_remote_code=trusted)


def test_a_missing_data_path_names_only_what_the_bundle_said(tmp_path: Path):
    model, kwargs = tiny_model(1)
    bundle = write_bundle(tmp_path / "b", model, kwargs)
    spec = json.loads((bundle / "policy_spec.json").read_text()) | {"data_path": "nothing/here.safetensors"}
    (bundle / "policy_spec.json").write_text(json.dumps(spec))
    [checkpoint] = resolve(str(bundle))
    with pytest.raises(PolicyError, match=r"data_path 'nothing/here.safetensors' is not a file in the bundle$"):
        load_policy(checkpoint.uri, checkpoint.data)


def test_a_symlinked_weights_file_is_zipped_with_the_bundle_so_the_digest_covers_it(tmp_path: Path):
    """A directory bundle is zipped (symlinks read as the bytes they point to): what loads is what is hashed."""
    model, kwargs = tiny_model(1)
    elsewhere = write_bundle(tmp_path / "elsewhere", model, kwargs) / "weights.safetensors"
    bundle = write_bundle(tmp_path / "b", model, kwargs)
    (bundle / "weights.safetensors").unlink()
    (bundle / "weights.safetensors").symlink_to(elsewhere)
    [first] = resolve(str(bundle))
    load_policy(first.uri, first.data)
    other, _ = tiny_model(2)
    write_bundle(tmp_path / "elsewhere", other, kwargs)
    [second] = resolve(str(bundle))
    assert first.digest != second.digest


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("execution", [Execution.IN_PROCESS, Execution.RAY])
def test_no_bundled_code_runs_in_a_whole_evaluation(tmp_path: Path, execution: Execution):
    """Directory and zip, through the driver: each checkpoint's error names the file and the flag, and no
    marker is written, in process and on a Ray worker (its own process)."""
    marker = tmp_path / "imported"
    directory = evil_bundle(tmp_path / "evil:v1", marker)
    archive = tmp_path / "zipped" / "evil:v2.zip"
    archive.parent.mkdir()
    archive.write_bytes(zipped(directory))
    config = EvalConfig(
        policy_uris=(str(directory), str(archive)),
        suite="smoke",
        episodes=1,
        reuse_results=False,
        data_dir=tmp_path / "data",
        execution=execution,
        num_workers=1,
    )
    report = evaluate(config).report
    errors = [checkpoint.error for policy in report.policies for checkpoint in policy.checkpoints]
    assert len(errors) == 2
    assert all(error and "ships code (evilmod.py)" in error and "--trust-remote-code" in error for error in errors)
    assert not marker.exists()
