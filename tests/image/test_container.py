"""The production image, built by `make image` (on this kind of machine: buildah on the stand-in Ray base of
`make image-base`), run the way README and docker-compose.yml say: the CLI, the entrypoint with .env.example and
a data folder owned by uid 1000 (in process, then on the Ray it starts inside), a bad POLICY_URI, the user and
its rights, its size and contents, the compose file through podman-compose (or docker compose). The GPU variant
is built as far as this machine can: its stages up to the step that needs PyTorch's CUDA wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from evaluator.markers import last_marked
from tests.image.conftest import ROOT, Engine, image_build

pytestmark = pytest.mark.image

MAX_IMAGE_BYTES = 1_600_000_000
"""Issue 25: the production CPU image at most 1.6 GB on the stand-in base (BENCHMARKS.md, "Image")."""
MEASUREMENTS = ROOT / "build" / "image" / "measurements.json"
SHM_FALLBACK = "is using /tmp/ray instead of /dev/shm"
"""Ray's warning when its object store does not fit /dev/shm (the defect issue 25 found)."""


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def shared_memory_options() -> list[str]:
    """What docker-compose.yml gives the production service for Ray's object store: shm_size and the cap."""
    service = compose()["services"]["policy-evaluator-prod"]
    options = ["--shm-size", service["shm_size"]]
    for key, value in service["environment"].items():
        options += ["-e", f"{key}={value}"]
    return options


def data_dir(tmp_path: Path) -> Path:
    """A data folder owned by the image's user (uid 1000, gid 100), as README asks of ./data."""
    folder = tmp_path / "data"
    folder.mkdir()
    os.chown(folder, 1000, 100)
    return folder


def marked(stdout: str) -> dict:
    text = last_marked(stdout)
    assert text is not None, f"no ===JSON_OUTPUT_START=== / ===JSON_OUTPUT_END=== in:\n{stdout[-3000:]}"
    return json.loads(text)


def entrypoint(engine: Engine, tmp_path: Path, *env: str) -> tuple[subprocess.CompletedProcess, Path]:
    data = data_dir(tmp_path)
    options = ["--env-file", str(ROOT / ".env.example"), "-v", f"{data}:/app/data", *shared_memory_options()]
    for pair in env:
        options += ["-e", pair]
    return engine.container(options), data


def check_run(done: subprocess.CompletedProcess, data: Path) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    report = marked(done.stdout)
    run = data / report["run_name"]
    assert json.loads((run / "report.json").read_text()) == report
    for name in ("episodes.parquet", "report.html"):
        assert (run / name).stat().st_size > 0, name
    assert list((run / "replays").rglob("*.json.z")), "replays written"
    assert (data / "results.db").is_file()
    assert {path.stat().st_uid for path in data.rglob("*")} == {1000}, "written by the image's user"
    assert SHM_FALLBACK not in done.stderr
    return report


def test_the_cli_answers(engine: Engine):
    done = engine.container(["--entrypoint", "policy-evaluator"], ["--help"])
    assert done.returncode == 0, done.stderr
    for command in ("run", "entrypoint", "summary"):
        assert command in done.stdout


def test_entrypoint_with_the_example_env(engine: Engine, tmp_path: Path):
    """`.env.example` as it ships (builtin://navigator on the navigation suite): small, so it runs in process."""
    report = check_run(*entrypoint(engine, tmp_path))
    assert report["simulation_suite"] == "navigation"
    (checkpoint,) = report["policies"][0]["checkpoints"]
    assert checkpoint["error"] is None and checkpoint["metrics"]["suite_scores"]["navigation/score"] > 0
    assert [worker["node_id"] for worker in report["workers"]] == ["in-process"]


def test_entrypoint_on_the_ray_it_starts(engine: Engine, tmp_path: Path):
    report = check_run(*entrypoint(engine, tmp_path, "EXECUTION=ray", "NUM_WORKERS=2"))
    assert report["timing"]["workers"] == len(report["workers"]) == 2
    assert report["timing"]["ray_init_s"] > 0
    assert all(worker["node_id"] != "in-process" for worker in report["workers"])


def test_a_bad_policy_uri_gives_the_error_json_and_exit_1(engine: Engine, tmp_path: Path):
    """README, "Container entrypoint": bad usage exits 1 from `entrypoint` (the seed's contract), not 2."""
    done, data = entrypoint(engine, tmp_path, "POLICY_URI=/app/data/missing.pt")
    assert done.returncode == 1, done.stderr
    error = marked(done.stdout)
    assert set(error) == {"error", "traceback", "policy_uri", "retryable"}
    assert "does not exist" in error["error"] and error["policy_uri"] == "/app/data/missing.pt"
    assert error["retryable"] is False
    assert not any(path.is_dir() for path in data.iterdir()), "no run directory"


def test_runs_as_non_root_without_sudo(engine: Engine):
    config = engine.inspect(engine.tag)
    user = config.get("Config", {}).get("User") or config.get("User")
    assert user == "1000:100"
    done = engine.container(["--entrypoint", "sh"], ["-c", "id -u; id -nG; sudo -n true || echo refused"])
    assert done.stdout.split() == ["1000", "users", "refused"], done.stdout + done.stderr
    sudoers = engine.container(["--user", "0", "--entrypoint", "cat"], ["/etc/sudoers"])
    assert sudoers.returncode == 0 and "ray" not in sudoers.stdout, "the base's NOPASSWD line is gone"


def test_size_and_contents(engine: Engine):
    """At most 1.6 GB, and nothing a run does not use: no compilers or binutils, pip cache, test suites,
    headers, test tools or source tree. The figure is written to build/image/measurements.json."""
    size = engine.inspect(engine.tag)["Size"]
    base = engine.inspect(image_build.base_image("cpu"))["Size"]
    MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
    MEASUREMENTS.write_text(json.dumps({"image": engine.tag, "bytes": size, "base_bytes": base}, indent=1) + "\n")
    assert size <= MAX_IMAGE_BYTES, f"{engine.tag}: {size / 1e9:.2f} GB"
    site = "/home/ray/anaconda3/lib/python3.11/site-packages"
    script = (
        "for tool in gcc cc strip ld; do command -v $tool; done; "
        "ls -d ~/.cache/pip /tmp/dist /tmp/stage* /app/evaluator 2>/dev/null; "
        f"ls -d {site}/torch/test {site}/torch/include {site}/numpy/_core/tests 2>/dev/null; "
        f"ls {site}/torch/bin; "
        'python -c \'import importlib.util as u; print([m for m in ("pytest", "moto") if u.find_spec(m)])\'; '
        "python -c 'import torch; print(torch.__version__)'"
    )
    done = engine.container(["--entrypoint", "sh"], ["-c", script])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["torch_shm_manager", "[]", "2.13.0+cpu"], done.stdout


def test_compose_runs_the_production_service(engine: Engine, tmp_path: Path):
    """docker-compose.yml's policy-evaluator-prod, run by podman-compose (Debian's) or `docker compose` in a copy
    of the project: .env from .env.example, ./data owned by uid 1000; on Ray, whose object store must fit the
    /dev/shm the file gives it."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    env = (ROOT / ".env.example").read_text() + "EXECUTION=ray\nSIMULATION_SUITE=smoke\n"
    (tmp_path / ".env").write_text(env)
    data = data_dir(tmp_path)
    if engine.tool == "docker":
        command = ["docker", "compose", "run", "--rm", "--no-deps", "-T", "policy-evaluator-prod"]
    else:
        command = ["podman-compose", "run", "--rm", "--no-deps", "-T", "policy-evaluator-prod"]
    try:
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=engine.env)
    finally:
        if engine.tool == "podman":  # podman-compose 1.0 names the network after the folder and leaves it
            engine.run("network", "rm", "-f", f"{tmp_path.name}_default")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "--shm-size 2gb" in done.stdout or engine.tool == "docker"
    report = check_run(subprocess.CompletedProcess(command, 0, done.stdout, done.stderr), data)
    assert report["simulation_suite"] == "smoke" and len(report["workers"]) >= 1


def test_the_development_image_runs_the_image_tests_on_the_mounted_checkout(engine: Engine):
    """docker-compose.yml's `policy-evaluator`: the development image with this checkout mounted at /app (read
    only here), running tests/test_image.py (hadolint, the Dockerfile, image/) inside. `make test-image` builds it
    (`make image IMAGE_TARGET=development`)."""
    tag = image_build.default_tag("development", "cpu")
    assert engine.has(tag), f"{tag} is not built: make image IMAGE_TARGET=development"
    options = ["-v", f"{ROOT}:/app:ro", "-e", "PYTHONDONTWRITEBYTECODE=1", "--entrypoint", "python"]
    done = engine.container(options, ["-m", "pytest", "tests/test_image.py", "-q", "-p", "no:cacheprovider"], tag)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"\d+ passed", done.stdout)


def test_the_gpu_variant_builds_up_to_the_cuda_wheel(engine: Engine):
    """VARIANT=gpu selects ray-gpu (rayproject/ray:<ray>-py311-cu128), then the build tools, then asks PyTorch's
    cu128 index for torch: unreachable here, so the build must stop exactly there. With no CUDA base to pull, the
    stand-in is tagged with the cu128 name for this build (and untagged after); a Docker host builds the real
    GPU image (`make image VARIANT=gpu`) instead of this check."""
    if engine.tool != "podman":
        pytest.skip("a Docker host can build the whole GPU image: make image VARIANT=gpu")
    gpu_base = image_build.base_image("gpu")
    stand_in = not engine.has(gpu_base)
    if stand_in:
        assert engine.run("tag", image_build.base_image("cpu"), gpu_base).returncode == 0
    try:
        done = subprocess.run(
            [
                "python3",
                str(ROOT / "image" / "build.py"),
                "image",
                "--variant",
                "gpu",
                "--tag",
                "policy-evaluator:gpu-probe",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={key: value for key, value in engine.env.items() if key != "TORCH_INDEX_URL"},
        )
    finally:
        if stand_in:
            engine.run("untag", gpu_base, gpu_base)  # this name only (`untag IMAGE` alone drops every name)
    log = done.stdout + done.stderr
    assert done.returncode != 0, "the build cannot get PyTorch's CUDA wheel here: it must fail"
    assert f"FROM {gpu_base} AS ray-gpu" in log
    assert "AS torch-gpu" in log and "AS torch-cpu" not in log, "only the GPU stages are built"
    steps = re.findall(r"STEP \d+/\d+: (.*)", log)
    failed = re.search(r'Error: building at STEP "(.*?)": exit status', log)
    assert failed and "pip install" in failed.group(1) and '"torch==${TORCH_VERSION}"' in failed.group(1), log[-3000:]
    assert "apt-get install -y --no-install-recommends binutils" in " ".join(steps), "the tools stage ran before"
    assert "https://download.pytorch.org/whl/cu128" in log, "asked PyTorch's cu128 index"
    assert "torch-2.13.0+cpu" not in log, "never the CPU wheel of find-links"
